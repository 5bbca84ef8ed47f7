package insn

// MMIO instruction decoding.
//
// A guest load or store to a guest-physical range owned by an emulated
// device (local APIC, I/O APIC, virtio-mmio) exits with a nested page fault.
// Without decode assists the fault says where, not what: DecodeMMIO reads the
// instruction bytes at CS:RIP (fetched with Fetch) and tells what the
// instruction does to its memory operand. Only the forms that device
// drivers' accessors compile to are emulated (AMD64 APM vol. 3, "MOV",
// "MOVZX", "MOVSX", "XCHG"):
//
//	88/89 /r          MOV r/m, reg        store
//	8A/8B /r          MOV reg, r/m        load
//	C6/C7 /0 ib/iw/id MOV r/m, imm        store of an immediate
//	A0/A1, A2/A3      MOV AL/rAX, moffs   load / store at an absolute address
//	0F B6/B7 /r       MOVZX reg, r/m8/16  load, zero-extended
//	0F BE/BF /r       MOVSX reg, r/m8/16  load, sign-extended
//	86/87 /r          XCHG r/m, reg       load and store (Exchange)
//
// Operand-size (66), address-size (67), REX, segment-override and LOCK
// prefixes are honoured through golang.org/x/arch/x86/x86asm, which gives the
// length and operands; the size rules are then applied here from the
// encoding and checked against what x86asm reports.

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

var (
	// ErrNotEmulated is wrapped by DecodeMMIO's error for a valid
	// instruction that is not one of the emulated load/store forms (string
	// instructions, read-modify-write arithmetic, register-only forms...).
	// The error text names the instruction.
	ErrNotEmulated = errors.New("insn: instruction not emulated for MMIO")
	// ErrTruncated is wrapped by DecodeMMIO's error when the bytes given
	// end before the instruction does (the fetch stopped early).
	ErrTruncated = errors.New("insn: instruction truncated")
)

// MMIOAccess is what one instruction does to the faulting memory operand.
//
// A load (Write false) reads Size bytes from the device and completes with
// Load. A store (Write true) writes StoreValue's Size bytes. An exchange
// (Write and Exchange true) does both: take StoreValue first, then read the
// device, write the stored value, and complete with Load.
type MMIOAccess struct {
	Len      int   // instruction length in bytes (RIP advance)
	Mode     int   // CPU mode the bytes were decoded in: 16, 32 or 64
	Write    bool  // stores to memory (else loads)
	Exchange bool  // XCHG: also loads the old memory value into Reg (Write is set)
	Size     uint8 // bytes accessed in memory: 1, 2, 4 or 8

	// Reg is the register operand in x86 encoding order (0 = RAX ... 7 = RDI,
	// 8-15 = R8-R15): the source of a store, the destination of a load.
	Reg uint8
	// HighByte means Reg is AH, CH, DH or BH: bits 15:8 of register 0-3.
	// (With any REX prefix, byte registers 4-7 are SPL, BPL, SIL, DIL
	// instead: APM vol. 1, 3.1.2, "Byte Registers".)
	HighByte bool
	// UseImm means a store writes Imm (MOV r/m, imm), not Reg.
	UseImm bool
	// Imm is the immediate operand, sign-extended and masked to Size.
	Imm uint64

	// DestSize is how many bytes of Reg a load writes: Size, or more for
	// MOVZX and MOVSX. Zero for a store.
	DestSize uint8
	// SignExtend means a load is sign-extended from Size to DestSize
	// (MOVSX); otherwise it is zero-extended.
	SignExtend bool

	Inst string // the instruction in Intel syntax, for reports
}

