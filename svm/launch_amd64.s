//go:build tamago && amd64

// The world switch (APM vol. 2, 15.5 "VMRUN Instruction" and 15.5.2
// "VMSAVE and VMLOAD"). The only assembly of package svm.

#include "go_asm.h"
#include "textflag.h"

// SVM instructions have no Go assembler mnemonics: emit their encodings
// (APM vol. 3, "VMRUN", "VMLOAD", "VMSAVE", "CLGI", "STGI").
#define VMRUN	BYTE $0x0f; BYTE $0x01; BYTE $0xd8
#define VMLOAD	BYTE $0x0f; BYTE $0x01; BYTE $0xda
#define VMSAVE	BYTE $0x0f; BYTE $0x01; BYTE $0xdb
#define STGI	BYTE $0x0f; BYTE $0x01; BYTE $0xdc
#define CLGI	BYTE $0x0f; BYTE $0x01; BYTE $0xdd

// MOV DRn, RBX (0F 23 /r) and MOV RBX, DRn (0F 21 /r): the Go assembler
// knows DR0, DR6 and DR7 only (APM vol. 3, "MOV (DRn)").
#define MOV_DR0_BX	BYTE $0x0f; BYTE $0x23; BYTE $0xc3
#define MOV_DR1_BX	BYTE $0x0f; BYTE $0x23; BYTE $0xcb
#define MOV_DR2_BX	BYTE $0x0f; BYTE $0x23; BYTE $0xd3
#define MOV_DR3_BX	BYTE $0x0f; BYTE $0x23; BYTE $0xdb
#define MOV_BX_DR0	BYTE $0x0f; BYTE $0x21; BYTE $0xc3
#define MOV_BX_DR1	BYTE $0x0f; BYTE $0x21; BYTE $0xcb
#define MOV_BX_DR2	BYTE $0x0f; BYTE $0x21; BYTE $0xd3
#define MOV_BX_DR3	BYTE $0x0f; BYTE $0x21; BYTE $0xdb

// One return-stack entry: CALL over a speculation trap (PAUSE; LFENCE;
// JMP back to the PAUSE), 5+7 bytes. Encoded as bytes, with the stack
// fix-up below, so that the assembler's SP tracking is not disturbed.
#define RSB_CALL	BYTE $0xe8; BYTE $0x07; BYTE $0x00; BYTE $0x00; BYTE $0x00; \
			BYTE $0xf3; BYTE $0x90; BYTE $0x0f; BYTE $0xae; BYTE $0xe8; BYTE $0xeb; BYTE $0xf9
#define ADD_SP_16	BYTE $0x48; BYTE $0x83; BYTE $0xc4; BYTE $0x10

// Stack frame of run (hardware SP after the prologue).
#define F_VMCB	0
#define F_REGS	8
#define F_GFX	16
#define F_HFX	24
#define F_HOST	32
#define F_BP	40
#define F_GXCR0	48
#define F_HXCR0	56

