package svm

import "unsafe"

// Regs holds the guest general-purpose registers that the VMCB does not:
// VMRUN loads and #VMEXIT saves only RAX, RSP, RIP and RFLAGS (APM vol. 2,
// 15.5), so the world switch moves the others by hand. The field order is
// fixed: launch_amd64.s addresses fields by offset (regsRBX... below).
type Regs struct {
	RBX, RCX, RDX, RSI, RDI, RBP uint64
	R8, R9, R10, R11, R12, R13   uint64
	R14, R15                     uint64
	// DR0-DR3, the breakpoint addresses: the VMCB holds DR6 and DR7 only
	// (APM vol. 2, 15.5.1), so the world switch loads and saves these
	// too. A new vCPU starts with zeros: nothing a previous VM left.
	DR0, DR1, DR2, DR3 uint64
}

// Offsets used by launch_amd64.s; TestRegsLayout keeps them honest.
const (
	regsRBX = 0
	regsRBP = 40
	regsR8  = 48
	regsR15 = 104
)

// FXArea is a 512-byte FXSAVE area: x87, MMX and SSE state (APM vol. 2,
// 11.4.4; the FXSAVE64 layout). It must be 16-byte aligned.
type FXArea [512]byte

// fxAreaMXCSR is the offset of MXCSR in an FXSAVE area (APM vol. 2,
// 11.4.4); the world switch keeps the host's MXCSR there.
const fxAreaMXCSR = 24

// FXAreaAligned returns a 16-byte aligned FXArea inside buf, which must be
// at least 512+15 bytes long.
func FXAreaAligned(buf []byte) *FXArea {
	p := uintptr(unsafe.Pointer(&buf[0]))
	off := (16 - p%16) % 16
	return (*FXArea)(buf[off : off+512])
}

// DefaultFX initialises an FXSAVE area to the state after FNINIT with
// MXCSR at its reset value: FCW=0x037F, MXCSR=0x1F80 (APM vol. 2, table 14-2).
func (a *FXArea) DefaultFX() {
	*a = FXArea{}
	a[0], a[1] = 0x7f, 0x03                       // FCW
	a[fxAreaMXCSR], a[fxAreaMXCSR+1] = 0x80, 0x1f // MXCSR
	a[28], a[29] = 0xff, 0xff                     // MXCSR_MASK: all bits writable
}

// GPR returns register n in the x86 encoding order (0=RAX ... 15=R15),
// with rax and rsp taken from the VMCB values passed in.
func (r *Regs) GPR(n int, rax, rsp uint64) uint64 {
	switch n {
	case 0:
		return rax
	case 1:
		return r.RCX
	case 2:
		return r.RDX
	case 3:
		return r.RBX
	case 4:
		return rsp
	case 5:
		return r.RBP
	case 6:
		return r.RSI
	case 7:
		return r.RDI
	case 8:
		return r.R8
	case 9:
		return r.R9
	case 10:
		return r.R10
	case 11:
		return r.R11
	case 12:
		return r.R12
	case 13:
		return r.R13
	case 14:
		return r.R14
	case 15:
		return r.R15
	}
	return 0
}