// Opcodes of the emulated forms (APM vol. 3, "MOV", "MOVZX", "MOVSX",
// "XCHG"; one-byte opcode map, APM vol. 3, appendix A.1).
const (
	opXCHGb     = 0x86 // XCHG r/m8, r8
	opXCHG      = 0x87 // XCHG r/m16/32/64, r
	opMOVStoreb = 0x88 // MOV r/m8, r8
	opMOVStore  = 0x89 // MOV r/m16/32/64, r
	opMOVLoadb  = 0x8a // MOV r8, r/m8
	opMOVLoad   = 0x8b // MOV r, r/m16/32/64
	opMOVALmoff = 0xa0 // MOV AL, moffs8
	opMOVAXmoff = 0xa1 // MOV rAX, moffs16/32/64
	opMOVmoffAL = 0xa2 // MOV moffs8, AL
	opMOVmoffAX = 0xa3 // MOV moffs16/32/64, rAX
	opMOVImmb   = 0xc6 // MOV r/m8, imm8 (/0)
	opMOVImm    = 0xc7 // MOV r/m16/32/64, imm16/32 (/0)
	opEscape    = 0x0f // two-byte opcode escape
	opMOVZXb    = 0xb6 // 0F B6: MOVZX r, r/m8
	opMOVZXw    = 0xb7 // 0F B7: MOVZX r, r/m16
	opMOVSXb    = 0xbe // 0F BE: MOVSX r, r/m8
	opMOVSXw    = 0xbf // 0F BF: MOVSX r, r/m16

	// opWide is the low opcode bit of all these forms: 0 for a byte
	// operand, 1 for the full operand size (MOVZX/MOVSX: word source).
	opWide = 1

	prefixREP  = 0xf3 // REP/REPE
	prefixREPN = 0xf2 // REPNE
	prefixByte = 0xff // an x86asm.Prefix's prefix byte (higher bits are x86asm's flags)

	numGPRs  = 16
	gprMask  = numGPRs - 1
	byteBits = 8
	highByte = 0xff << byteBits // AH/CH/DH/BH within RAX/RCX/RDX/RBX
)

// String instructions (APM vol. 3, "MOVS", "STOS", "LODS", "CMPS", "SCAS",
// "INS", "OUTS"), refused by name.
var stringOps = map[x86asm.Op]bool{
	x86asm.MOVSB: true, x86asm.MOVSW: true, x86asm.MOVSD: true, x86asm.MOVSQ: true,
	x86asm.STOSB: true, x86asm.STOSW: true, x86asm.STOSD: true, x86asm.STOSQ: true,
	x86asm.LODSB: true, x86asm.LODSW: true, x86asm.LODSD: true, x86asm.LODSQ: true,
	x86asm.CMPSB: true, x86asm.CMPSW: true, x86asm.CMPSD: true, x86asm.CMPSQ: true,
	x86asm.SCASB: true, x86asm.SCASW: true, x86asm.SCASD: true, x86asm.SCASQ: true,
	x86asm.INSB: true, x86asm.INSW: true, x86asm.INSD: true,
	x86asm.OUTSB: true, x86asm.OUTSW: true, x86asm.OUTSD: true,
}

// DecodeMMIO decodes the instruction at the start of code (the bytes at
// CS:RIP, up to MaxLen are looked at) in the given mode (16, 32 or 64, as
// CPU.Mode) and returns what it does to its memory operand.
//
// Errors: ErrTruncated if code ends inside the instruction; ErrInvalid if
// the bytes are not a valid instruction (including LOCK on MOV, and
// encodings x86asm does not know); ErrNotEmulated, naming the instruction,
// for a valid instruction that is not an emulated form (REP prefixes, string
// instructions, arithmetic, register-only forms). With ErrNotEmulated the
// returned access still has Len, Mode and Inst set.
func DecodeMMIO(code []byte, mode int) (MMIOAccess, error) {
	if mode != 16 && mode != 32 && mode != 64 {
		return MMIOAccess{}, fmt.Errorf("insn: MMIO decode in mode %d: %w", mode, ErrInvalid)
	}
	if len(code) > MaxLen {
		code = code[:MaxLen]
	}
	// Running out of bytes is truncation unless all MaxLen were given:
	// then the instruction is too long.
	var short error = ErrTruncated
	if len(code) == MaxLen {
		short = nil
	}
	if len(code) == 0 {
		return MMIOAccess{}, fmt.Errorf("insn: MMIO decode of no bytes: %w", ErrTruncated)
	}
	inst, err := decode(code, mode, short)
	if err != nil {
		if errors.Is(err, ErrTruncated) {
			return MMIOAccess{}, fmt.Errorf("insn: MMIO decode of % x: %w", code, err)
		}
		return MMIOAccess{}, err
	}
	a := MMIOAccess{Len: inst.Len, Mode: mode, Inst: x86asm.IntelSyntax(inst, 0, nil)}
	if why := a.analyse(&inst); why != "" {
		// Keep Len, Mode and Inst for the report; clear the rest.
		a = MMIOAccess{Len: a.Len, Mode: a.Mode, Inst: a.Inst}
		return a, fmt.Errorf("insn: MMIO access by %q (% x): %s: %w", a.Inst, code[:inst.Len], why, ErrNotEmulated)
	}
	return a, nil
}

