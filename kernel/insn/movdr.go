package insn

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// MovToDR is a decoded MOV DRn, reg (0F 23 /r; APM vol. 3, "MOV (DRn)"):
// the debug register written, the general-purpose register it is written
// from (encoding order, RAX = 0) and the instruction's length.
type MovToDR struct {
	DR, GPR int
	Len     int
}

// DecodeMovToDR decodes code (the guest's instruction bytes) in mode (16,
// 32 or 64) as a MOV to a debug register, the one instruction a DR write
// intercept exits on. The source is the whole 32- or 64-bit register: the
// operand size of MOV DRn is that of the mode, not of prefixes.
func DecodeMovToDR(code []byte, mode int) (MovToDR, error) {
	inst, err := x86asm.Decode(regForm(code, mode), mode)
	if err != nil {
		return MovToDR{}, fmt.Errorf("insn: MOV to DR: % x: %w", code[:min(len(code), 15)], err)
	}
	dst, okDst := inst.Args[0].(x86asm.Reg)
	src, okSrc := inst.Args[1].(x86asm.Reg)
	if inst.Op != x86asm.MOV || !okDst || !okSrc || dst < x86asm.DR0 || dst > x86asm.DR7 {
		return MovToDR{}, fmt.Errorf("insn: %q (% x) is not a MOV to a debug register", inst, code[:inst.Len])
	}
	n, _, size, ok := gpr(src)
	if !ok || size < 4 {
		return MovToDR{}, fmt.Errorf("insn: %q (% x): source is not a 32- or 64-bit register", inst, code[:inst.Len])
	}
	return MovToDR{DR: int(dst - x86asm.DR0), GPR: int(n), Len: inst.Len}, nil
}

// CR0 write forms (APM vol. 3): the instructions a CR0 write intercept
// exits on.
const (
	CRWriteMov  = iota + 1 // MOV CRn, reg (0F 22 /r)
	CRWriteCLTS            // CLTS (0F 06): clear CR0.TS
	CRWriteLMSW            // LMSW reg (0F 01 /6): CR0 bits 3:0
)

// CRWrite is a decoded write to a control register.
type CRWrite struct {
	Kind    int
	CR, GPR int // the register written (Mov), the source register (Mov, LMSW)
	Len     int
}

// DecodeCRWrite decodes code in mode as a write to a control register:
// MOV CRn from a register, CLTS, or LMSW from a register. LMSW from
// memory is refused (not emulated).
func DecodeCRWrite(code []byte, mode int) (CRWrite, error) {
	inst, err := x86asm.Decode(regForm(code, mode), mode)
	if err != nil {
		return CRWrite{}, fmt.Errorf("insn: CR write: % x: %w", code[:min(len(code), 15)], err)
	}
	switch inst.Op {
	case x86asm.CLTS:
		return CRWrite{Kind: CRWriteCLTS, Len: inst.Len}, nil
	case x86asm.LMSW:
		if src, ok := inst.Args[0].(x86asm.Reg); ok {
			if n, _, _, ok := gpr(src); ok {
				return CRWrite{Kind: CRWriteLMSW, GPR: int(n), Len: inst.Len}, nil
			}
		}
		return CRWrite{}, fmt.Errorf("insn: %q (% x): LMSW from memory: %w", inst, code[:inst.Len], ErrNotEmulated)
	case x86asm.MOV:
		dst, okDst := inst.Args[0].(x86asm.Reg)
		src, okSrc := inst.Args[1].(x86asm.Reg)
		if okDst && okSrc && dst >= x86asm.CR0 && dst <= x86asm.CR15 {
			if n, _, size, ok := gpr(src); ok && size >= 4 {
				return CRWrite{Kind: CRWriteMov, CR: int(dst - x86asm.CR0), GPR: int(n), Len: inst.Len}, nil
			}
		}
	}
	return CRWrite{}, fmt.Errorf("insn: %q (% x) is not a write to a control register", inst, code[:inst.Len])
}

// regForm returns code with the ModRM byte of a MOV to or from CRn or
// DRn (0F 20-23) given mod = 11b: those instructions are register to
// register whatever their mod field says (APM vol. 3, "MOV (CRn)", "MOV
// (DRn)"), with no displacement or SIB, which a general decoder would
// count into their length. Other code is returned as it is.
func regForm(code []byte, mode int) []byte {
	i := 0
	for i < len(code) && i < MaxLen {
		b := code[i]
		switch {
		case b == 0x66 || b == 0x67 || b == 0xF0 || b == 0xF2 || b == 0xF3 ||
			b == 0x2E || b == 0x36 || b == 0x3E || b == 0x26 || b == 0x64 || b == 0x65:
			i++
			continue
		case mode == 64 && b&0xF0 == 0x40: // REX
			i++
			continue
		}
		break
	}
	if i+2 < len(code) && code[i] == 0x0F && code[i+1] >= 0x20 && code[i+1] <= 0x23 && code[i+2]&0xC0 != 0xC0 {
		c := append([]byte(nil), code...)
		c[i+2] |= 0xC0
		return c
	}
	return code
}
