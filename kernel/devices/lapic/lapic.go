// Package lapic models the local APIC of tamavisor's one vCPU in xAPIC
// mode, as AMD64 Architecture Programmer's Manual vol. 2 ch. 16 "Advanced
// Programmable Interrupt Controller (APIC)" describes it, with the register
// layout of Intel SDM vol. 3A ch. 11 "Advanced Programmable Interrupt
// Controller (APIC)" where the two agree. Comments cite the SDM's section
// titles ("SDM: ...").
//
// The guest reaches the registers through MMIO at DefaultBase (LAPIC
// implements devices.MMIODevice) and the IA32_APIC_BASE MSR (BaseMSR,
// SetBaseMSR). The hypervisor's injection logic uses Deliver, Pending and
// Ack: after every #VMEXIT (and after running the event queue) it asks
// Pending for a vector, injects it when the guest can take it, and calls
// Ack. Nothing calls back when an interrupt becomes pending: the
// hypervisor polls.
//
// The model is plain Go with no hardware access. A LAPIC is safe for
// concurrent use; the methods that program the timer (Write, SetBaseMSR,
// Reset, UnmarshalState) and the timer itself run on the goroutine that
// owns the event.Queue, as event requires.
package lapic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

// Register offsets from the APIC base (SDM: "Local APIC Register Address
// Map"). Every register is 32 bits wide at a 16-byte aligned offset.
const (
	ID          = 0x020 // APIC ID
	VER         = 0x030 // APIC version
	TPR         = 0x080 // task priority
	APR         = 0x090 // arbitration priority
	PPR         = 0x0A0 // processor priority
	EOI         = 0x0B0 // end of interrupt (write only)
	RRR         = 0x0C0 // remote read
	LDR         = 0x0D0 // logical destination
	DFR         = 0x0E0 // destination format
	SVR         = 0x0F0 // spurious interrupt vector
	ISR         = 0x100 // in-service, 8 registers 0x100-0x170
	TMR         = 0x180 // trigger mode, 8 registers 0x180-0x1F0
	IRR         = 0x200 // interrupt request, 8 registers 0x200-0x270
	ESR         = 0x280 // error status
	ICR_LO      = 0x300 // interrupt command, bits 31:0
	ICR_HI      = 0x310 // interrupt command, bits 63:32
	LVT_TIMER   = 0x320 // LVT timer
	LVT_THERMAL = 0x330 // LVT thermal sensor
	LVT_PERF    = 0x340 // LVT performance monitor counters
	LVT_LINT0   = 0x350 // LVT LINT0
	LVT_LINT1   = 0x360 // LVT LINT1
	LVT_ERROR   = 0x370 // LVT error
	TIMER_ICR   = 0x380 // timer initial count
	TIMER_CCR   = 0x390 // timer current count (read only)
	TIMER_DCR   = 0x3E0 // timer divide configuration

	// ID_SHIFT and LDR_SHIFT place the (logical) APIC ID in bits 31:24.
	ID_SHIFT  = 24
	LDR_SHIFT = 24

	// Size is the length of the APIC register page.
	Size = 0x1000
	// DefaultBase is the guest-physical address of the register page.
	DefaultBase = 0xFEE00000
	// regStride is the distance between two registers.
	regStride = 0x10
	// vectorRegs is the number of 32-bit registers of ISR, TMR and IRR.
	vectorRegs = 8
)

// IA32_APIC_BASE, the APIC base address MSR (SDM: "Local APIC Status and
// Location").
const (
	MSR_APIC_BASE = 0x1B

	APIC_BASE_BSP  = 1 << 8  // boot strap processor (read only)
	APIC_BASE_EXTD = 1 << 10 // x2APIC mode (refused: not offered)
	APIC_BASE_AE   = 1 << 11 // APIC global enable
	APIC_BASE_ABA  = 0x000FFFFFFFFFF000
	apicBaseMask   = APIC_BASE_BSP | APIC_BASE_EXTD | APIC_BASE_AE | APIC_BASE_ABA
)

