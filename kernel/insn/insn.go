// Package insn provides instruction fetch and decode for intercepted guest
// instructions.
//
// Without NRIP save and decode assists (QEMU TCG's SVM model has neither),
// the hypervisor must find the length of an intercepted instruction itself to
// advance the guest's RIP, and for some exits it needs the instruction's
// operands. The bytes at CS:RIP are translated through the guest's own page
// tables (guest-virtual to guest-physical, see Translate) and read through a
// GuestMemory, which maps guest-physical addresses to host memory (nested
// paging is the caller's business). They are then matched against the
// expected instruction's canonical encoding or, failing that, decoded with
// golang.org/x/arch/x86/x86asm.
//
// Length on the canonical encoding of the expected instruction does not
// allocate, provided the CPU value it is given is long-lived (the reads go
// through scratch space inside CPU) and the GuestMemory does not allocate.
package insn

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// MaxLen is the architectural limit on an instruction's length in bytes.
const MaxLen = 15

// GuestMemory reads guest-physical memory. It returns an error for a GPA
// range that is not backed (the caller maps GPAs to host memory through its
// NPT). ReadGPA must not retain b.
type GuestMemory interface {
	ReadGPA(gpa uint64, b []byte) error
}

// CPU is the part of the guest's state that decides how CS:RIP is fetched.
//
// The functions of this package use scratch space inside CPU so that their
// reads through GuestMemory do not allocate: keep one CPU per virtual CPU,
// refresh its exported fields from the VMCB on each exit, and do not share it
// between goroutines.
type CPU struct {
	CR0, CR3, CR4, EFER uint64
	CSBase              uint64
	CSAttrib            uint16 // VMCB segment attribute format (APM vol. 2, 15.5.1 and appendix B): bit 9 = L (64-bit), bit 10 = D/B
	RIP                 uint64

	pte  [8]byte      // page-table entry being read
	ibuf [MaxLen]byte // instruction bytes for Length and Decode
}

// CS attribute bits in the VMCB's compressed format: descriptor bits 55:52
// and 47:40 packed into 12 bits (APM vol. 2, 15.5.1).
const (
	CSAttrL  = 1 << 9  // 64-bit code segment
	CSAttrDB = 1 << 10 // default operand size 32
)

// Mode returns the code size in bits: 16, 32 or 64. Real mode (CR0.PE=0) is
// 16; in long mode (EFER.LMA=1) a CS with L=1 is 64; otherwise CS.D=1 is 32
// and CS.D=0 is 16 (APM vol. 2, 4.8).
func (c *CPU) Mode() int {
	switch {
	case c.CR0&CR0_PE == 0:
		return 16
	case c.EFER&EFER_LMA != 0 && c.CSAttrib&CSAttrL != 0:
		return 64
	case c.CSAttrib&CSAttrDB != 0:
		return 32
	}
	return 16
}

// linear returns the linear address of the instruction byte at offset off
// from CS:RIP in the given mode, and how many bytes from there on are at
// consecutive linear addresses (before the instruction pointer wraps).
//
// In 64-bit mode the CS base is ignored and the address is RIP+off. In 32-bit
// code the offset is EIP+off modulo 2^32; in 16-bit code it is IP+off modulo
// 2^16; in both the linear address is CS.base+offset modulo 2^32.
func (c *CPU) linear(mode, off int) (lin uint64, run uint64) {
	switch mode {
	case 64:
		return c.RIP + uint64(off), MaxLen
	case 32:
		eip := uint32(c.RIP) + uint32(off)
		return uint64(uint32(c.CSBase) + eip), 1<<32 - uint64(eip)
	}
	ip := uint16(c.RIP) + uint16(off)
	return uint64(uint32(c.CSBase) + uint32(ip)), 1<<16 - uint64(ip)
}

// Fetch reads up to len(buf) (at most MaxLen) instruction bytes at CS:RIP
// into buf. A fetch that crosses a page boundary translates the second page
// separately. If fewer bytes than asked for could be read (the next page is
// not mapped by the guest or not backed), Fetch returns the number of bytes
// that were read and the error that stopped it: as with io.ReaderAt, n > 0
// and err != nil means buf[:n] is valid.
func Fetch(mem GuestMemory, c *CPU, buf []byte) (n int, err error) {
	if len(buf) > MaxLen {
		buf = buf[:MaxLen]
	}
	return fetch(mem, c, c.Mode(), buf, 0, len(buf))
}

