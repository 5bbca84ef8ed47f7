// Package svm is tamavisor's boundary to AMD Secure Virtual Machine hardware:
// the VMCB, nested page tables, I/O and MSR permission maps, ASIDs, event
// injection, feature detection, and the assembly world switch.
//
// It implements AMD64 Architecture Programmer's Manual, volume 2 (System
// Programming), chapter 15 "Secure Virtual Machine" and appendix B "Layout
// of VMCB". It knows nothing of devices or guest operating systems: policy
// lives in package kernel.
//
// Everything except the world switch and the MSR writes that enable SVM is
// plain Go that the host `go test` runs.
package svm

import "unsafe"

// PageSize is the size of a 4 KiB page, the unit of VMCBs, permission maps
// and nested page tables.
const PageSize = 4096

// Segment is a segment register as the VMCB stores it (APM vol. 2, appendix
// B, table B-2): selector, attributes in the packed VMCB format (descriptor
// bits 8-15 and 20-23 squeezed into 12 bits), limit and base.
type Segment struct {
	Selector uint16
	Attrib   uint16
	Limit    uint32
	Base     uint64
}

// Segment attribute bits in the VMCB packed format (APM vol. 2, 15.5.1 and
// table B-2): bits 0-7 are descriptor bits 40-47, bits 8-11 are bits 52-55.
const (
	SegType     = 0xf    // segment type field
	SegAccessed = 1 << 0 // type: accessed
	SegWrite    = 1 << 1 // type: writable (data) / readable (code)
	SegCode     = 1 << 3 // type: code segment
	SegS        = 1 << 4 // code/data (not system) descriptor
	SegDPLShift = 5      // descriptor privilege level, 2 bits
	SegP        = 1 << 7 // present
	SegAVL      = 1 << 8
	SegL        = 1 << 9  // 64-bit code segment
	SegDB       = 1 << 10 // default operand size 32 bits
	SegG        = 1 << 11 // limit in 4 KiB units

	// System segment types used for LDTR and TR.
	SegTypeLDT      = 0x2
	SegTypeTSS16Avl = 0x1 // available 16-bit TSS
	SegTypeTSS16Bsy = 0x3
	SegTypeTSS64Avl = 0x9 // available 32-bit TSS (legacy mode), 64-bit TSS (long mode)
	SegTypeTSS64Bsy = 0xb
)

// ControlArea is the VMCB control area, offsets 0x000-0x3FF (APM vol. 2,
// appendix B, table B-1).
type ControlArea struct {
	InterceptCR         uint32 // 0x000: bits 0-15 CR reads, 16-31 CR writes
	InterceptDR         uint32 // 0x004: bits 0-15 DR reads, 16-31 DR writes (InterceptDRWrite)
	InterceptExceptions uint32 // 0x008: one bit per exception vector
	InterceptMisc1      uint32 // 0x00C: Intercept* bits of vector 3
	InterceptMisc2      uint32 // 0x010: Intercept* bits of vector 4
	InterceptMisc3      uint32 // 0x014: vector 5
	_                   [0x3c - 0x18]byte
	PauseFilterThresh   uint16 // 0x03C
	PauseFilterCount    uint16 // 0x03E
	IOPMBasePA          uint64 // 0x040: I/O permission map, 12 KiB
	MSRPMBasePA         uint64 // 0x048: MSR permission map, 8 KiB
	TSCOffset           uint64 // 0x050: added to the TSC the guest reads
	GuestASID           uint32 // 0x058
	TLBControl          uint8  // 0x05C: TLBControl* values
	_                   [3]byte
	VIntr               uint64 // 0x060: V_TPR, V_IRQ, VGIF, V_INTR_MASKING, V_INTR_VECTOR...
	InterruptShadow     uint64 // 0x068: bit 0 guest in interrupt shadow, bit 1 guest GIF
	ExitCode            uint64 // 0x070
	ExitInfo1           uint64 // 0x078
	ExitInfo2           uint64 // 0x080
	ExitIntInfo         uint64 // 0x088: event being delivered when the exit happened
	NPEnable            uint64 // 0x090: bit 0 nested paging, bit 1 SEV, bit 2 SEV-ES
	AVICAPICBar         uint64 // 0x098
	GHCBPA              uint64 // 0x0A0
	EventInj            uint64 // 0x0A8: event to inject on VMRUN
	NCR3                uint64 // 0x0B0: nested page table root
	LBRVirtEnable       uint64 // 0x0B8: bit 0 LBR virtualization, bit 1 virtual VMSAVE/VMLOAD
	CleanBits           uint32 // 0x0C0
	_                   uint32
	NextRIP             uint64   // 0x0C8: with NRIP save, RIP after the intercepted instruction
	InsnLen             uint8    // 0x0D0: with decode assists, bytes fetched
	InsnBytes           [15]byte // 0x0D1
	_                   [0x400 - 0xe0]byte
}