// Version register (SDM: "Local APIC Version Register"): an integrated
// APIC (version 1xh) with six LVT entries; no extended APIC space (AMD),
// no EOI-broadcast suppression.
const (
	apicVersion = 0x14
	VER_MLE     = 16 // shift of the max LVT entry field (entries - 1)
	verValue    = apicVersion | (numLVT-1)<<VER_MLE
)

// SVR bits (SDM: "Spurious Interrupt").
const (
	SVR_VECTOR = 0xFF   // spurious vector
	SVR_ASE    = 1 << 8 // APIC software enable
	SVR_FCC    = 1 << 9 // focus CPU core checking (stored, no effect)
	svrMask    = SVR_VECTOR | SVR_ASE | SVR_FCC
	svrReset   = 0xFF
)

// DFR: bits 31:28 select the logical destination model, the rest read
// as ones (SDM: "Logical Destination Mode").
const (
	DFR_MODEL_SHIFT = 28
	DFR_FLAT        = 0xF // flat model
	DFR_CLUSTER     = 0x0 // cluster model
	dfrOnes         = 1<<DFR_MODEL_SHIFT - 1
)

// ESR bits (SDM: "Error Handling").
const (
	ESR_SEND_ILLEGAL_VECTOR = 1 << 5 // IPI with a vector below 16 sent
	ESR_RECV_ILLEGAL_VECTOR = 1 << 6 // interrupt with a vector below 16 received
	esrMask                 = ESR_SEND_ILLEGAL_VECTOR | ESR_RECV_ILLEGAL_VECTOR
)

// Local vector table entry fields (SDM: "Local Vector Table").
const (
	LVT_VECTOR    = 0xFF
	LVT_MT        = 7 << 8  // message type (delivery mode)
	LVT_DS        = 1 << 12 // delivery status (read only, always idle)
	LVT_POLARITY  = 1 << 13 // LINT pin polarity
	LVT_RIR       = 1 << 14 // remote IRR (read only, always 0)
	LVT_TGM       = 1 << 15 // trigger mode, LINT only
	LVT_M         = 1 << 16 // mask
	LVT_TMM       = 1 << 17 // timer mode: periodic
	lvtReset      = LVT_M
	lvtTimerMask  = LVT_VECTOR | LVT_M | LVT_TMM
	lvtLocalMask  = LVT_VECTOR | LVT_MT | LVT_M
	lvtLINTMask   = LVT_VECTOR | LVT_MT | LVT_POLARITY | LVT_TGM | LVT_M
	lvtErrorMask  = LVT_VECTOR | LVT_M
	numLVT        = 6 // timer, thermal, perf, LINT0, LINT1, error
	lvtTimerIndex = 0
	lvtErrorIndex = 5
)

// lvtWritable holds the writable bits of each LVT entry, in register
// order from LVT_TIMER.
var lvtWritable = [numLVT]uint32{lvtTimerMask, lvtLocalMask, lvtLocalMask, lvtLINTMask, lvtLINTMask, lvtErrorMask}

// ICR fields (SDM: "Interrupt Command Register (ICR)").
const (
	ICR_VECTOR       = 0xFF
	ICR_MT           = 7 << 8 // message type
	ICR_MT_FIXED     = 0 << 8
	ICR_MT_LOWEST    = 1 << 8
	ICR_DM           = 1 << 11 // destination mode: logical
	ICR_DS           = 1 << 12 // delivery status (read only, always idle)
	ICR_L            = 1 << 14 // level
	ICR_TGM          = 1 << 15 // trigger mode
	ICR_DSH          = 3 << 18 // destination shorthand
	ICR_DSH_NONE     = 0 << 18
	ICR_DSH_SELF     = 1 << 18
	ICR_DSH_ALL      = 2 << 18 // all including self
	ICR_DSH_OTHERS   = 3 << 18 // all excluding self
	ICR_DEST_SHIFT   = 24      // destination in ICR_HI bits 31:24
	icrLoMask        = ICR_VECTOR | ICR_MT | ICR_DM | ICR_L | ICR_TGM | ICR_DSH
	icrHiMask        = 0xFF << ICR_DEST_SHIFT
	broadcastID      = 0xFF
	clusterLocalMask = 0x0F // cluster model: low nibble selects APICs in a cluster
)

