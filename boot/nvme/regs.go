package nvme

// Regs is access to the controller's registers (BAR0 of the PCI function)
// at byte offsets. 64-bit registers are CAP, ASQ and ACQ; an
// implementation may split a 64-bit access into two 32-bit accesses, low
// half first (Base 2.0 section 3.1.3 allows it).
type Regs interface {
	Read32(off uint32) uint32
	Write32(off uint32, v uint32)
	Read64(off uint32) uint64
	Write64(off uint32, v uint64)
}

// DMA hands out memory the controller can access. pa is the physical
// address of buf[0]; buf has len size and is aligned to align (a power of
// two). Memory is never freed: the driver allocates once and reuses.
type DMA interface {
	Alloc(size, align int) (pa uint64, buf []byte, err error)
}

// Controller properties: offsets in BAR0 (Base 2.0 section 3.1.3).
const (
	CAP   = 0x00 // Controller Capabilities, 64-bit (3.1.3.1)
	VS    = 0x08 // Version (3.1.3.2)
	INTMS = 0x0c // Interrupt Mask Set (3.1.3.3)
	INTMC = 0x10 // Interrupt Mask Clear (3.1.3.4)
	CC    = 0x14 // Controller Configuration (3.1.3.5)
	CSTS  = 0x1c // Controller Status (3.1.3.6)
	NSSR  = 0x20 // NVM Subsystem Reset (3.1.3.7)
	AQA   = 0x24 // Admin Queue Attributes (3.1.3.8)
	ASQ   = 0x28 // Admin Submission Queue Base Address, 64-bit (3.1.3.9)
	ACQ   = 0x30 // Admin Completion Queue Base Address, 64-bit (3.1.3.10)

	// SQ0TDBL is the first doorbell: Submission Queue y Tail Doorbell is at
	// SQ0TDBL + (2y)*(4<<CAP.DSTRD), Completion Queue y Head Doorbell at
	// SQ0TDBL + (2y+1)*(4<<CAP.DSTRD) (NVMe over PCIe Transport 1.0,
	// section 3.1.2).
	SQ0TDBL = 0x1000
)

// CAP fields: bit positions (3.1.3.1).
const (
	CAP_MQES   = 0  // 15:0 Maximum Queue Entries Supported, 0's based
	CAP_CQR    = 16 // Contiguous Queues Required
	CAP_TO     = 24 // 31:24 Timeout, in 500 ms units
	CAP_DSTRD  = 32 // 35:32 Doorbell Stride: 2^(2+DSTRD) bytes
	CAP_NSSRS  = 36 // NVM Subsystem Reset Supported
	CAP_CSS    = 37 // 44:37 Command Sets Supported; bit 37 = NVM Command Set
	CAP_MPSMIN = 48 // 51:48 Memory Page Size Minimum: 2^(12+MPSMIN)
	CAP_MPSMAX = 52 // 55:52 Memory Page Size Maximum

	capMQESBits  = 16
	capTOBits    = 8
	capDSTRDBits = 4
	capMPSBits   = 4
)

// VS fields (3.1.3.2).
const (
	VS_TER = 0  // 7:0 Tertiary Version
	VS_MNR = 8  // 15:8 Minor Version
	VS_MJR = 16 // 31:16 Major Version
)

// CC fields (3.1.3.5).
const (
	CC_EN     = 0  // Enable
	CC_CSS    = 4  // 6:4 I/O Command Set Selected; 000b = NVM Command Set
	CC_MPS    = 7  // 10:7 Memory Page Size: 2^(12+MPS)
	CC_AMS    = 11 // 13:11 Arbitration Mechanism; 000b = round robin
	CC_SHN    = 14 // 15:14 Shutdown Notification
	CC_IOSQES = 16 // 19:16 I/O Submission Queue Entry Size, 2^n bytes
	CC_IOCQES = 20 // 23:20 I/O Completion Queue Entry Size, 2^n bytes

	CC_SHN_NORMAL = 1 // normal shutdown notification
	ccSHNBits     = 2
)

// CSTS fields (3.1.3.6).
const (
	CSTS_RDY   = 0 // Ready
	CSTS_CFS   = 1 // Controller Fatal Status
	CSTS_SHST  = 2 // 3:2 Shutdown Status
	CSTS_NSSRO = 4 // NVM Subsystem Reset Occurred
	CSTS_PP    = 5 // Processing Paused

	CSTS_SHST_COMPLETE = 2 // shutdown processing complete
	cstsSHSTBits       = 2

	// cstsGone is what a register read returns when the function no
	// longer answers on PCIe (master abort reads all ones).
	cstsGone = 0xffffffff
)

// AQA fields (3.1.3.8), both 0's based.
const (
	AQA_ASQS = 0  // 11:0 Admin Submission Queue Size
	AQA_ACQS = 16 // 27:16 Admin Completion Queue Size

	// AdminQueueMaxEntries is the largest admin queue AQA can describe.
	AdminQueueMaxEntries = 4096
)

// field extracts bits [pos, pos+width) of v.
func field(v uint64, pos, width uint) uint64 {
	return v >> pos & (1<<width - 1)
}

// bit reports bit pos of v.
func bit(v uint64, pos uint) bool { return v>>pos&1 != 0 }
