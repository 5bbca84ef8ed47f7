package kernel

import "tamavisor/kernel/insn"

// Hypercall numbers and results (docs/guest-abi.md, "Hypercalls").
const (
	HCVersion      = 0
	HCConsoleWrite = 1
	HCExit         = 2
	HCBenchReport  = 3
	HCSnapshot     = 4

	ABIVersion = 1

	// Errors are returned as negative numbers in RAX.
	ENOSYS = -1
	EINVAL = -2
	EBUSY  = -3
	EIO    = -4 // the snapshot could not be written
	ENODEV = -5 // no snapshot disk

	maxConsoleWrite = 4096
)

// hypercall handles VMMCALL: function in RAX, arguments in RBX, RCX, RDX,
// result in RAX.
func (v *VCPU) hypercall() {
	if !v.skip(insn.OpVMMCALL) {
		return
	}
	s := &v.vmcb.State
	r := &v.Regs
	ret := int64(0)
	switch s.RAX {
	case HCVersion:
		ret = ABIVersion
	case HCConsoleWrite:
		n := r.RCX
		if n > maxConsoleWrite {
			ret = EINVAL
			break
		}
		b, err := v.vm.Mem.Slice(r.RBX, n)
		if err != nil {
			ret = EINVAL
			break
		}
		v.vm.plat.Console.Write(b)
		ret = int64(n)
	case HCExit:
		v.vm.stop = &Stop{Kind: StopExited, Status: int(r.RBX & 0xff)}
	case HCBenchReport:
		v.vm.BenchReports[r.RBX] = r.RCX
	case HCSnapshot:
		// Saved at the next exit boundary, after this exit completes;
		// snapshotHypercall sets RAX.
		v.vm.pause = pauseHypercall
		return
	default:
		ret = ENOSYS
	}
	s.RAX = uint64(ret)
}