// analyse fills a from inst, or returns why the instruction is not emulated.
func (a *MMIOAccess) analyse(inst *x86asm.Inst) string {
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if b := p & prefixByte; b == prefixREP || b == prefixREPN {
			return "REP/REPNE prefix"
		}
	}
	if stringOps[inst.Op] {
		return "string instruction"
	}

	// The operands: exactly one memory operand, plus a register or an
	// immediate.
	var (
		nmem, nreg, nimm int
		reg              x86asm.Reg
		imm              x86asm.Imm
	)
	for _, arg := range inst.Args {
		switch arg := arg.(type) {
		case x86asm.Mem:
			nmem++
		case x86asm.Reg:
			nreg++
			reg = arg
		case x86asm.Imm:
			nimm++
			imm = arg
		}
	}
	if nmem != 1 {
		return "no memory operand"
	}

	// The form, from the opcode bytes (x86asm puts the first opcode byte
	// in Opcode's top byte, the next one below it).
	op := byte(inst.Opcode >> 24)
	op2 := byte(inst.Opcode >> 16)
	full := uint8(inst.DataSize / byteBits) // operand size from mode, 66 and REX.W
	var wantOp x86asm.Op
	switch op {
	case opMOVStoreb, opMOVStore, opMOVmoffAL, opMOVmoffAX:
		wantOp, a.Write = x86asm.MOV, true
	case opMOVLoadb, opMOVLoad, opMOVALmoff, opMOVAXmoff:
		wantOp = x86asm.MOV
	case opMOVImmb, opMOVImm:
		wantOp, a.Write, a.UseImm = x86asm.MOV, true, true
	case opXCHGb, opXCHG:
		wantOp, a.Write, a.Exchange = x86asm.XCHG, true, true
	case opEscape:
		switch op2 {
		case opMOVZXb, opMOVZXw:
			wantOp = x86asm.MOVZX
		case opMOVSXb, opMOVSXw:
			wantOp, a.SignExtend = x86asm.MOVSX, true
		default:
			return "not a MOV, MOVZX, MOVSX or XCHG form"
		}
		// The low bit picks a byte or word source; the destination has
		// the operand size.
		a.Size, a.DestSize = 1, full
		if op2&opWide != 0 {
			a.Size = 2
		}
	default:
		return "not a MOV, MOVZX, MOVSX or XCHG form"
	}
	if inst.Op != wantOp {
		return "unexpected decoding of opcode"
	}
	if op != opEscape {
		a.Size = 1
		if op&opWide != 0 {
			a.Size = full
		}
		if !a.Write || a.Exchange {
			a.DestSize = a.Size
		}
	}
	if !validSize(a.Size) || inst.MemBytes != int(a.Size) {
		return fmt.Sprintf("memory operand of %d bytes", inst.MemBytes)
	}

	if a.UseImm {
		if nimm != 1 || nreg != 0 {
			return "unexpected operands"
		}
		// x86asm sign-extends the immediate (APM vol. 3, "MOV": imm32
		// is sign-extended to 64 bits with REX.W).
		a.Imm = uint64(imm) & sizeMask(a.Size)
		return ""
	}
	if nreg != 1 || nimm != 0 {
		return "unexpected operands"
	}
	n, high, rsize, ok := gpr(reg)
	if !ok {
		return "not a general-purpose register operand"
	}
	want := a.Size // the register's size: the memory's, or a MOVZX/MOVSX destination's
	if a.DestSize != 0 {
		want = a.DestSize
	}
	if rsize != want {
		return fmt.Sprintf("register %v does not match the operand size", reg)
	}
	a.Reg, a.HighByte = n, high
	return ""
}

