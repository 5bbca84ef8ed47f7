package kernel

import (
	"tamavisor/kernel/insn"
	"tamavisor/svm"
)

// mmio emulates the guest instruction that faulted on gpa, an address of a
// device on the MMIO bus (a nested page fault: device pages are never
// mapped). The instruction comes from the VMCB's instruction bytes when the
// CPU has decode assists, else from guest memory through the guest's
// paging (QEMU TCG has none); insn.DecodeMMIO says what it does to memory,
// the device performs the read or write, the register operand is written
// back and RIP advanced. An instruction that is not a plain load or store
// (MOV, MOVZX, MOVSX, XCHG) stops the VM, naming it.
func (v *VCPU) mmio(gpa uint64) {
	s, c := &v.vmcb.State, &v.vmcb.Control
	v.syncCPU()
	mode := v.cpu.Mode()
	var code []byte
	if v.vm.plat.Features.DecodeAssists() && c.InsnLen > 0 && int(c.InsnLen) <= len(c.InsnBytes) {
		code = c.InsnBytes[:c.InsnLen]
	} else {
		n, err := insn.Fetch(&v.vm.Mem, &v.cpu, v.ibuf[:])
		if n == 0 {
			v.vm.stopFault(ClassUndecodable, "MMIO access to %#x at RIP %#x: cannot fetch the instruction: %v", gpa, s.RIP, err)
			return
		}
		code = v.ibuf[:n]
	}
	a, err := insn.DecodeMMIO(code, mode)
	if err != nil {
		v.vm.stopFault(ClassNotEmulated, "MMIO access to %#x at RIP %#x is not emulated: %v", gpa, s.RIP, err)
		return
	}
	dev, off, ok := v.vm.MMIO.Lookup(gpa, a.Size)
	if !ok {
		v.vm.stopFault(ClassNotEmulated, "MMIO access of %d bytes at %#x (RIP %#x, %s) crosses a device's range", a.Size, gpa, s.RIP, a.Inst)
		return
	}
	g := v.gprs()
	switch {
	case a.Exchange:
		old := dev.Read(off, a.Size)
		dev.Write(off, a.Size, a.StoreValue(&g))
		a.Load(&g, old)
	case a.Write:
		dev.Write(off, a.Size, a.StoreValue(&g))
	default:
		a.Load(&g, dev.Read(off, a.Size))
	}
	v.setGPRs(&g)
	s.RIP += uint64(a.Len)
	switch mode {
	case 16:
		s.RIP &= 0xffff
	case 32:
		s.RIP &= 0xffffffff
	}
	c.InterruptShadow &^= svm.InterruptShadowMask
	v.vm.MMIOExits++
}

// gprs returns the guest's general-purpose registers in encoding order
// (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15).
func (v *VCPU) gprs() [16]uint64 {
	r, s := &v.Regs, &v.vmcb.State
	return [16]uint64{s.RAX, r.RCX, r.RDX, r.RBX, s.RSP, r.RBP, r.RSI, r.RDI,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15}
}

func (v *VCPU) setGPRs(g *[16]uint64) {
	r, s := &v.Regs, &v.vmcb.State
	s.RAX, r.RCX, r.RDX, r.RBX, s.RSP, r.RBP, r.RSI, r.RDI = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
	r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15 = g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
}