// Timer divide configuration (SDM: "APIC Timer"): the divisor is coded
// in bits 3, 1 and 0.
const (
	TIMER_DCR_MASK = 0xB
	TIMER_DCR_BY_1 = 0xB // divide by 1
	dcrCodeBy1     = 0x7 // bits 3,1,0 of TIMER_DCR_BY_1 as a number
)

// ClockHz is the frequency of the timer's input clock (the "bus clock"),
// before the divider. It is 1 GHz, so one tick is one nanosecond of VM
// time; the guest measures it (Linux calibrates the APIC timer).
const (
	ClockHz    = 1_000_000_000
	nsPerTick  = 1_000_000_000 / ClockHz
	minVector  = 16 // vectors 0-15 are illegal for APIC interrupts
	classShift = 4  // a vector's priority class is vector >> 4
	// illegalVectors masks vectors 0-15 in the first ISR/TMR/IRR word.
	illegalVectors = 1<<minVector - 1
)

// ErrBaseMSR is returned (wrapped) by SetBaseMSR for a value the model
// refuses; the hypervisor answers the WRMSR with #GP.
var ErrBaseMSR = errors.New("lapic: IA32_APIC_BASE value refused")

// StateVersion is the version of LAPIC's snapshot encoding.
const StateVersion = 1

// stateLen is the length of a version 1 snapshot, see MarshalState.
const stateLen = 168

// LAPIC is the local APIC of one vCPU.
//
// Interrupts are accepted into IRR by Deliver (the I/O APIC), by the
// timer, by self-IPIs through ICR and by the error LVT. Only fixed and
// lowest-priority messages are modelled; INIT, SIPI, NMI, SMI and
// ExtINT messages, IPIs to other APICs, and the LINT0/LINT1 pins (no
// 8259 behind them) do nothing. The timer supports one-shot and periodic
// modes (TSC-deadline mode is not offered); thermal and performance
// counter LVTs are stored only.
type LAPIC struct {
	// OnEOI, when set, is called with the vector of every EOI that
	// retires a level-triggered interrupt (its TMR bit set), so the I/O
	// APIC can clear its remote IRR. It is called without the LAPIC's
	// lock held and may call Deliver.
	OnEOI func(vector uint8)

	mu    sync.Mutex
	q     *event.Queue
	timer *event.Timer
	hwID  uint8 // the APIC ID after reset
	r     regs
}

// regs is the architectural state, everything a snapshot holds.
type regs struct {
	base          uint64 // IA32_APIC_BASE
	id, tpr, ldr  uint8  // ID and LDR: bits 31:24 of their registers
	dfrModel      uint8  // DFR bits 31:28
	svr           uint32
	esr           uint32 // ESR as read
	esrPending    uint32 // errors seen since the last ESR write
	icrLo, icrHi  uint32
	lvt           [numLVT]uint32
	initial, dcr  uint32
	deadline      int64 // VM time (ns) the timer count reaches 0; event.Never when stopped
	isr, tmr, irr [vectorRegs]uint32
}

// New returns a LAPIC with APIC ID id in its reset state (enabled at
// DefaultBase, software-disabled, the bootstrap processor), whose timer
// runs on q.
func New(q *event.Queue, id uint8) *LAPIC {
	a := &LAPIC{q: q, hwID: id}
	a.timer = q.NewTimer(a.expire)
	a.r = resetRegs(id)
	return a
}

// resetRegs returns the power-up state (SDM: "Local APIC State After
// Power-Up or Reset").
func resetRegs(id uint8) regs {
	r := regs{
		base:     DefaultBase | APIC_BASE_BSP | APIC_BASE_AE,
		id:       id,
		dfrModel: DFR_FLAT,
		svr:      svrReset,
		deadline: event.Never,
	}
	for i := range r.lvt {
		r.lvt[i] = lvtReset
	}
	return r
}

// Reset puts the APIC in its power-up state and stops the timer.
func (a *LAPIC) Reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.r = resetRegs(a.hwID)
	a.timer.Stop()
}

