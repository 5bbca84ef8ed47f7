package kernel

import (
	"tamavisor/kernel/insn"
	"tamavisor/svm"
)

// Hypercall numbers and results (docs/guest-abi.md, "Hypercalls").
const (
	HCVersion      = 0
	HCConsoleWrite = 1
	HCExit         = 2
	HCBenchReport  = 3
	HCSnapshot     = 4
	HCSnapshotWait = 5

	ABIVersion = 1

	// Errors are returned as negative numbers in RAX.
	ENOSYS = -1
	EINVAL = -2
	EBUSY  = -3
	EIO    = -4 // the snapshot could not be written
	ENODEV = -5 // no snapshot disk
	EPERM  = -6 // called from CPL > 0

	maxBenchReports = 64

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
	// 16- and 32-bit guests pass 32-bit values: ignore stale upper halves.
	mask := ^uint64(0)
	if !(s.EFER&svm.EFERLMA != 0 && s.CS.Attrib&svm.SegL != 0) {
		mask = 0xffffffff
	}
	fn, arg1, arg2 := s.RAX&mask, r.RBX&mask, r.RCX&mask
	// Only the guest kernel may call the hypervisor. The privilege level
	// is the VMCB's CPL field (APM vol. 2, 15.5.1), never SS.DPL: after
	// SYSRET, AMD CPUs leave SS.DPL as it was, so user code runs at CPL 3
	// with SS.DPL 0.
	if s.CPL != 0 {
		s.RAX = errno(EPERM)
		return
	}
	ret := int64(0)
	switch fn {
	case HCVersion:
		ret = ABIVersion
	case HCConsoleWrite:
		n := arg2
		if n > maxConsoleWrite {
			ret = EINVAL
			break
		}
		b, err := v.vm.Mem.Slice(arg1, n)
		if err != nil {
			ret = EINVAL
			break
		}
		v.vm.console.Write(b)
		ret = int64(n)
	case HCExit:
		v.vm.stop = &Stop{Kind: StopExited, Class: ClassExited, Status: int(arg1 & 0xff)}
	case HCBenchReport:
		if _, ok := v.vm.BenchReports[arg1]; !ok && len(v.vm.BenchReports) >= maxBenchReports {
			ret = EBUSY
			break
		}
		v.vm.BenchReports[arg1] = arg2
	case HCSnapshot:
		// Saved right after this exit, before anything else runs;
		// snapshotHypercall sets RAX.
		v.vm.pause |= pauseHypercall
		return
	case HCSnapshotWait:
		s.RAX = v.vm.snapshotWait(arg1)
		return
	default:
		ret = ENOSYS
	}
	s.RAX = uint64(ret)
}
