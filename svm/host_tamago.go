//go:build tamago && amd64

package svm

import (
	"fmt"
	"unsafe"

	"tamavisor/internal/x86"
)

// Host is this CPU with SVM enabled: EFER.SVME set, a host state save area
// registered in VM_HSAVE_PA, and a page for the host state that VMSAVE/
// VMLOAD move around each VMRUN.
type Host struct {
	Features Features
	// XCR0 is the host's XCR0 when XSAVE is enabled (the components the
	// world switch saves and restores for guests), else 0: then only
	// x87/SSE state moves, with FXSAVE.
	XCR0   uint64
	hsave  uint64 // VM_HSAVE_PA page (APM vol. 2, 15.30.4)
	state  uint64 // VMSAVE area for host FS/GS/TR/LDTR and syscall MSRs
	hostFX *FXArea
	fxBuf  []byte
}

// Enable detects SVM and enables it on this CPU (APM vol. 2, 15.4).
func Enable(alloc PageAllocator) (*Host, error) {
	f, err := Detect(x86.CPUID, func() uint64 { return x86.RDMSR(MSRVMCR) })
	if err != nil {
		return nil, err
	}
	h := &Host{Features: f, fxBuf: make([]byte, 512+16)}
	h.hostFX = FXAreaAligned(h.fxBuf)
	if h.hsave, err = alloc.AllocPage(); err != nil {
		return nil, fmt.Errorf("svm: host save area: %w", err)
	}
	if h.state, err = alloc.AllocPage(); err != nil {
		return nil, fmt.Errorf("svm: host state page: %w", err)
	}
	// NXE too: nested page tables are walked in the host's paging mode,
	// and their non-executable bit is reserved without it (APM vol. 2,
	// 15.25.5).
	x86.WRMSR(MSREFER, x86.RDMSR(MSREFER)|EFERSVME|EFERNXE)
	x86.WRMSR(MSRVMHsavePA, h.hsave)
	h.enableXSAVE()
	return h, nil
}

// enableXSAVE turns on XSAVE (CR4.OSXSAVE) with XCR0 = the guest
// components the CPU supports, so that guests can use AVX: SVM does not
// switch XCR0 or the extended state, the world switch does (launch_amd64.s).
// TamaGo's runtime chose its code paths before this, without AVX, so the
// host itself never touches the YMM registers.
func (h *Host) enableXSAVE() {
	if _, _, c, _ := x86.CPUID(1, 0); c&CPUIDXSAVE == 0 {
		return
	}
	lo, _, _, hi := x86.CPUID(0xd, 0)
	supported := uint64(hi)<<32 | uint64(lo)
	x86.WriteCR4(x86.ReadCR4() | CR4OSXSAVE)
	h.XCR0 = supported & XCR0Guest
	x86.XSETBV(0, h.XCR0)
}

// Run enters the guest of the VMCB at physical address vmcb and returns at
// its next #VMEXIT; the exit is described in the VMCB's control area.
// regs and fx hold the guest state that is not in the VMCB.
//
// fx is the guest's XSAVE area (standard format, 64-byte aligned, of
// XSaveSize(h.XCR0) bytes) when h.XCR0 is set, else its FXSAVE area;
// *xcr0 is the guest's XCR0, loaded for the guest's run only, and updated
// with the value the guest left (it may set XCR0 without an exit where the
// XSETBV intercept is not implemented: QEMU TCG).
func (h *Host) Run(vmcb uint64, regs *Regs, fx *FXArea, xcr0 *uint64) {
	run(vmcb, h.state, regs, fx, h.hostFX, xcr0, h.XCR0)
}

// BareLoop runs n VMRUN/#VMEXIT pairs back to back in assembly, the floor
// against which the exit path is measured. The guest must be parked on an
// intercepted instruction.
func (h *Host) BareLoop(vmcb uint64, n uint64) {
	if n > 0 {
		bareLoop(vmcb, h.state, n)
	}
}

func run(vmcb, hostState uint64, regs *Regs, guestFX, hostFX *FXArea, guestXCR0 *uint64, hostXCR0 uint64)
func bareLoop(vmcb, hostState uint64, n uint64)

// Phys returns the physical address of a Go object: TamaGo identity-maps
// memory, so it is the virtual address.
func Phys(p unsafe.Pointer) uint64 { return uint64(uintptr(p)) }