// func run(vmcb, hostState uint64, regs *Regs, guestFX, hostFX *FXArea, guestXCR0 *uint64, hostXCR0 uint64)
//
// Enters the guest whose VMCB is at physical address vmcb and returns at
// its next #VMEXIT. With GIF clear around it, no interrupt or NMI reaches
// the host while guest state is in the registers.
//
//   1. CLGI; keep the host's MXCSR; load the guest's FXSAVE area, or with XSAVE (hostXCR0 != 0) the guest's XSAVE area in with
//      every host-enabled component, then XCR0 = *guestXCR0 (SVM switches
//      neither, APM vol. 2, 15.5.1); set IF (see below);
//   2. VMSAVE host FS/GS/TR/LDTR/KernelGSBase/STAR/LSTAR/CSTAR/
//      SFMASK/SYSENTER_* (VMRUN does not save them) into hostState;
//   3. load the guest GPRs that are not in the VMCB and DR0-DR3; VMLOAD the guest's
//      hidden state; VMRUN;
//   4. after #VMEXIT (RAX, RSP restored from the host save area): VMSAVE
//      the guest's hidden state, store its GPRs and DR0-DR3, overwrite the
//      return stack buffer (32 CALLs), VMLOAD the host's (FS base
//      holds TamaGo's g pointer: no Go code may run before this), the
//      guest's XCR0 into *guestXCR0, XCR0 = hostXCR0 and XSAVE the guest's
//      area (or FXSAVE), the host's MXCSR back, STGI.
TEXT ·run(SB),NOSPLIT,$64-56
	MOVQ	vmcb+0(FP), R8
	MOVQ	hostState+8(FP), R9
	MOVQ	regs+16(FP), R10
	MOVQ	guestFX+24(FP), R11
	MOVQ	hostFX+32(FP), R12
	MOVQ	R8, F_VMCB(SP)
	MOVQ	R10, F_REGS(SP)
	MOVQ	R11, F_GFX(SP)
	MOVQ	R12, F_HFX(SP)
	MOVQ	R9, F_HOST(SP)
	MOVQ	BP, F_BP(SP)
	MOVQ	guestXCR0+40(FP), AX
	MOVQ	AX, F_GXCR0(SP) // a pointer: read before, written after
	MOVQ	hostXCR0+48(FP), AX
	MOVQ	AX, F_HXCR0(SP)

	CLGI
	// The caller may have cleared IF so that the host timer it armed
	// cannot fire before CLGI; with GIF clear, interrupts now wait, and
	// IF must be set for VMRUN: with V_INTR_MASKING the host's IF decides
	// whether a physical interrupt makes the guest exit (APM vol. 2,
	// 15.21.1). It is taken by the host after STGI.
	STI
	// The host's x87/SSE registers need no saving: Go's ABI treats them
	// all as clobbered by a call (X15 is zeroed again after an assembly
	// call), and the host never uses x87 or AVX. Only MXCSR (rounding,
	// exception masks) is host state that Go code relies on: kept at its
	// FXSAVE offset in the host area.
	STMXCSR	const_fxAreaMXCSR(R12)
	MOVQ	F_HXCR0(SP), AX
	TESTQ	AX, AX
	JNZ	xrstor
	FXRSTOR64	(R11)
	JMP	loaded
xrstor:
	// RFBM = host XCR0 = the current XCR0: every component of the area.
	MOVQ	AX, DX
	SHRQ	$32, DX
	XRSTOR64	(R11)
	MOVQ	F_GXCR0(SP), AX
	MOVQ	(AX), AX
	CMPQ	AX, F_HXCR0(SP)
	JEQ	loaded // the guest's XCR0 is the host's: XSETBV is costly
	MOVQ	AX, DX
	SHRQ	$32, DX
	XORL	CX, CX
	XSETBV