// vector bit helpers on ISR/TMR/IRR.
func testBit(v *[vectorRegs]uint32, n uint8) bool { return v[n/32]&(1<<(n%32)) != 0 }
func setBit(v *[vectorRegs]uint32, n uint8)       { v[n/32] |= 1 << (n % 32) }
func clearBit(v *[vectorRegs]uint32, n uint8)     { v[n/32] &^= 1 << (n % 32) }

// highest returns the highest vector set in v.
func highest(v *[vectorRegs]uint32) (uint8, bool) {
	for i := vectorRegs - 1; i >= 0; i-- {
		if v[i] != 0 {
			return uint8(i*32 + 31 - bits.LeadingZeros32(v[i])), true
		}
	}
	return 0, false
}

func (a *LAPIC) globalEnabled() bool { return a.r.base&APIC_BASE_AE != 0 }

// enabled reports whether the APIC accepts and presents interrupts:
// globally (IA32_APIC_BASE.AE) and software enabled (SVR.ASE).
func (a *LAPIC) enabled() bool { return a.globalEnabled() && a.r.svr&SVR_ASE != 0 }

// ppr computes the processor priority (SDM: "Task and Processor
// Priorities"): TPR if its class is at least that of the highest in-service
// vector, else that vector's class.
func (a *LAPIC) ppr() uint8 {
	isrv, _ := highest(&a.r.isr)
	if a.r.tpr>>classShift >= isrv>>classShift {
		return a.r.tpr
	}
	return isrv &^ (1<<classShift - 1)
}

// Deliver accepts a fixed interrupt with vector; level marks it
// level-triggered (TMR set), so its EOI is reported to OnEOI. A globally
// or software-disabled APIC drops it; a vector below 16 is refused with
// ESR's receive-illegal-vector error.
func (a *LAPIC) Deliver(vector uint8, level bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.accept(vector, level)
}

func (a *LAPIC) accept(vector uint8, level bool) {
	if !a.enabled() {
		return
	}
	if vector < minVector {
		a.raiseError(ESR_RECV_ILLEGAL_VECTOR)
		return
	}
	setBit(&a.r.irr, vector)
	if level {
		setBit(&a.r.tmr, vector)
	} else {
		clearBit(&a.r.tmr, vector)
	}
}

// raiseError records an APIC error and, the first time it is seen since
// the last ESR write, signals the error LVT (SDM: "Error Handling"). The
// recursion through an illegal error vector ends: each level adds a new
// bit.
func (a *LAPIC) raiseError(bit uint32) {
	if a.r.esrPending&bit != 0 {
		return
	}
	a.r.esrPending |= bit
	a.signalLVT(lvtErrorIndex)
}

// signalLVT delivers the interrupt of a local vector table entry unless
// it is masked.
func (a *LAPIC) signalLVT(i int) {
	e := a.r.lvt[i]
	if e&LVT_M == 0 {
		a.accept(uint8(e&LVT_VECTOR), false)
	}
}

// Pending returns the interrupt the vCPU may take now: the highest
// vector in IRR whose priority class is above that of PPR. ok is false
// when there is none or the APIC is disabled.
func (a *LAPIC) Pending() (vector uint8, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.enabled() {
		return 0, false
	}
	v, ok := highest(&a.r.irr)
	if !ok || v>>classShift <= a.ppr()>>classShift {
		return 0, false
	}
	return v, true
}

// Ack records that vector, as returned by Pending, was injected into the
// vCPU: it moves from IRR to ISR, raising PPR. A vector not in IRR is
// ignored.
func (a *LAPIC) Ack(vector uint8) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !testBit(&a.r.irr, vector) {
		return
	}
	clearBit(&a.r.irr, vector)
	setBit(&a.r.isr, vector)
}

// eoi retires the highest in-service interrupt (SDM: "Signaling
// Interrupt Servicing Completion") and
// returns its vector and whether it was level-triggered.
func (a *LAPIC) eoi() (uint8, bool) {
	v, ok := highest(&a.r.isr)
	if !ok {
		return 0, false
	}
	clearBit(&a.r.isr, v)
	return v, testBit(&a.r.tmr, v)
}