// StateSaveArea is the VMCB state save area, VMCB offsets 0x400 onwards
// (APM vol. 2, appendix B, table B-2; offsets below are from 0x400).
type StateSaveArea struct {
	ES, CS, SS, DS, FS, GS Segment // 0x000-0x05F
	GDTR, LDTR, IDTR, TR   Segment // 0x060-0x09F
	_                      [0xcb - 0xa0]byte
	CPL                    uint8 // 0x0CB
	_                      [4]byte
	EFER                   uint64 // 0x0D0
	_                      [0x148 - 0xd8]byte
	CR4                    uint64 // 0x148
	CR3                    uint64 // 0x150
	CR0                    uint64 // 0x158
	DR7                    uint64 // 0x160
	DR6                    uint64 // 0x168
	RFLAGS                 uint64 // 0x170
	RIP                    uint64 // 0x178
	_                      [0x1d8 - 0x180]byte
	RSP                    uint64 // 0x1D8
	SCET                   uint64 // 0x1E0
	SSP                    uint64 // 0x1E8
	ISSTAddr               uint64 // 0x1F0
	RAX                    uint64 // 0x1F8
	STAR                   uint64 // 0x200
	LSTAR                  uint64 // 0x208
	CSTAR                  uint64 // 0x210
	SFMASK                 uint64 // 0x218
	KernelGSBase           uint64 // 0x220
	SysenterCS             uint64 // 0x228
	SysenterESP            uint64 // 0x230
	SysenterEIP            uint64 // 0x238
	CR2                    uint64 // 0x240
	_                      [0x268 - 0x248]byte
	GPAT                   uint64 // 0x268: guest PAT, used with nested paging
	DBGCTL                 uint64 // 0x270
	BRFrom                 uint64 // 0x278
	BRTo                   uint64 // 0x280
	LastExcpFrom           uint64 // 0x288
	LastExcpTo             uint64 // 0x290
}

// VMCB is the Virtual Machine Control Block, one 4 KiB page (APM vol. 2,
// 15.5 and appendix B). VMRUN takes its physical address.
type VMCB struct {
	Control ControlArea
	State   StateSaveArea
	_       [PageSize - 0x400 - unsafe.Sizeof(StateSaveArea{})]byte
}

// InterceptCRWrite returns the InterceptCR bit of writes to CRn (VMCB
// offset 0x000, bits 16-31; APM vol. 2, table B-1).
func InterceptCRWrite(n int) uint32 { return 1 << (16 + n) }

// InterceptDRWrite returns the InterceptDR bit of writes to DRn (VMCB
// offset 0x004, bits 16-31; APM vol. 2, table B-1).
func InterceptDRWrite(n int) uint32 { return 1 << (16 + n) }

// InterceptMisc1 bits, VMCB offset 0x00C (APM vol. 2, table B-1).
const (
	InterceptINTR       = 1 << 0
	InterceptNMI        = 1 << 1
	InterceptSMI        = 1 << 2
	InterceptINIT       = 1 << 3
	InterceptVINTR      = 1 << 4
	InterceptCR0SelWr   = 1 << 5
	InterceptRDTSC      = 1 << 14
	InterceptRDPMC      = 1 << 15
	InterceptCPUID      = 1 << 18
	InterceptIRET       = 1 << 20
	InterceptINVD       = 1 << 22
	InterceptPAUSE      = 1 << 23
	InterceptHLT        = 1 << 24
	InterceptINVLPG     = 1 << 25
	InterceptINVLPGA    = 1 << 26
	InterceptIOIOProt   = 1 << 27
	InterceptMSRProt    = 1 << 28
	InterceptTaskSwitch = 1 << 29
	InterceptFERRFreeze = 1 << 30
	InterceptShutdown   = 1 << 31
)

