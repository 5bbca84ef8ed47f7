package svm

import (
	"errors"
	"fmt"
	"strings"
)

// CPUID leaves and bits for SVM detection (APM vol. 2, 15.4 and vol. 3,
// appendix E).
const (
	CPUIDExtFeatures = 0x80000001
	ExtFeaturesSVM   = 1 << 2 // ECX: SVM supported
	CPUIDSVMFeatures = 0x8000000a
)

// CPUID 0x8000_000A EDX feature bits (APM vol. 3, E.4.9).
const (
	FeatNP             = 1 << 0  // nested paging
	FeatLbrVirt        = 1 << 1  // LBR virtualization
	FeatSVML           = 1 << 2  // SVM lock
	FeatNRIPS          = 1 << 3  // NextRIP saved on #VMEXIT
	FeatTSCRateMSR     = 1 << 4  // TSC ratio MSR
	FeatVMCBClean      = 1 << 5  // VMCB clean bits
	FeatFlushByASID    = 1 << 6  // TLB_CONTROL flush by ASID
	FeatDecodeAssists  = 1 << 7  // instruction bytes and operands on #VMEXIT
	FeatPauseFilter    = 1 << 10 // PAUSE intercept filter
	FeatPauseThreshold = 1 << 12
	FeatAVIC           = 1 << 13
	FeatVVMSAVE        = 1 << 15 // virtualized VMSAVE/VMLOAD
	FeatVGIF           = 1 << 16 // virtualized GIF
)

// MSRs of SVM (APM vol. 2, 15.30).
const (
	MSREFER      = 0xc0000080
	MSRVMCR      = 0xc0010114 // VM_CR
	MSRVMHsavePA = 0xc0010117 // VM_HSAVE_PA: host state save area
	VMCRLock     = 1 << 3     // VM_CR.LOCK: SVMDIS cannot be changed (set by firmware)
	VMCRSVMDis   = 1 << 4     // VM_CR.SVMDIS: SVM disabled by firmware
)

// Features is what the CPU offers for SVM.
type Features struct {
	Revision uint32 // SVM revision (CPUID 8000_000A EAX[7:0])
	NASID    uint32 // number of ASIDs (EBX)
	EDX      uint32 // raw feature bits
}

// Has reports whether all of the given Feat* bits are present.
func (f Features) Has(bits uint32) bool { return f.EDX&bits == bits }

// NRIP reports NextRIP save: the VMCB tells the next RIP on instruction
// intercepts, so no decoding is needed to skip an instruction.
func (f Features) NRIP() bool { return f.Has(FeatNRIPS) }

// DecodeAssists reports whether the VMCB carries the guest instruction bytes.
func (f Features) DecodeAssists() bool { return f.Has(FeatDecodeAssists) }

// String lists the features, e.g. "rev 1, 16 ASIDs, NP NRIPS".
func (f Features) String() string {
	names := []struct {
		bit  uint32
		name string
	}{
		{FeatNP, "NP"}, {FeatLbrVirt, "LbrVirt"}, {FeatSVML, "SVML"},
		{FeatNRIPS, "NRIPS"}, {FeatTSCRateMSR, "TscRate"},
		{FeatVMCBClean, "VmcbClean"}, {FeatFlushByASID, "FlushByAsid"},
		{FeatDecodeAssists, "DecodeAssists"}, {FeatPauseFilter, "PauseFilter"},
		{FeatAVIC, "AVIC"}, {FeatVVMSAVE, "vVMSAVE"}, {FeatVGIF, "VGIF"},
	}
	var have []string
	for _, n := range names {
		if f.EDX&n.bit != 0 {
			have = append(have, n.name)
		}
	}
	return fmt.Sprintf("rev %d, %d ASIDs, %s", f.Revision, f.NASID, strings.Join(have, " "))
}

// ErrNoSVM is returned when the CPU does not implement SVM at all.
var ErrNoSVM = errors.New("SVM not available: CPUID 8000_0001 ECX.SVM is clear (no AMD-V on this CPU, or QEMU without +svm)")

// ErrSVMDisabled is returned when firmware disabled SVM through VM_CR.
var ErrSVMDisabled = errors.New("SVM not available: disabled by firmware (VM_CR.SVMDIS is set)")

// ErrNoNPT is returned when the CPU lacks nested paging, which tamavisor needs.
var ErrNoNPT = errors.New("SVM not available: nested paging (NPT) is not supported")

// CPUIDFunc executes CPUID.
type CPUIDFunc func(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// Detect decides whether SVM can be used (APM vol. 2, 15.4 "Enabling SVM"):
// CPUID says SVM exists, VM_CR.SVMDIS is clear, and nested paging exists.
// readVMCR is called only when CPUID reports SVM, since VM_CR exists only then.
func Detect(cpuid CPUIDFunc, readVMCR func() uint64) (Features, error) {
	if maxExt, _, _, _ := cpuid(0x80000000, 0); maxExt < CPUIDSVMFeatures {
		return Features{}, ErrNoSVM
	}
	if _, _, ecx, _ := cpuid(CPUIDExtFeatures, 0); ecx&ExtFeaturesSVM == 0 {
		return Features{}, ErrNoSVM
	}
	if readVMCR()&VMCRSVMDis != 0 {
		return Features{}, ErrSVMDisabled
	}
	eax, ebx, _, edx := cpuid(CPUIDSVMFeatures, 0)
	f := Features{Revision: eax & 0xff, NASID: ebx, EDX: edx}
	if !f.Has(FeatNP) {
		return f, ErrNoNPT
	}
	return f, nil
}