// fetch fills buf from offset n on, one page (or wrap-free run) at a time,
// until at least need bytes are there or buf is full.
func fetch(mem GuestMemory, c *CPU, mode int, buf []byte, n, need int) (int, error) {
	if need > len(buf) {
		need = len(buf)
	}
	for n < need {
		lin, run := c.linear(mode, n)
		if r := uint64(pageSize - lin&pageMask); r < run {
			run = r
		}
		if r := uint64(len(buf) - n); r < run {
			run = r
		}
		gpa, err := Translate(mem, c, lin)
		if err != nil {
			return n, err
		}
		if err := mem.ReadGPA(gpa, buf[n:n+int(run)]); err != nil {
			return n, fmt.Errorf("insn: reading code at linear %#x, GPA %#x: %w", lin, gpa, err)
		}
		n += int(run)
	}
	return n, nil
}

// Op names an instruction that Length can expect.
type Op uint8

// Expected instructions, with their canonical encodings.
const (
	OpCPUID   Op = iota + 1 // 0F A2
	OpRDMSR                 // 0F 32
	OpWRMSR                 // 0F 30
	OpHLT                   // F4
	OpVMMCALL               // 0F 01 D9
	OpRDTSC                 // 0F 31
	OpRDTSCP                // 0F 01 F9
	OpINVD                  // 0F 08
	OpWBINVD                // 0F 09
	OpPAUSE                 // F3 90
	OpXSETBV                // 0F 01 D1
	numOps
)

type opInfo struct {
	name  string
	code  [3]byte
	n     uint8
	x86op x86asm.Op // 0 when x86asm does not know the instruction
}

var ops = [numOps]opInfo{
	OpCPUID:   {"CPUID", [3]byte{0x0f, 0xa2}, 2, x86asm.CPUID},
	OpRDMSR:   {"RDMSR", [3]byte{0x0f, 0x32}, 2, x86asm.RDMSR},
	OpWRMSR:   {"WRMSR", [3]byte{0x0f, 0x30}, 2, x86asm.WRMSR},
	OpHLT:     {"HLT", [3]byte{0xf4}, 1, x86asm.HLT},
	OpVMMCALL: {"VMMCALL", [3]byte{0x0f, 0x01, 0xd9}, 3, 0},
	OpRDTSC:   {"RDTSC", [3]byte{0x0f, 0x31}, 2, x86asm.RDTSC},
	OpRDTSCP:  {"RDTSCP", [3]byte{0x0f, 0x01, 0xf9}, 3, x86asm.RDTSCP},
	OpINVD:    {"INVD", [3]byte{0x0f, 0x08}, 2, x86asm.INVD},
	OpWBINVD:  {"WBINVD", [3]byte{0x0f, 0x09}, 2, x86asm.WBINVD},
	OpPAUSE:   {"PAUSE", [3]byte{0xf3, 0x90}, 2, x86asm.PAUSE},
	OpXSETBV:  {"XSETBV", [3]byte{0x0f, 0x01, 0xd1}, 3, x86asm.XSETBV},
}

func (op Op) valid() bool { return op > 0 && op < numOps }

func (op Op) String() string {
	if op.valid() {
		return ops[op].name
	}
	return fmt.Sprintf("Op(%d)", uint8(op))
}

var (
	// ErrMismatch is wrapped by Length's error when the bytes at CS:RIP are
	// not the expected instruction (the guest may have changed its code
	// between the exit and the decode).
	ErrMismatch = errors.New("insn: not the expected instruction")
	// ErrInvalid is wrapped by Length's and Decode's error when the bytes
	// at CS:RIP do not form a valid instruction (unknown opcode, bad LOCK
	// prefix, longer than 15 bytes).
	ErrInvalid = errors.New("insn: invalid instruction")
	errBadOp   = errors.New("insn: invalid expected Op")
)