// gpr maps an x86asm register to its number in x86 encoding order, whether
// it is a legacy high-byte register (AH, CH, DH, BH), and its size in bytes.
func gpr(r x86asm.Reg) (n uint8, high bool, size uint8, ok bool) {
	const legacyByteRegs = 4 // AL, CL, DL, BL: the rest of 0-7 need REX (SPL...)
	switch {
	case r >= x86asm.AL && r <= x86asm.BL:
		return uint8(r - x86asm.AL), false, 1, true
	case r >= x86asm.AH && r <= x86asm.BH:
		return uint8(r - x86asm.AH), true, 1, true
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return uint8(r-x86asm.SPB) + legacyByteRegs, false, 1, true
	case r >= x86asm.AX && r <= x86asm.R15W:
		return uint8(r - x86asm.AX), false, 2, true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return uint8(r - x86asm.EAX), false, 4, true
	case r >= x86asm.RAX && r <= x86asm.R15:
		return uint8(r - x86asm.RAX), false, 8, true
	}
	return 0, false, 0, false
}

func validSize(n uint8) bool { return n == 1 || n == 2 || n == 4 || n == 8 }

// sizeMask returns the mask of the low n bytes (all ones for n >= 8).
func sizeMask(n uint8) uint64 {
	if n >= 8 {
		return ^uint64(0)
	}
	return 1<<(uint(n)*byteBits) - 1
}

// StoreValue returns the value a store writes to memory, masked to Size: Imm,
// or the source register (bits 15:8 of it for AH, CH, DH, BH). It only
// reads gprs (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15). For an
// exchange, call it before Load.
func (a *MMIOAccess) StoreValue(gprs *[16]uint64) uint64 {
	if a.UseImm {
		return a.Imm & sizeMask(a.Size)
	}
	v := gprs[a.Reg&gprMask]
	if a.HighByte {
		v >>= byteBits
	}
	return v & sizeMask(a.Size)
}

// Load completes a load (or an exchange) with v, the value read from memory:
// v's low Size bytes are zero- or sign-extended to DestSize and written to
// the destination register. As on the CPU (APM vol. 1, 3.1.2, "Zero-
// Extension of 32-Bit Results"), 1- and 2-byte destinations keep the
// register's other bits (AH/CH/DH/BH replace bits 15:8 only), a 4-byte
// destination clears bits 63:32 in 64-bit mode (outside 64-bit mode those bits
// are undefined; they are kept), and an 8-byte one replaces the register.
// For a plain store Load does nothing.
func (a *MMIOAccess) Load(gprs *[16]uint64, v uint64) {
	if a.Write && !a.Exchange {
		return
	}
	v &= sizeMask(a.Size)
	if a.SignExtend && a.Size < 8 {
		shift := 64 - uint(a.Size)*byteBits
		v = uint64(int64(v<<shift) >> shift)
	}
	r := &gprs[a.Reg&gprMask]
	switch {
	case a.HighByte:
		*r = *r&^highByte | v<<byteBits&highByte
	case a.DestSize == 4 && a.Mode == 64, a.DestSize >= 8:
		*r = v & sizeMask(a.DestSize)
	default:
		m := sizeMask(a.DestSize)
		*r = *r&^m | v&m
	}
}