// BaseMSR returns IA32_APIC_BASE.
func (a *LAPIC) BaseMSR() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.r.base
}

// SetBaseMSR writes IA32_APIC_BASE. Reserved bits, x2APIC mode and a base
// other than DefaultBase are refused with ErrBaseMSR; BSP is read only.
// Clearing AE disables the APIC and returns it to its reset state (SDM:
// "Enabling or Disabling the Local APIC"); setting AE again enables it
// from there.
func (a *LAPIC) SetBaseMSR(v uint64) error {
	switch {
	case v&^apicBaseMask != 0:
		return fmt.Errorf("%w: reserved bits in %#x", ErrBaseMSR, v)
	case v&APIC_BASE_EXTD != 0:
		return fmt.Errorf("%w: x2APIC mode in %#x", ErrBaseMSR, v)
	case v&APIC_BASE_ABA != DefaultBase:
		return fmt.Errorf("%w: base %#x (only %#x)", ErrBaseMSR, v&APIC_BASE_ABA, DefaultBase)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if v&APIC_BASE_AE == 0 && a.globalEnabled() {
		a.r = resetRegs(a.hwID)
		a.timer.Stop()
	}
	a.r.base = a.r.base&APIC_BASE_BSP | v&^APIC_BASE_BSP
	return nil
}

// Read implements devices.MMIODevice. Only aligned 32-bit reads of a
// register are defined; others, reserved offsets, write-only registers
// and a globally disabled APIC read 0.
func (a *LAPIC) Read(off uint64, size uint8) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !validAccess(off, size) || !a.globalEnabled() {
		return 0
	}
	return uint64(a.read(off))
}

// Write implements devices.MMIODevice. Only aligned 32-bit writes to a
// register have an effect.
func (a *LAPIC) Write(off uint64, size uint8, v uint64) {
	a.mu.Lock()
	vector, level := a.write(off, size, uint32(v))
	a.mu.Unlock()
	if level && a.OnEOI != nil {
		a.OnEOI(vector)
	}
}

// validAccess reports an architecturally defined access: registers are
// 32 bits, 16-byte aligned (SDM: "Local APIC Register Address Map").
func validAccess(off uint64, size uint8) bool {
	return size == 4 && off < Size && off%regStride == 0
}

var _ devices.MMIODevice = (*LAPIC)(nil)

func (a *LAPIC) read(off uint64) uint32 {
	switch {
	case off >= ISR && off < ISR+vectorRegs*regStride:
		return a.r.isr[(off-ISR)/regStride]
	case off >= TMR && off < TMR+vectorRegs*regStride:
		return a.r.tmr[(off-TMR)/regStride]
	case off >= IRR && off < IRR+vectorRegs*regStride:
		return a.r.irr[(off-IRR)/regStride]
	case off >= LVT_TIMER && off <= LVT_ERROR:
		return a.r.lvt[(off-LVT_TIMER)/regStride]
	}
	switch off {
	case ID:
		return uint32(a.r.id) << ID_SHIFT
	case VER:
		return verValue
	case TPR:
		return uint32(a.r.tpr)
	case PPR:
		return uint32(a.ppr())
	case LDR:
		return uint32(a.r.ldr) << LDR_SHIFT
	case DFR:
		return uint32(a.r.dfrModel)<<DFR_MODEL_SHIFT | dfrOnes
	case SVR:
		return a.r.svr
	case ESR:
		return a.r.esr
	case ICR_LO:
		return a.r.icrLo // ICR_DS clear: delivery is instantaneous
	case ICR_HI:
		return a.r.icrHi
	case TIMER_ICR:
		return a.r.initial
	case TIMER_CCR:
		return a.current(a.q.Now())
	case TIMER_DCR:
		return a.r.dcr
	}
	return 0 // APR, RRR, EOI, reserved
}

