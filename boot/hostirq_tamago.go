//go:build tamago && amd64

package boot

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"tamavisor/internal/x86"
)

// Host interrupts. tamavisor itself uses one: the local APIC timer, armed
// for the next deadline of the running VM (a guest timer, the console and
// control-channel service, a time budget). While the guest runs, its
// expiry is intercepted (INTR, APM vol. 2, 15.9.1) and returns control to
// the hypervisor; the handler only acknowledges it. Every other vector from
// 32 to 255 gets a handler that counts and acknowledges it, so a stray
// interrupt from a device the firmware left live cannot crash the host;
// the legacy PICs are masked and the PIT is stopped after calibration.

// Vectors.
const (
	VectorTimer    = 0xef // host preemption timer
	VectorSpurious = 0xff // local APIC spurious vector
	firstIRQVector = 32   // 0-31 are exceptions (TamaGo's handlers)
	numVectors     = 256
)

// Local APIC registers (APM vol. 2, 16.3.2 table 16-2), at lapicBase.
const (
	DefaultLAPICBase = 0xfee00000 // the local APIC's address after reset
	lapicSVR         = 0x0f0
	lapicEOI         = 0x0b0
	lapicLVTTimer    = 0x320
	lapicTimerICR    = 0x380 // initial count
	lapicTimerCCR    = 0x390 // current count
	lapicTimerDCR    = 0x3e0 // divide configuration
	svrEnable        = 1 << 8
	lvtMasked        = 1 << 16
	dcrDivide1       = 0b1011
	maxTimerCount    = 0xffffffff
	noDeadline       = ^uint64(0) // armedAt when the timer was never armed
	calibrateTicks   = 50_000_000 // TSC cycles to measure the APIC timer over (~20 ms at 2.5 GHz)
)

// 8259A PIC data ports (OCW1: interrupt mask) and the PIT mode 0 command
// that stops channel 0 (8254 datasheet: counting waits for a new count).
const (
	pic1Data     = 0x21
	pic2Data     = 0xa1
	picMaskAll   = 0xff
	pitStopCh0   = PITSelect0 | PITAccessLoHi // mode 0, binary, no count written
	gateSize     = 16
	gateSelector = 1 << 3 // TamaGo's 64-bit code segment
	gateType     = 0x8e   // present, DPL 0, 64-bit interrupt gate
)

var (
	timerIRQs, strayIRQs, spuriousIRQs uint64

	// lapicBase is the host local APIC's physical address (SetLAPICBase).
	lapicBase uint64 = DefaultLAPICBase
	// lapicEOIAddr is the address of its EOI register, for the handlers.
	lapicEOIAddr uint64 = DefaultLAPICBase + lapicEOI

	// APICTimerHz is the host local APIC timer's frequency with divide 1,
	// measured against the TSC (0 before InitHostInterrupts).
	APICTimerHz uint64
	// armedAt is the deadline the timer was last armed for, armedIRQs the
	// timer interrupt count then.
	armedAt, armedIRQs uint64
)

func handlerAddrs() (timer, other, spurious uintptr)
func sidt(p *[10]byte)
func haltUntilInterrupt()
func cli()

func lapicReg(off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(uintptr(lapicBase + uint64(off))))
}

// InitHostInterrupts masks the legacy PICs, stops the PIT, installs the
// handlers for vectors 32-255, enables the local APIC and calibrates its
// timer against the TSC.
func InitHostInterrupts() {
	x86.Out8(pic1Data, picMaskAll)
	x86.Out8(pic2Data, picMaskAll)
	x86.Out8(PITCommand, pitStopCh0)

	var idtr [10]byte
	sidt(&idtr)
	base := binary.LittleEndian.Uint64(idtr[2:])
	limit := int(binary.LittleEndian.Uint16(idtr[:2]))
	timer, other, spurious := handlerAddrs()
	for v := firstIRQVector; v < numVectors && (v+1)*gateSize-1 <= limit; v++ {
		h := other
		switch v {
		case VectorTimer:
			h = timer
		case VectorSpurious:
			h = spurious
		}
		g := unsafe.Slice((*byte)(unsafe.Pointer(uintptr(base)+uintptr(v*gateSize))), gateSize)
		binary.LittleEndian.PutUint16(g[0:], uint16(h))
		binary.LittleEndian.PutUint16(g[2:], gateSelector)
		g[4], g[5] = 0, gateType
		binary.LittleEndian.PutUint16(g[6:], uint16(h>>16))
		binary.LittleEndian.PutUint32(g[8:], uint32(h>>32))
		binary.LittleEndian.PutUint32(g[12:], 0)
	}

	*lapicReg(lapicSVR) = svrEnable | VectorSpurious
	*lapicReg(lapicTimerDCR) = dcrDivide1
	*lapicReg(lapicLVTTimer) = lvtMasked | VectorTimer
	*lapicReg(lapicTimerICR) = maxTimerCount
	t0 := x86.RDTSC()
	c0 := *lapicReg(lapicTimerCCR)
	for x86.RDTSC()-t0 < calibrateTicks {
	}
	c1 := *lapicReg(lapicTimerCCR)
	t1 := x86.RDTSC()
	*lapicReg(lapicTimerICR) = 0
	*lapicReg(lapicLVTTimer) = VectorTimer // one-shot, unmasked; idle until a count is written
	armedAt = noDeadline
	if TSCHz != 0 && c0 > c1 {
		APICTimerHz = uint64(c0-c1) * TSCHz / (t1 - t0)
	}
}

// HostTimer arms the host's local APIC timer to fire at a host TSC value.
type HostTimer struct{}

// Arm sets the timer to expire at host TSC deadline (at once if it has
// passed), right before the world switch. It clears IF: an expiry before
// the switch (CLGI) would otherwise be taken by the host and the guest
// would run with no timer; the world switch sets IF again under CLGI.
// It writes the timer only when the deadline changed or the timer fired
// since it was last armed. The count saturates at the timer's range: a
// far deadline fires early, harmlessly.
func (HostTimer) Arm(deadline uint64) {
	cli()
	if APICTimerHz == 0 || deadline == armedAt && timerIRQs == armedIRQs {
		return
	}
	now := x86.RDTSC()
	count := uint64(1)
	if deadline > now {
		hi, lo := bits.Mul64(deadline-now, APICTimerHz)
		if hi >= TSCHz {
			count = maxTimerCount
		} else {
			q, _ := bits.Div64(hi, lo, TSCHz)
			count = min(max(q, 1), maxTimerCount)
		}
	}
	armedAt, armedIRQs = deadline, timerIRQs
	*lapicReg(lapicTimerICR) = uint32(count)
}

// HaltUntil sleeps until the host TSC reaches deadline or another
// interrupt arrives. Interrupts are off from arming the timer to HLT, so
// a timer that fires in between wakes the HLT instead of being missed.
func (h HostTimer) HaltUntil(deadline uint64) {
	cli()
	armedAt = noDeadline // force the write
	h.Arm(deadline)
	haltUntilInterrupt()
}

// IRQCounts returns how many host interrupts arrived: the preemption
// timer, stray device vectors, and spurious ones.
func IRQCounts() (timer, stray, spurious uint64) {
	return timerIRQs, strayIRQs, spuriousIRQs
}
