//go:build tamago && amd64

// Host interrupt handlers (see hostirq_tamago.go). They run on whatever
// stack was current (interrupt gates, no IST), touch only AX, and never
// call Go code.

#include "textflag.h"

// func irqTimer(): the host preemption timer. EOI, count, return.
TEXT ·irqTimer(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	AX
	LOCK
	INCQ	·timerIRQs(SB)
	MOVQ	·lapicEOIAddr(SB), AX // local APIC EOI register (APM vol. 2, 16.6.1)
	MOVL	$0, (AX)
	POPQ	AX
	IRETQ

// func irqOther(): any other vector from 32 to 254: a stray interrupt from
// a device tamavisor does not use. EOI, count, return.
TEXT ·irqOther(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	AX
	LOCK
	INCQ	·strayIRQs(SB)
	MOVQ	·lapicEOIAddr(SB), AX // local APIC EOI register (APM vol. 2, 16.6.1)
	MOVL	$0, (AX)
	POPQ	AX
	IRETQ

// func irqSpurious(): the local APIC's spurious vector: no EOI (APM vol.
// 2, 16.4.7), count, return.
TEXT ·irqSpurious(SB),NOSPLIT|NOFRAME,$0
	LOCK
	INCQ	·spuriousIRQs(SB)
	IRETQ

// func handlerAddrs() (timer, other, spurious uintptr)
TEXT ·handlerAddrs(SB),NOSPLIT,$0-24
	MOVQ	$·irqTimer(SB), AX
	MOVQ	AX, timer+0(FP)
	MOVQ	$·irqOther(SB), AX
	MOVQ	AX, other+8(FP)
	MOVQ	$·irqSpurious(SB), AX
	MOVQ	AX, spurious+16(FP)
	RET

// func sidt(p *[10]byte)
TEXT ·sidt(SB),NOSPLIT,$0-8
	MOVQ	p+0(FP), AX
	SIDT	(AX)
	RET

// func haltUntilInterrupt(): STI; HLT (the interrupt is taken after HLT,
// STI's shadow covers HLT so none is missed), then back with IF set.
TEXT ·haltUntilInterrupt(SB),NOSPLIT,$0
	STI
	HLT
	RET

// func cli()
TEXT ·cli(SB),NOSPLIT,$0
	CLI
	RET

