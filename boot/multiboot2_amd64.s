//go:build tamago && amd64

// The multiboot2 entry point (see multiboot2.go and multiboot2_tamago.go).
//
// GRUB enters here (the entry address tag of the image's Multiboot2
// header) in 32-bit protected mode with paging off, EAX =
// Multiboot2BootMagic and EBX = the boot information (Multiboot2
// Specification 3.2). The Go assembler encodes for 64-bit mode, so this
// code uses only instructions whose encoding means the same in 32-bit
// mode: no REX prefixes (no Q forms, no R8-R15), and no address taken from
// a symbol except as computed below. The stack pointer is undefined at
// entry; the one CALL pushes into the boot information's reserved word.
//
// It saves EAX, EBX and a copy of the boot information into
// multiboot2Area, switches to a GDT with TamaGo's selectors, masks the 8259 PICs (TamaGo's cpuinit enables
// interrupts before any IDT exists: a firmware's PIT interrupt would
// double-fault), and continues at TamaGo's usual entry, the ELF entry
// that QEMU's PVH boot uses directly.

#include "go_asm.h"
#include "textflag.h"

#define PIC1_DATA 0x21
#define PIC2_DATA 0xa1
#define PIC_MASK_ALL 0xff
#define CALL_REL32_LEN 5

// func multiboot2Entry()
TEXT ·multiboot2Entry(SB),NOSPLIT|NOFRAME,$0
	CLI
	CMPL	AX, $const_Multiboot2BootMagic
	JNE	tamago

	LEAL	8(BX), SP		// stack: below EBX+8, the reserved word at EBX+4
	// In 32-bit mode this RIP-relative LEA (ModRM disp32) loads its
	// displacement: the area's address minus the address of the next
	// instruction, the CALL, which pushes its own address plus
	// CALL_REL32_LEN. Nothing may come between the two.
	LEAL	·multiboot2Area(SB), DI
	BYTE	$0xe8; LONG $0		// CALL to the next instruction
	BYTE	$0x5d			// POP EBP: the address after the CALL
	ADDL	BP, DI
	SUBL	$CALL_REL32_LEN, DI	// EDI = &multiboot2Area
	MOVL	$0, 4(BX)		// the reserved word as GRUB left it
	MOVL	DI, DX			// EDX = &multiboot2Area from here on

	MOVL	AX, const_mb2AreaMagic(DX)
	MOVL	BX, const_mb2AreaAddr(DX)
	MOVL	(BX), CX		// total_size
	MOVL	CX, const_mb2AreaTotal(DX)
	CMPL	CX, $const_MB2InfoMax
	JLS	copy
	MOVL	$const_MB2InfoMax, CX
copy:
	MOVL	BX, SI
	ADDL	$const_mb2AreaInfo, DI
	CLD
	REP;	MOVSB

	// A GDT with TamaGo's selectors, then every data segment register
	// reloaded from it (CS is TamaGo's to load, by its far return).
	MOVL	$const_mb2Code32Lo, (const_mb2AreaGDT+const_mb2SelCode)(DX)
	MOVL	$const_mb2Code32Hi, (const_mb2AreaGDT+const_mb2SelCode+4)(DX)
	MOVL	$const_mb2Data32Lo, (const_mb2AreaGDT+const_mb2SelData)(DX)
	MOVL	$const_mb2Data32Hi, (const_mb2AreaGDT+const_mb2SelData+4)(DX)
	MOVW	$const_mb2GDTLimit, const_mb2AreaGDTR(DX)
	LEAL	const_mb2AreaGDT(DX), AX
	MOVL	AX, (const_mb2AreaGDTR+2)(DX)
	LGDT	const_mb2AreaGDTR(DX)
	MOVL	$const_mb2SelData, AX
	BYTE	$0x8e; BYTE $0xd8	// MOV DS, AX
	BYTE	$0x8e; BYTE $0xc0	// MOV ES, AX
	BYTE	$0x8e; BYTE $0xd0	// MOV SS, AX
	BYTE	$0x8e; BYTE $0xe0	// MOV FS, AX
	BYTE	$0x8e; BYTE $0xe8	// MOV GS, AX

	MOVB	$PIC_MASK_ALL, AL
	BYTE	$0xe6; BYTE $PIC1_DATA	// OUT imm8, AL
	BYTE	$0xe6; BYTE $PIC2_DATA

tamago:
	JMP	_rt0_amd64_tamago(SB)
