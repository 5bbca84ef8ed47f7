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
	hsave    uint64 // VM_HSAVE_PA page (APM vol. 2, 15.30.4)
	state    uint64 // VMSAVE area for host FS/GS/TR/LDTR and syscall MSRs
	hostFX   *FXArea
	fxBuf    []byte
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
	return h, nil
}

// Run enters the guest of the VMCB at physical address vmcb and returns at
// its next #VMEXIT; the exit is described in the VMCB's control area.
// regs and fx hold the guest state that is not in the VMCB.
func (h *Host) Run(vmcb uint64, regs *Regs, fx *FXArea) {
	run(vmcb, h.state, regs, fx, h.hostFX)
}

// BareLoop runs n VMRUN/#VMEXIT pairs back to back in assembly, the floor
// against which the exit path is measured. The guest must be parked on an
// intercepted instruction.
func (h *Host) BareLoop(vmcb uint64, n uint64) {
	if n > 0 {
		bareLoop(vmcb, h.state, n)
	}
}

func run(vmcb, hostState uint64, regs *Regs, guestFX, hostFX *FXArea)
func bareLoop(vmcb, hostState uint64, n uint64)

// Phys returns the physical address of a Go object: TamaGo identity-maps
// memory, so it is the virtual address.
func Phys(p unsafe.Pointer) uint64 { return uint64(uintptr(p)) }
