package svm

import "fmt"

// ExitCode is the VMCB EXITCODE field (APM vol. 2, appendix C "SVM Intercept
// Exit Codes").
type ExitCode uint64

// Exit codes tamavisor handles or reports.
const (
	ExitCR0Read     ExitCode = 0x00 // + n for CRn
	ExitCR0Write    ExitCode = 0x10 // + n for CRn
	ExitDR0Read     ExitCode = 0x20 // + n for DRn
	ExitDR0Write    ExitCode = 0x30 // + n for DRn
	ExitExcp0       ExitCode = 0x40 // + vector for exception intercepts
	ExitINTR        ExitCode = 0x60
	ExitNMI         ExitCode = 0x61
	ExitSMI         ExitCode = 0x62
	ExitINIT        ExitCode = 0x63
	ExitVINTR       ExitCode = 0x64
	ExitRDTSC       ExitCode = 0x6e
	ExitRDPMC       ExitCode = 0x6f
	ExitCPUID       ExitCode = 0x72
	ExitIRET        ExitCode = 0x74
	ExitINVD        ExitCode = 0x76
	ExitPAUSE       ExitCode = 0x77
	ExitHLT         ExitCode = 0x78
	ExitINVLPG      ExitCode = 0x79
	ExitINVLPGA     ExitCode = 0x7a
	ExitIOIO        ExitCode = 0x7b
	ExitMSR         ExitCode = 0x7c
	ExitTaskSwitch  ExitCode = 0x7d
	ExitFERRFreeze  ExitCode = 0x7e
	ExitShutdown    ExitCode = 0x7f
	ExitVMRUN       ExitCode = 0x80
	ExitVMMCALL     ExitCode = 0x81
	ExitVMLOAD      ExitCode = 0x82
	ExitVMSAVE      ExitCode = 0x83
	ExitSTGI        ExitCode = 0x84
	ExitCLGI        ExitCode = 0x85
	ExitSKINIT      ExitCode = 0x86
	ExitRDTSCP      ExitCode = 0x87
	ExitICEBP       ExitCode = 0x88
	ExitWBINVD      ExitCode = 0x89
	ExitRDPRU       ExitCode = 0x8e
	ExitMONITOR     ExitCode = 0x8a
	ExitMWAIT       ExitCode = 0x8b
	ExitXSETBV      ExitCode = 0x8d
	ExitNPF         ExitCode = 0x400
	ExitInvalidLow  ExitCode = 0xffffffff // VMEXIT_INVALID (-1); compare the low 32 bits
	exitInvalidMask          = 0xffffffff
)

// Invalid reports whether the exit is VMEXIT_INVALID: VMRUN refused the VMCB
// (APM vol. 2, 15.5.1). Some implementations store it as a 32-bit -1, so only
// the low 32 bits are compared.
func (c ExitCode) Invalid() bool {
	return c&exitInvalidMask == ExitInvalidLow
}

var exitNames = map[ExitCode]string{
	ExitINTR: "INTR", ExitNMI: "NMI", ExitSMI: "SMI", ExitINIT: "INIT",
	ExitVINTR: "VINTR", ExitRDTSC: "RDTSC", ExitRDPMC: "RDPMC",
	ExitCPUID: "CPUID", ExitIRET: "IRET", ExitINVD: "INVD",
	ExitPAUSE: "PAUSE", ExitHLT: "HLT", ExitINVLPG: "INVLPG",
	ExitINVLPGA: "INVLPGA", ExitIOIO: "IOIO", ExitMSR: "MSR",
	ExitTaskSwitch: "TASK_SWITCH", ExitFERRFreeze: "FERR_FREEZE", ExitShutdown: "SHUTDOWN",
	ExitVMRUN: "VMRUN", ExitVMMCALL: "VMMCALL", ExitVMLOAD: "VMLOAD",
	ExitVMSAVE: "VMSAVE", ExitSTGI: "STGI", ExitCLGI: "CLGI",
	ExitSKINIT: "SKINIT", ExitRDTSCP: "RDTSCP", ExitICEBP: "ICEBP",
	ExitWBINVD: "WBINVD", ExitRDPRU: "RDPRU", ExitMONITOR: "MONITOR", ExitMWAIT: "MWAIT",
	ExitXSETBV: "XSETBV", ExitNPF: "NPF",
}

// String names the exit as the APM does (without the VMEXIT_ prefix).
func (c ExitCode) String() string {
	switch {
	case c.Invalid():
		return "INVALID"
	case c < ExitCR0Write:
		return fmt.Sprintf("CR%d_READ", c-ExitCR0Read)
	case c < ExitDR0Read:
		return fmt.Sprintf("CR%d_WRITE", c-ExitCR0Write)
	case c < ExitDR0Write:
		return fmt.Sprintf("DR%d_READ", c-ExitDR0Read)
	case c < ExitExcp0:
		return fmt.Sprintf("DR%d_WRITE", c-ExitDR0Write)
	case c >= ExitExcp0 && c < ExitExcp0+32:
		return fmt.Sprintf("EXCP%d", c-ExitExcp0)
	}
	if s, ok := exitNames[c]; ok {
		return s
	}
	return fmt.Sprintf("0x%x", uint64(c))
}

// IOIO EXITINFO1 fields (APM vol. 2, 15.10.2, figure 15-2).
const (
	IOIOTypeIn    = 1 << 0 // 1 = IN, 0 = OUT
	IOIOString    = 1 << 2 // INS/OUTS
	IOIORep       = 1 << 3 // REP prefix
	IOIOSize8     = 1 << 4
	IOIOSize16    = 1 << 5
	IOIOSize32    = 1 << 6
	IOIOPortShift = 16
)

// IOIO is a decoded IOIO intercept (EXITINFO1).
type IOIO struct {
	Port   uint16
	Size   uint8 // 1, 2 or 4 bytes
	In     bool
	String bool
	Rep    bool
}

// DecodeIOIO decodes EXITINFO1 of an IOIO exit.
func DecodeIOIO(info1 uint64) IOIO {
	io := IOIO{
		Port:   uint16(info1 >> IOIOPortShift),
		In:     info1&IOIOTypeIn != 0,
		String: info1&IOIOString != 0,
		Rep:    info1&IOIORep != 0,
	}
	switch {
	case info1&IOIOSize32 != 0:
		io.Size = 4
	case info1&IOIOSize16 != 0:
		io.Size = 2
	default:
		io.Size = 1
	}
	return io
}

// NPF EXITINFO1 bits: the #PF error code of the nested walk plus where it
// happened (APM vol. 2, 15.25.6).
const (
	NPFPresent   = 1 << 0
	NPFWrite     = 1 << 1
	NPFUser      = 1 << 2
	NPFReserved  = 1 << 3
	NPFFetch     = 1 << 4
	NPFFinalAddr = 1 << 32 // fault on the final guest-physical address
	NPFTableWalk = 1 << 33 // fault while walking the guest's page tables
)

// DescribeNPF renders an NPF's EXITINFO1 for reports.
func DescribeNPF(info1 uint64) string {
	kind := "read"
	switch {
	case info1&NPFFetch != 0:
		kind = "instruction fetch"
	case info1&NPFWrite != 0:
		kind = "write"
	}
	s := kind
	if info1&NPFPresent == 0 {
		s += ", not mapped"
	} else {
		s += ", protection"
	}
	if info1&NPFReserved != 0 {
		s += ", reserved bit"
	}
	if info1&NPFTableWalk != 0 {
		s += ", during guest page-table walk"
	}
	return s
}