loaded:
	MOVQ	F_HOST(SP), AX
	VMSAVE

	MOVQ	R10, AX
	MOVQ	Regs_DR0(AX), BX
	MOV_DR0_BX
	MOVQ	Regs_DR1(AX), BX
	MOV_DR1_BX
	MOVQ	Regs_DR2(AX), BX
	MOV_DR2_BX
	MOVQ	Regs_DR3(AX), BX
	MOV_DR3_BX
	MOVQ	Regs_RBX(AX), BX
	MOVQ	Regs_RCX(AX), CX
	MOVQ	Regs_RDX(AX), DX
	MOVQ	Regs_RSI(AX), SI
	MOVQ	Regs_RDI(AX), DI
	MOVQ	Regs_RBP(AX), BP
	MOVQ	Regs_R8(AX), R8
	MOVQ	Regs_R9(AX), R9
	MOVQ	Regs_R10(AX), R10
	MOVQ	Regs_R11(AX), R11
	MOVQ	Regs_R12(AX), R12
	MOVQ	Regs_R13(AX), R13
	MOVQ	Regs_R14(AX), R14
	MOVQ	Regs_R15(AX), R15

	MOVQ	F_VMCB(SP), AX
	VMLOAD
	VMRUN
	VMSAVE

	MOVQ	F_REGS(SP), AX
	MOVQ	BX, Regs_RBX(AX)
	MOVQ	CX, Regs_RCX(AX)
	MOVQ	DX, Regs_RDX(AX)
	MOVQ	SI, Regs_RSI(AX)
	MOVQ	DI, Regs_RDI(AX)
	MOVQ	BP, Regs_RBP(AX)
	MOVQ	R8, Regs_R8(AX)
	MOVQ	R9, Regs_R9(AX)
	MOVQ	R10, Regs_R10(AX)
	MOVQ	R11, Regs_R11(AX)
	MOVQ	R12, Regs_R12(AX)
	MOVQ	R13, Regs_R13(AX)
	MOVQ	R14, Regs_R14(AX)
	MOVQ	R15, Regs_R15(AX)
	MOV_BX_DR0
	MOVQ	BX, Regs_DR0(AX)
	MOV_BX_DR1
	MOVQ	BX, Regs_DR1(AX)
	MOV_BX_DR2
	MOVQ	BX, Regs_DR2(AX)
	MOV_BX_DR3
	MOVQ	BX, Regs_DR3(AX)

	// Return stack stuffing: the guest may have left return predictions
	// that the host's RETs would follow speculatively. 32 CALLs that
	// never return overwrite the return stack buffer with harmless
	// targets (the PAUSE loops), then SP is restored.
	MOVQ	$16, CX
rsbfill:
	RSB_CALL
	RSB_CALL
	ADD_SP_16
	DECQ	CX
	JNZ	rsbfill

	MOVQ	F_HOST(SP), AX
	VMLOAD

	MOVQ	F_HXCR0(SP), AX
	TESTQ	AX, AX
	JNZ	xsave
	MOVQ	F_GFX(SP), AX
	FXSAVE64	(AX)
	JMP	saved
xsave:
	// The guest's XCR0 as it left it: where the XSETBV intercept is not
	// implemented (QEMU TCG), the guest set it without an exit.
	XORL	CX, CX
	XGETBV
	SHLQ	$32, DX
	ORQ	DX, AX
	MOVQ	F_GXCR0(SP), BX
	MOVQ	AX, (BX)
	// XCR0 back to the host's first (where it differs): the save then
	// covers every component, whatever the guest's XCR0 was.
	CMPQ	AX, F_HXCR0(SP)
	JEQ	hostxcr0
	MOVQ	F_HXCR0(SP), AX
	MOVQ	AX, DX
	SHRQ	$32, DX
	XORL	CX, CX
	XSETBV
hostxcr0:
	MOVQ	F_HXCR0(SP), AX
	MOVQ	AX, DX
	SHRQ	$32, DX
	MOVQ	F_GFX(SP), BX
	XSAVE64	(BX)
saved:
	MOVQ	F_HFX(SP), AX
	LDMXCSR	const_fxAreaMXCSR(AX)

	MOVQ	F_BP(SP), BP
	STGI
	RET

// func bareLoop(vmcb, hostState uint64, n uint64)
//
// The cost floor of a world switch: n back-to-back VMRUN/#VMEXIT pairs with
// nothing else. The guest sits on an intercepted instruction and its RIP is
// never advanced, so each VMRUN exits again at once. Guest GPRs other than
// RAX are not preserved: the loop counter lives on the stack.
TEXT ·bareLoop(SB),NOSPLIT,$16-24
	MOVQ	BP, 8(SP)
	MOVQ	n+16(FP), CX
	MOVQ	CX, 0(SP)
	CLGI
	MOVQ	hostState+8(FP), AX
	VMSAVE
	MOVQ	vmcb+0(FP), AX
loop:
	VMRUN
	DECQ	0(SP)
	JNZ	loop
	MOVQ	hostState+8(FP), AX
	VMLOAD
	MOVQ	8(SP), BP
	STGI
	RET
