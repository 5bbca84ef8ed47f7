//go:build tamago && amd64

#include "textflag.h"

// func In8(port uint16) uint8
TEXT ·In8(SB),NOSPLIT,$0-9
	MOVW	port+0(FP), DX
	BYTE	$0xec			// IN AL, DX
	MOVB	AL, ret+8(FP)
	RET

// func Out8(port uint16, val uint8)
TEXT ·Out8(SB),NOSPLIT,$0-3
	MOVW	port+0(FP), DX
	MOVB	val+2(FP), AL
	BYTE	$0xee			// OUT DX, AL
	RET

// func In16(port uint16) uint16
TEXT ·In16(SB),NOSPLIT,$0-10
	MOVW	port+0(FP), DX
	BYTE	$0x66; BYTE $0xed	// IN AX, DX
	MOVW	AX, ret+8(FP)
	RET

// func Out16(port uint16, val uint16)
TEXT ·Out16(SB),NOSPLIT,$0-4
	MOVW	port+0(FP), DX
	MOVW	val+2(FP), AX
	BYTE	$0x66; BYTE $0xef	// OUT DX, AX
	RET

// func In32(port uint16) uint32
TEXT ·In32(SB),NOSPLIT,$0-12
	MOVW	port+0(FP), DX
	BYTE	$0xed			// IN EAX, DX
	MOVL	AX, ret+8(FP)
	RET

// func Out32(port uint16, val uint32)
TEXT ·Out32(SB),NOSPLIT,$0-8
	MOVW	port+0(FP), DX
	MOVL	val+4(FP), AX
	BYTE	$0xef			// OUT DX, EAX
	RET

// func insb(port uint16, dst *byte, n uint64)
TEXT ·insb(SB),NOSPLIT,$0-24
	MOVW	port+0(FP), DX
	MOVQ	dst+8(FP), DI
	MOVQ	n+16(FP), CX
	CLD
	BYTE	$0xf3; BYTE $0x6c	// REP INSB
	RET

// func RDMSR(msr uint32) uint64
TEXT ·RDMSR(SB),NOSPLIT,$0-16
	MOVL	msr+0(FP), CX
	RDMSR
	SHLQ	$32, DX
	ORQ	DX, AX
	MOVQ	AX, ret+8(FP)
	RET

// func WRMSR(msr uint32, val uint64)
TEXT ·WRMSR(SB),NOSPLIT,$0-16
	MOVL	msr+0(FP), CX
	MOVQ	val+8(FP), AX
	MOVQ	AX, DX
	SHRQ	$32, DX
	WRMSR
	RET

// func CPUID(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
TEXT ·CPUID(SB),NOSPLIT,$0-24
	MOVL	leaf+0(FP), AX
	MOVL	subleaf+4(FP), CX
	CPUID
	MOVL	AX, eax+8(FP)
	MOVL	BX, ebx+12(FP)
	MOVL	CX, ecx+16(FP)
	MOVL	DX, edx+20(FP)
	RET

// func RDTSC() uint64
TEXT ·RDTSC(SB),NOSPLIT,$0-8
	LFENCE
	RDTSC
	SHLQ	$32, DX
	ORQ	DX, AX
	MOVQ	AX, ret+0(FP)
	RET

// func ReadCR0() uint64
TEXT ·ReadCR0(SB),NOSPLIT,$0-8
	MOVQ	CR0, AX
	MOVQ	AX, ret+0(FP)
	RET

// func ReadCR3() uint64
TEXT ·ReadCR3(SB),NOSPLIT,$0-8
	MOVQ	CR3, AX
	MOVQ	AX, ret+0(FP)
	RET

// func WriteCR3(val uint64)
TEXT ·WriteCR3(SB),NOSPLIT,$0-8
	MOVQ	val+0(FP), AX
	MOVQ	AX, CR3
	RET

// func ReadCR4() uint64
TEXT ·ReadCR4(SB),NOSPLIT,$0-8
	MOVQ	CR4, AX
	MOVQ	AX, ret+0(FP)
	RET

// func WriteCR4(val uint64)
TEXT ·WriteCR4(SB),NOSPLIT,$0-8
	MOVQ	val+0(FP), AX
	MOVQ	AX, CR4
	RET

// func Pause()
TEXT ·Pause(SB),NOSPLIT,$0-0
	PAUSE
	RET

// func XGETBV(index uint32) uint64
TEXT ·XGETBV(SB),NOSPLIT,$0-16
	MOVL	index+0(FP), CX
	XGETBV
	SHLQ	$32, DX
	ORQ	DX, AX
	MOVQ	AX, ret+8(FP)
	RET

// func XSETBV(index uint32, val uint64)
TEXT ·XSETBV(SB),NOSPLIT,$0-16
	MOVL	index+0(FP), CX
	MOVQ	val+8(FP), AX
	MOVQ	AX, DX
	SHRQ	$32, DX
	XSETBV
	RET

// func fxsave(area *[512]byte)
TEXT ·fxsave(SB),NOSPLIT,$0-8
	MOVQ	area+0(FP), AX
	FXSAVE64	(AX)
	RET
