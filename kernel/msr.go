package kernel

import "tamavisor/svm"

// MSR numbers (APM vol. 2, appendix A).
const (
	msrTSC           = 0x10
	msrAPICBase      = 0x1b
	msrMTRRCap       = 0xfe
	msrSysenterCS    = 0x174
	msrSysenterESP   = 0x175
	msrSysenterEIP   = 0x176
	msrMCGCap        = 0x179
	msrMCGStatus     = 0x17a
	msrMCGCtl        = 0x17b
	msrMTRRPhysFirst = 0x200 // variable-range MTRRs 0x200-0x20f
	msrMTRRPhysLast  = 0x20f
	msrMTRRFix64K    = 0x250
	msrMTRRFix16K0   = 0x258
	msrMTRRFix16K1   = 0x259
	msrMTRRFix4KFst  = 0x268
	msrMTRRFix4KLast = 0x26f
	msrPAT           = 0x277
	msrMTRRDefType   = 0x2ff
	msrEFER          = 0xc0000080
	msrSTAR          = 0xc0000081
	msrLSTAR         = 0xc0000082
	msrCSTAR         = 0xc0000083
	msrSFMASK        = 0xc0000084
	msrFSBase        = 0xc0000100
	msrGSBase        = 0xc0000101
	msrKernelGSBase  = 0xc0000102
	msrTSCAux        = 0xc0000103
	msrHWCR          = 0xc0010015
	msrNBCfg         = 0xc001001f // AMD northbridge configuration (BKDG): Linux reads it on AMD
	msrIntPending    = 0xc0010055 // AMD interrupt pending message (C1E): Linux reads it on AMD
	msrPredCmd       = 0x49       // PRED_CMD: bit 0 IBPB (write-only)
	predCmdIBPB      = 1
)

// eferWritable are the EFER bits a guest may set (APM vol. 2, 3.1.7); SVME
// is the hypervisor's, and LMA is set by the CPU.
const eferWritable = svm.EFERSCE | svm.EFERLME | svm.EFERNXE | svm.EFERFFXSR

// mtrrDefTypeValid are MTRRdefType's defined bits: type (7:0), FE (10), E (11).
const mtrrDefTypeValid = 0xff | 1<<10 | 1<<11

// passThroughMSRs live in the VMCB save area and move with VMLOAD/VMSAVE on
// every world switch, so the guest can access them without an exit.
var passThroughMSRs = []uint32{
	msrSysenterCS, msrSysenterESP, msrSysenterEIP,
	msrSTAR, msrLSTAR, msrCSTAR, msrSFMASK,
	msrFSBase, msrGSBase, msrKernelGSBase,
}

// msrState is the MSR state the model keeps outside the VMCB.
type msrState struct {
	TSCAux      uint64
	MTRRDefType uint64
}

// patValid checks that every PAT entry is a defined memory type (0, 1, 4-7).
func patValid(v uint64) bool {
	for i := 0; i < 8; i++ {
		switch (v >> (8 * i)) & 0xff {
		case 0, 1, 4, 5, 6, 7:
		default:
			return false
		}
	}
	return true
}

// stubMSR reports the MSRs that read as 0 and ignore writes: the MTRRs
// (none are emulated), MCG_STATUS, HWCR, NB_CFG and the interrupt pending
// message register (no C1E).
func stubMSR(msr uint32) bool {
	switch {
	case msr == msrMCGStatus, msr == msrHWCR, msr == msrNBCfg, msr == msrIntPending,
		msr >= msrMTRRPhysFirst && msr <= msrMTRRPhysLast,
		msr == msrMTRRFix64K, msr == msrMTRRFix16K0, msr == msrMTRRFix16K1,
		msr >= msrMTRRFix4KFst && msr <= msrMTRRFix4KLast:
		return true
	}
	return false
}

// readMSR emulates RDMSR; ok is false for MSRs outside the allowlist, which
// get #GP(0).
func (v *VCPU) readMSR(msr uint32) (val uint64, ok bool) {
	s := &v.vmcb.State
	switch {
	case msr == msrEFER:
		return s.EFER &^ svm.EFERSVME, true
	case msr == msrPAT:
		return s.GPAT, true
	case msr == msrTSC:
		return v.vm.plat.TSC() + v.vmcb.Control.TSCOffset, true
	case msr == msrTSCAux:
		return v.msrs.TSCAux, true
	case msr == msrMTRRDefType:
		return v.msrs.MTRRDefType, true
	case msr == msrMTRRCap, msr == msrMCGCap, stubMSR(msr):
		return 0, true
	case msr == msrAPICBase:
		return v.vm.PC.LAPIC.BaseMSR(), true
	}
	return 0, false
}

// writeMSR emulates WRMSR; ok is false when the MSR is not allowlisted or
// the value is invalid for it, which gets #GP(0).
func (v *VCPU) writeMSR(msr uint32, val uint64) bool {
	s := &v.vmcb.State
	switch {
	case msr == msrEFER:
		if val&^(eferWritable|svm.EFERLMA) != 0 {
			return false
		}
		// LME cannot change while paging is on (APM vol. 2, 14.6.1).
		if s.CR0&svm.CR0PG != 0 && (val^s.EFER)&svm.EFERLME != 0 {
			return false
		}
		// LMA is read-only: keep the CPU's value.
		s.EFER = val&eferWritable | s.EFER&svm.EFERLMA | svm.EFERSVME
		return true
	case msr == msrPAT:
		if !patValid(val) {
			return false
		}
		s.GPAT = val
		return true
	case msr == msrTSC:
		v.vmcb.Control.TSCOffset = val - v.vm.plat.TSC()
		return true
	case msr == msrTSCAux:
		if val>>32 != 0 {
			return false
		}
		v.msrs.TSCAux = val
		return true
	case msr == msrMTRRDefType:
		if val&^mtrrDefTypeValid != 0 {
			return false
		}
		v.msrs.MTRRDefType = val
		return true
	case stubMSR(msr):
		return true // accepted and ignored: no MTRRs are emulated
	case msr == msrAPICBase:
		// x2APIC, relocation and reserved bits are refused (#GP).
		return v.vm.PC.LAPIC.SetBaseMSR(val) == nil
	case msr == msrPredCmd:
		// IBPB, offered only where the host has it (CPUID 0x8000_0008).
		if _, b, _, _ := v.vm.CPUID.Lookup(leafExtSize, 0); b&e8ebxIBPB == 0 || val != predCmdIBPB {
			return false
		}
		if v.vm.plat.IBPB != nil {
			v.vm.plat.IBPB()
		}
		return true
	}
	return false
}