// write performs a register write and returns the vector retired by an
// EOI write and whether OnEOI must hear of it.
func (a *LAPIC) write(off uint64, size uint8, v uint32) (uint8, bool) {
	if !validAccess(off, size) || !a.globalEnabled() {
		return 0, false
	}
	if off >= LVT_TIMER && off <= LVT_ERROR {
		i := (off - LVT_TIMER) / regStride
		v &= lvtWritable[i]
		if a.r.svr&SVR_ASE == 0 {
			v |= LVT_M // software-disabled: LVTs stay masked (SDM: "Spurious Interrupt")
		}
		a.r.lvt[i] = v
		return 0, false
	}
	switch off {
	case ID:
		a.r.id = uint8(v >> ID_SHIFT)
	case TPR:
		a.r.tpr = uint8(v)
	case EOI:
		return a.eoi()
	case LDR:
		a.r.ldr = uint8(v >> LDR_SHIFT)
	case DFR:
		a.r.dfrModel = uint8(v >> DFR_MODEL_SHIFT)
	case SVR:
		a.r.svr = v & svrMask
		if a.r.svr&SVR_ASE == 0 {
			for i := range a.r.lvt {
				a.r.lvt[i] |= LVT_M
			}
		}
	case ESR:
		// A write latches the errors seen since the last write and
		// re-arms the error interrupt (SDM: "Error Handling").
		a.r.esr, a.r.esrPending = a.r.esrPending, 0
	case ICR_LO:
		a.r.icrLo = v & icrLoMask
		a.sendIPI()
	case ICR_HI:
		a.r.icrHi = v & icrHiMask
	case TIMER_ICR:
		a.r.initial = v
		a.startTimer(a.q.Now())
	case TIMER_DCR:
		now := a.q.Now()
		count := a.current(now)
		a.r.dcr = v & TIMER_DCR_MASK
		if a.r.deadline != event.Never {
			// The remaining count continues at the new rate.
			a.setDeadline(now + int64(count)*a.tickNs())
		}
	}
	return 0, false
}

// sendIPI sends the interrupt ICR describes (SDM: "Issuing
// Interprocessor Interrupts"). Only
// fixed and lowest-priority messages that reach this APIC do anything.
func (a *LAPIC) sendIPI() {
	lo := a.r.icrLo
	if mt := lo & ICR_MT; mt != ICR_MT_FIXED && mt != ICR_MT_LOWEST {
		return // INIT, SIPI, NMI, SMI: no other vCPU, not modelled
	}
	if !a.targetsSelf(lo, uint8(a.r.icrHi>>ICR_DEST_SHIFT)) {
		return
	}
	vector := uint8(lo & ICR_VECTOR)
	if vector < minVector {
		a.raiseError(ESR_SEND_ILLEGAL_VECTOR)
		return
	}
	a.accept(vector, false)
}

// targetsSelf reports whether an IPI reaches this APIC: shorthands,
// physical and logical destinations (SDM: "Determining IPI Destination").
func (a *LAPIC) targetsSelf(lo uint32, dest uint8) bool {
	switch lo & ICR_DSH {
	case ICR_DSH_SELF, ICR_DSH_ALL:
		return true
	case ICR_DSH_OTHERS:
		return false
	}
	if lo&ICR_DM == 0 { // physical
		return dest == broadcastID || dest == a.r.id
	}
	if dest == broadcastID {
		return true
	}
	if a.r.dfrModel == DFR_CLUSTER {
		return dest>>classShift == a.r.ldr>>classShift && dest&a.r.ldr&clusterLocalMask != 0
	}
	return dest&a.r.ldr != 0
}

// tickNs is the length of one timer count in VM nanoseconds.
func (a *LAPIC) tickNs() int64 {
	code := a.r.dcr&3 | a.r.dcr>>1&4 // bits 3,1,0 -> 0-7
	if code == dcrCodeBy1 {
		return nsPerTick
	}
	return int64(2) << code * nsPerTick // codes 0-6: 2, 4, ..., 128
}

// startTimer (re)starts the count from the initial count; a count of 0
// stops the timer (SDM: "APIC Timer").
func (a *LAPIC) startTimer(now int64) {
	if a.r.initial == 0 {
		a.r.deadline = event.Never
		a.timer.Stop()
		return
	}
	a.setDeadline(now + int64(a.r.initial)*a.tickNs())
}