// Length returns the length of the instruction at CS:RIP, which is expected
// to be expect.
//
// If the bytes at CS:RIP are exactly expect's canonical encoding, Length
// returns its length without calling the general decoder and without
// allocating. Otherwise (prefixes, or a different instruction) it decodes the
// bytes with x86asm in the CPU's mode. If they are not the expected
// instruction it returns an error wrapping ErrMismatch, with the decoded
// length if the bytes are some other valid instruction. Since x86asm does not
// know VMMCALL, a prefixed VMMCALL is recognised here: operand-size,
// address-size, segment and REX prefixes are accepted, while REP/REPNE
// (which make it VMGEXIT) and LOCK are not.
func Length(mem GuestMemory, c *CPU, expect Op) (int, error) {
	if !expect.valid() {
		return 0, errBadOp
	}
	op := &ops[expect]
	want := int(op.n)
	mode := c.Mode()
	buf := c.ibuf[:]
	n, ferr := fetch(mem, c, mode, buf, 0, want)
	if n >= want && buf[0] == op.code[0] && (want < 2 || buf[1] == op.code[1]) && (want < 3 || buf[2] == op.code[2]) {
		return want, nil
	}
	if ferr == nil {
		n, ferr = fetch(mem, c, mode, buf, n, len(buf))
	}
	if n == 0 {
		return 0, ferr
	}
	inst, err := decode(buf[:n], mode, ferr)
	if err != nil {
		if expect == OpVMMCALL && errors.Is(err, ErrInvalid) {
			if l := prefixedVMMCALL(buf[:n], mode); l > 0 {
				return l, nil
			}
		}
		return 0, fmt.Errorf("insn: expected %v at RIP %#x: %w", expect, c.RIP, errors.Join(ErrMismatch, err))
	}
	if inst.Op != op.x86op {
		return inst.Len, fmt.Errorf("insn: expected %v at RIP %#x, found %v: %w", expect, c.RIP, inst, ErrMismatch)
	}
	return inst.Len, nil
}

// Decode fetches and decodes the instruction at CS:RIP in the CPU's mode.
// Instructions that x86asm does not know (among them VMMCALL and the other
// SVM instructions) give an error wrapping ErrInvalid.
func Decode(mem GuestMemory, c *CPU) (x86asm.Inst, error) {
	mode := c.Mode()
	n, ferr := fetch(mem, c, mode, c.ibuf[:], 0, MaxLen)
	if n == 0 {
		return x86asm.Inst{}, ferr
	}
	return decode(c.ibuf[:n], mode, ferr)
}

// decode decodes b, the first bytes at CS:RIP; ferr is the error that kept
// the fetch from reading all MaxLen bytes, if any.
func decode(b []byte, mode int, ferr error) (x86asm.Inst, error) {
	inst, err := x86asm.Decode(b, mode)
	if err == nil && inst.Op == 0 {
		// x86asm reports an instruction cut short by the end of b as
		// a lone prefix byte.
		err = x86asm.ErrTruncated
	}
	switch {
	case err == nil:
	case errors.Is(err, x86asm.ErrTruncated) && ferr != nil:
		// The instruction runs into bytes that could not be read.
		return x86asm.Inst{}, ferr
	default:
		// Unknown opcode, or longer than 15 bytes.
		return x86asm.Inst{}, fmt.Errorf("%w: % x: %v", ErrInvalid, b, err)
	}
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if p&x86asm.PrefixInvalid != 0 {
			return x86asm.Inst{}, fmt.Errorf("%w: % x: LOCK prefix on %v", ErrInvalid, b[:inst.Len], inst.Op)
		}
	}
	return inst, nil
}

// prefixedVMMCALL returns the length of a VMMCALL (0F 01 D9) preceded by
// operand-size, address-size, segment-override or (in 64-bit mode) REX
// prefixes, or 0 if b does not start with one.
func prefixedVMMCALL(b []byte, mode int) int {
	i := 0
prefixes:
	for ; i < len(b); i++ {
		switch p := b[i]; {
		case p == 0x66 || p == 0x67 || p == 0x26 || p == 0x2e || p == 0x36 || p == 0x3e || p == 0x64 || p == 0x65:
		case mode == 64 && p&0xf0 == 0x40:
		default:
			break prefixes
		}
	}
	if i+3 > len(b) || i+3 > MaxLen {
		return 0
	}
	if b[i] != 0x0f || b[i+1] != 0x01 || b[i+2] != 0xd9 {
		return 0
	}
	return i + 3
}