// InterceptMisc2 bits, VMCB offset 0x010 (APM vol. 2, table B-1).
const (
	InterceptVMRUN   = 1 << 0
	InterceptVMMCALL = 1 << 1
	InterceptVMLOAD  = 1 << 2
	InterceptVMSAVE  = 1 << 3
	InterceptSTGI    = 1 << 4
	InterceptCLGI    = 1 << 5
	InterceptSKINIT  = 1 << 6
	InterceptRDTSCP  = 1 << 7
	InterceptICEBP   = 1 << 8
	InterceptWBINVD  = 1 << 9
	InterceptMONITOR = 1 << 10
	InterceptMWAIT   = 1 << 11
	InterceptMWAITC  = 1 << 12
	InterceptXSETBV  = 1 << 13
	InterceptRDPRU   = 1 << 14
)

// TLBControl values, VMCB offset 0x05C (APM vol. 2, 15.16.1).
const (
	TLBControlNothing      = 0 // do nothing
	TLBControlFlushAll     = 1 // flush the entire TLB, all ASIDs
	TLBControlFlushASID    = 3 // flush this guest's ASID
	TLBControlFlushASIDNon = 7 // flush this ASID's non-global entries
)

// VIntr bits, VMCB offset 0x060 (APM vol. 2, 15.21).
const (
	VIntrTPRMask        = 0xff   // V_TPR
	VIntrIRQ            = 1 << 8 // V_IRQ: a virtual interrupt is pending
	VIntrGIF            = 1 << 9 // VGIF value
	VIntrPrioShift      = 16     // V_INTR_PRIO, 4 bits
	VIntrPrioMask       = 0xf << VIntrPrioShift
	VIntrIgnTPR         = 1 << 20 // V_IGN_TPR
	VIntrMasking        = 1 << 24 // V_INTR_MASKING: host RFLAGS.IF masks physical interrupts
	VIntrVGIFEnable     = 1 << 25
	VIntrVectorShift    = 32 // V_INTR_VECTOR, 8 bits
	InterruptShadowMask = 1 << 0
)

// NPEnable bits, VMCB offset 0x090.
const NPEnableNP = 1 << 0

// Guest register, control and EFER bits that VMRUN checks or tamavisor sets
// (APM vol. 2, 3.1).
const (
	CR0PE = 1 << 0
	CR0MP = 1 << 1
	CR0EM = 1 << 2
	CR0TS = 1 << 3
	CR0ET = 1 << 4
	CR0NE = 1 << 5
	CR0WP = 1 << 16
	CR0AM = 1 << 18
	CR0NW = 1 << 29
	CR0CD = 1 << 30
	CR0PG = 1 << 31

	CR4VME        = 1 << 0 // virtual-8086 mode extensions
	CR4PVI        = 1 << 1 // protected-mode virtual interrupts
	CR4TSD        = 1 << 2 // time stamp disable (RDTSC at CPL 0 only)
	CR4DE         = 1 << 3 // debugging extensions
	CR4PSE        = 1 << 4
	CR4PAE        = 1 << 5
	CR4MCE        = 1 << 6 // machine check enable
	CR4PGE        = 1 << 7
	CR4PCE        = 1 << 8 // RDPMC at any CPL
	CR4OSFXSR     = 1 << 9
	CR4OSXMMEXCPT = 1 << 10
	CR4UMIP       = 1 << 11 // user-mode instruction prevention
	CR4LA57       = 1 << 12
	CR4FSGSBASE   = 1 << 16 // RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE
	CR4PCIDE      = 1 << 17 // process-context identifiers
	CR4SMEP       = 1 << 20 // supervisor-mode execution prevention
	CR4SMAP       = 1 << 21 // supervisor-mode access prevention
	CR4PKE        = 1 << 22 // protection keys
	CR4CET        = 1 << 23 // control-flow enforcement (shadow stacks)

	EFERSCE   = 1 << 0
	EFERLME   = 1 << 8
	EFERLMA   = 1 << 10
	EFERNXE   = 1 << 11
	EFERSVME  = 1 << 12
	EFERLMSLE = 1 << 13
	EFERFFXSR = 1 << 14
	EFERTCE   = 1 << 15

	RFLAGSFixed = 1 << 1 // reserved bit 1 reads as one
	RFLAGSTF    = 1 << 8
	RFLAGSRF    = 1 << 16 // resume flag: suppresses instruction breakpoints for one instruction
	RFLAGSIF    = 1 << 9
	RFLAGSVM    = 1 << 17
)