func (a *LAPIC) setDeadline(d int64) {
	a.r.deadline = d
	a.timer.Arm(d)
}

// current returns the current count at now: the ticks left to the
// deadline, rounded up, reloading from the initial count in periodic
// mode; 0 when stopped or expired.
func (a *LAPIC) current(now int64) uint32 {
	if a.r.deadline == event.Never || a.r.initial == 0 {
		return 0
	}
	tick := a.tickNs()
	period := int64(a.r.initial) * tick
	left := a.r.deadline - now
	switch {
	case left > period:
		left = period // a restored deadline beyond one period
	case left <= 0 && a.r.lvt[lvtTimerIndex]&LVT_TMM == 0:
		return 0 // one-shot, expired
	case left <= 0:
		left = period - (now-a.r.deadline)%period
	}
	return uint32((left + tick - 1) / tick)
}

// expire is the timer's event: the count reached 0. A periodic timer
// re-arms one period after the deadline (not after now, so it does not
// drift), skipping periods that went by unseen; the interrupts of those
// would have merged in IRR anyway.
func (a *LAPIC) expire(now int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.r.deadline
	if d == event.Never || now < d {
		return // stale: stopped or re-armed meanwhile
	}
	if a.r.lvt[lvtTimerIndex]&LVT_TMM != 0 && a.r.initial != 0 {
		period := int64(a.r.initial) * a.tickNs()
		a.setDeadline(d + ((now-d)/period+1)*period)
	} else {
		a.r.deadline = event.Never
	}
	a.signalLVT(lvtTimerIndex)
}

// MarshalState returns the APIC's state, version StateVersion. The
// configuration (queue, reset APIC ID, OnEOI) is not part of it.
//
// Layout, 168 bytes, little endian:
//
//	offset size field
//	0      8    IA32_APIC_BASE
//	8      1    APIC ID (ID bits 31:24)
//	9      1    TPR
//	10     1    logical APIC ID (LDR bits 31:24)
//	11     1    DFR model (DFR bits 31:28)
//	12     4    SVR
//	16     4    ESR as read
//	20     4    errors seen since the last ESR write (ESR bits)
//	24     4    ICR bits 31:0
//	28     4    ICR bits 63:32
//	32     24   LVT timer, thermal, performance, LINT0, LINT1, error
//	56     4    timer initial count
//	60     4    timer divide configuration
//	64     8    timer deadline, VM time in ns (int64); event.Never when stopped
//	72     32   ISR, vector n at bit n%32 of word n/32
//	104    32   TMR, same layout
//	136    32   IRR, same layout
func (a *LAPIC) MarshalState() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &a.r
	b := make([]byte, 0, stateLen)
	b = binary.LittleEndian.AppendUint64(b, r.base)
	b = append(b, r.id, r.tpr, r.ldr, r.dfrModel)
	for _, w := range [...]uint32{r.svr, r.esr, r.esrPending, r.icrLo, r.icrHi} {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	for _, w := range r.lvt {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	b = binary.LittleEndian.AppendUint32(b, r.initial)
	b = binary.LittleEndian.AppendUint32(b, r.dcr)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.deadline))
	for _, v := range []*[vectorRegs]uint32{&r.isr, &r.tmr, &r.irr} {
		for _, w := range v {
			b = binary.LittleEndian.AppendUint32(b, w)
		}
	}
	return b
}

// UnmarshalState replaces the APIC's state with one produced by
// MarshalState and re-arms the timer at the saved deadline (a deadline
// already past fires at the queue's next run). It rejects an unknown
// version, a wrong length and values the APIC can never hold; on error
// the state is unchanged.
func (a *LAPIC) UnmarshalState(version uint16, b []byte) error {
	if version != StateVersion {
		return fmt.Errorf("%w: LAPIC state version %d, want %d", devices.ErrStateVersion, version, StateVersion)
	}
	if len(b) != stateLen {
		return fmt.Errorf("%w: LAPIC state is %d bytes, want %d", devices.ErrStateLength, len(b), stateLen)
	}
	le := binary.LittleEndian
	var r regs
	r.base = le.Uint64(b[0:])
	r.id, r.tpr, r.ldr, r.dfrModel = b[8], b[9], b[10], b[11]
	r.svr, r.esr, r.esrPending = le.Uint32(b[12:]), le.Uint32(b[16:]), le.Uint32(b[20:])
	r.icrLo, r.icrHi = le.Uint32(b[24:]), le.Uint32(b[28:])
	for i := range r.lvt {
		r.lvt[i] = le.Uint32(b[32+4*i:])
	}
	r.initial, r.dcr = le.Uint32(b[56:]), le.Uint32(b[60:])
	r.deadline = int64(le.Uint64(b[64:]))
	for j, v := range []*[vectorRegs]uint32{&r.isr, &r.tmr, &r.irr} {
		for i := range v {
			v[i] = le.Uint32(b[72+32*j+4*i:])
		}
	}
	if err := r.check(); err != nil {
		return fmt.Errorf("%w: LAPIC %v", devices.ErrStateInvalid, err)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.r = r
	if r.deadline == event.Never {
		a.timer.Stop()
	} else {
		a.timer.Arm(r.deadline)
	}
	return nil
}

// check reports a field the model can never hold.
func (r *regs) check() error {
	switch {
	case r.base&^(APIC_BASE_BSP|APIC_BASE_AE|APIC_BASE_ABA) != 0 || r.base&APIC_BASE_ABA != DefaultBase:
		return fmt.Errorf("IA32_APIC_BASE = %#x", r.base)
	case r.dfrModel > DFR_FLAT:
		return fmt.Errorf("DFR model = %#x", r.dfrModel)
	case r.svr&^svrMask != 0:
		return fmt.Errorf("SVR = %#x", r.svr)
	case r.esr&^esrMask != 0 || r.esrPending&^esrMask != 0:
		return fmt.Errorf("ESR = %#x, %#x", r.esr, r.esrPending)
	case r.icrLo&^icrLoMask != 0 || r.icrHi&^icrHiMask != 0:
		return fmt.Errorf("ICR = %#x:%#x", r.icrHi, r.icrLo)
	case r.dcr&^TIMER_DCR_MASK != 0:
		return fmt.Errorf("timer divide configuration = %#x", r.dcr)
	case r.deadline != event.Never && (r.deadline < 0 || r.initial == 0 || r.base&APIC_BASE_AE == 0):
		return fmt.Errorf("timer deadline %d with initial count %d", r.deadline, r.initial)
	}
	for i, e := range r.lvt {
		if e&^lvtWritable[i] != 0 || (r.svr&SVR_ASE == 0 && e&LVT_M == 0) {
			return fmt.Errorf("LVT %d = %#x with SVR %#x", i, e, r.svr)
		}
	}
	// Vectors 0-15 are never accepted.
	if (r.isr[0]|r.tmr[0]|r.irr[0])&illegalVectors != 0 {
		return fmt.Errorf("vector below %d in ISR/TMR/IRR", minVector)
	}
	return nil
}

// Summary describes the interrupt state for the monitor's info: TPR and
// PPR, the highest vector requested (IRR) and in service (ISR), the timer
// LVT, initial count and deadline (VM time in ns, -1 when stopped).
func (a *LAPIC) Summary() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	top := func(v *[vectorRegs]uint32) string {
		if n, ok := highest(v); ok {
			return fmt.Sprintf("%#x", n)
		}
		return "none"
	}
	deadline := "none"
	if a.r.deadline != event.Never {
		deadline = fmt.Sprintf("at %d ns", a.r.deadline)
	}
	return fmt.Sprintf("SVR %#x TPR %#x PPR %#x IRR %s ISR %s, timer LVT %#x initial %d deadline %s",
		a.r.svr, a.r.tpr, a.ppr(), top(&a.r.irr), top(&a.r.isr), a.r.lvt[lvtTimerIndex], a.r.initial, deadline)
}
