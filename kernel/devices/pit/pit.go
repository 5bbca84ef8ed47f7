// Package pit models the PC's Intel 8254 programmable interval timer
// (Intel 8254 datasheet, order 231164) at ports 0x40-0x43, together with
// the PC's NMI status and control register at port 0x61 (Intel I/O
// Controller Hub datasheets, "NMI_SC", the PC/AT's "port B"), which gates
// counter 2 and reads back its output.
//
// The input clock is CLK (1.193182 MHz). Counts are not ticked: each
// counter remembers when it started counting (VM time, ns) and derives its
// count and OUT from the current VM time with exact integer arithmetic,
// so a guest that calibrates its TSC against counter 2 (Linux's "fast PIT
// calibration") sees the count follow VM time exactly. Counter 0's OUT is
// the PC's IRQ 0: an event.Timer raises an edge (IRQLine pulse) at each
// rising OUT edge (modes 0, 1, 4, 5 once; modes 2 and 3 once a period,
// deadlines computed from the start of counting, so they never drift).
// Counters 0 and 1 have their GATE tied high; counter 2's GATE is
// NMI_SC bit 0.
//
// Departures from the datasheet, all below a microsecond or for
// configurations no PC software uses:
//   - BCD counting (control word bit 0) is stored and read back in the
//     status byte but the counter counts in binary.
//   - A count is loaded at the instant it is written (the chip loads it
//     on the next CLK edge, up to 838 ns later).
//   - A new count written in mode 3 takes effect at the end of the
//     current period (the chip waits for the end of the current half
//     period); in mode 2 at the end of the period, as the chip does.
//   - Before their first trigger, modes 1 and 5 read back the count left
//     in the counter (the chip's count is undefined then).
//
// Register the PIT on the port bus with Register (ports 0x40-0x43 and
// 0x61). A PIT is safe for concurrent use; the methods that program
// counter 0's timer (Out, UnmarshalState) and the timer itself run on the
// goroutine that owns the event.Queue, as event requires.
package pit

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

// Ports (8254 datasheet, Table 1 "Read/Write Operations Summary": A1 A0
// select counter 0-2 or the control word register; PC base 0x40).
const (
	COUNTER0     = 0x40 // counter 0: system timer, IRQ 0
	COUNTER1     = 0x41 // counter 1: DRAM refresh on the PC/AT (OUT unused here)
	COUNTER2     = 0x42 // counter 2: speaker and calibration, gated by NMI_SC
	CONTROL_WORD = 0x43 // control word register (write only; reads float)
	NMI_SC       = 0x61 // NMI status and control ("port B")

	// Ports is the number of ports at COUNTER0.
	Ports = 4
)

// CLK is the frequency of the counters' input clock on the PC (14.31818
// MHz / 12), in Hz.
const CLK = 1193182

const nsPerSec = 1_000_000_000

// Control word format (8254 datasheet, Figure 7 "Control Word Format").
const (
	SC_MASK      = 0xC0 // SC1 SC0: select counter
	SC_SHIFT     = 6
	SC_READ_BACK = 0xC0 // SC1 SC0 = 11: read-back command
	RW_MASK      = 0x30 // RW1 RW0: read/write format
	RW_LATCH     = 0x00 // counter latch command
	RW_LSB       = 0x10 // least significant byte only
	RW_MSB       = 0x20 // most significant byte only
	RW_LSB_MSB   = 0x30 // least, then most significant byte
	M_MASK       = 0x0E // M2 M1 M0: mode (X10 = 2, X11 = 3)
	M_SHIFT      = 1
	BCD          = 0x01 // binary coded decimal counting (treated as binary)

	// modeBits are the control word bits a counter keeps: they are
	// status bits 5:0.
	modeBits = RW_MASK | M_MASK | BCD
)

// Read-back command (8254 datasheet, Figure 10 "Read-Back Command
// Format"). COUNT and STATUS are active low.
const (
	RB_COUNT  = 0x20 // 0: latch the count of the selected counters
	RB_STATUS = 0x10 // 0: latch the status of the selected counters
	RB_CNT0   = 0x02 // select counter 0
	RB_CNT1   = 0x04 // select counter 1
	RB_CNT2   = 0x08 // select counter 2
)

// Status byte (8254 datasheet, Figure 11 "Status Byte"); bits 5:0 are the
// counter's programmed RW, M and BCD bits.
const (
	STATUS_OUTPUT     = 0x80 // OUT pin is 1
	STATUS_NULL_COUNT = 0x40 // the last count written is not yet in the counting element
)

// NMI_SC bits (Intel ICH datasheets, "NMI_SC — NMI Status and Control
// Register"). Bits 3:0 are read/write, bits 7:4 read only.
const (
	TIM_CNT2_EN   = 0x01 // counter 2 GATE
	SPKR_DAT_EN   = 0x02 // speaker data enable (no speaker: stored only)
	PCI_SERR_EN   = 0x04 // stored only
	IOCHK_NMI_EN  = 0x08 // stored only
	REF_TOGGLE    = 0x10 // refresh cycle toggle
	TMR2_OUT_STS  = 0x20 // counter 2 OUT
	IOCHK_NMI_STS = 0x40 // always 0
	SERR_NMI_STS  = 0x80 // always 0

	nmiscWritable = TIM_CNT2_EN | SPKR_DAT_EN | PCI_SERR_EN | IOCHK_NMI_EN
)

// refreshTicks is the half period of REF_TOGGLE in CLK cycles: the PC/AT
// requests a DRAM refresh every 15.09 us (counter 1 programmed to 18), and
// the bit flips on each request.
const refreshTicks = 18

// Counter modes (8254 datasheet, "Modes").
const (
	Mode0 = 0 // interrupt on terminal count
	Mode1 = 1 // hardware retriggerable one-shot
	Mode2 = 2 // rate generator
	Mode3 = 3 // square wave
	Mode4 = 4 // software triggered strobe
	Mode5 = 5 // hardware triggered strobe (retriggerable)
)

// maxCount is the initial count a written 0 stands for (2^16 in binary).
const maxCount = 1 << 16

// maxTicks bounds the tick counters a snapshot may hold, so that sums of
// them and of elapsed ticks (at most 2^55 for any 64-bit time span) never
// overflow an int64.
const maxTicks = 1 << 60

// counter is one of the 8254's three counters. Its counting element (CE)
// is not stored: the count at time t is a function of n, acc and start.
type counter struct {
	ctrl uint8 // RW, M and BCD bits of the last control word (modeBits)
	gate bool  // GATE input level

	cr       uint16 // count register: the last count written (0 = 65536)
	lsb      uint8  // first byte of an RW_LSB_MSB write
	writeMSB bool   // the next count byte written is the MSB
	readMSB  bool   // the next count byte read is the MSB
	latched  bool   // ol holds a latched count
	ol       uint16 // output latch
	stLatch  bool   // status holds a latched status byte
	status   uint8

	nullCount bool // cr has not been loaded into the CE yet
	haveCount bool // a count was written since the control word
	loaded    bool // the CE holds a count and counts (unless gated off)

	// The CE counts down from n (1..65536). acc ticks were counted before
	// start (VM time, ns); while running, ticks since start add to them.
	// elapsed = acc + ticks since start is never negative in a state the
	// counter reaches itself: acc goes below 0 only when a deferred reload
	// (modes 2, 3) rebases it at reloadAt.
	n        uint32
	acc      int64
	start    int64
	reloadAt int64 // modes 2, 3: elapsed tick at which cr is loaded (nullCount)
}

func (c *counter) mode() uint8 {
	m := (c.ctrl & M_MASK) >> M_SHIFT
	if m >= 6 { // X10 and X11 are modes 2 and 3
		m -= 4
	}
	return m
}

func (c *counter) periodic() bool { m := c.mode(); return m == Mode2 || m == Mode3 }

// gateTriggered reports whether GATE starts counting with a rising edge
// (modes 1 and 5) rather than enabling it while high.
func (c *counter) gateTriggered() bool { m := c.mode(); return m == Mode1 || m == Mode5 }

func (c *counter) running() bool { return c.loaded && (c.gate || c.gateTriggered()) }

func (c *counter) crCount() uint32 {
	if c.cr == 0 {
		return maxCount
	}
	return uint32(c.cr)
}

// ticksIn returns the CLK cycles in d ns: floor(d * CLK / 1e9). The
// product has at most 85 bits, so the 128-bit division cannot overflow.
func ticksIn(d uint64) int64 {
	hi, lo := bits.Mul64(d, CLK)
	q, _ := bits.Div64(hi, lo, nsPerSec)
	return int64(q)
}

// nsFor returns the ns it takes for k CLK cycles to elapse: the smallest
// d with ticksIn(d) >= k, ceil(k * 1e9 / CLK). k < 2^63 keeps the high
// word below CLK.
func nsFor(k uint64) uint64 {
	hi, lo := bits.Mul64(k, nsPerSec)
	q, r := bits.Div64(hi, lo, CLK)
	if r != 0 {
		q++
	}
	return q
}

// ticksSince returns the CLK cycles from start to now (0 if now <= start).
func ticksSince(start, now int64) int64 {
	if now <= start {
		return 0
	}
	return ticksIn(uint64(now) - uint64(start))
}

// elapsed returns the ticks counted by the CE since it was loaded.
func (c *counter) elapsed(now int64) int64 {
	e := c.acc
	if c.running() {
		e += ticksSince(c.start, now)
	}
	return max(e, 0)
}

// deferredDue reports whether a count written in mode 2 or 3 while
// counting is due to be loaded at now.
func (c *counter) deferredDue(now int64) bool {
	return c.nullCount && c.loaded && c.periodic() && c.running() && c.elapsed(now) >= c.reloadAt
}

// phase returns the count in effect and the ticks counted with it at now,
// and the elapsed tick at which that count was loaded, without changing
// the counter (a deferred reload that is due is applied in the result).
func (c *counter) phase(now int64) (n, e, off int64) {
	if c.deferredDue(now) {
		return int64(c.crCount()), c.elapsed(now) - c.reloadAt, c.reloadAt
	}
	return int64(c.n), c.elapsed(now), 0
}

// normalize applies a deferred reload that is due.
func (c *counter) normalize(now int64) {
	if c.deferredDue(now) {
		c.acc -= c.reloadAt
		c.n = c.crCount()
		c.nullCount = false
	}
}

// count returns the CE's value at now.
func (c *counter) count(now int64) uint16 {
	n, e, _ := c.phase(now)
	switch c.mode() {
	case Mode2:
		// n, n-1, ..., 1, then n again (8254 datasheet, Mode 2).
		return uint16(n - e%n)
	case Mode3:
		// Decrements by 2, twice per period; for an odd count the
		// first cycle of the high half subtracts 1 and the first of
		// the low half 3 (8254 datasheet, Mode 3).
		p, h := e%n, (n+1)/2
		if p < h {
			if p == 0 || n%2 == 0 {
				return uint16(n - 2*p)
			}
			return uint16(n + 1 - 2*p)
		}
		q := p - h
		if q == 0 || n%2 == 0 {
			return uint16(n - 2*q)
		}
		return uint16(n - 1 - 2*q)
	default:
		// Modes 0, 1, 4, 5 count on past zero, wrapping.
		return uint16(n - e)
	}
}

// out returns the level of the OUT pin at now.
func (c *counter) out(now int64) bool {
	n, e, _ := c.phase(now)
	switch c.mode() {
	case Mode0: // low from the control word until terminal count
		return c.loaded && e >= n
	case Mode1: // low from the trigger until terminal count
		return !c.loaded || e >= n
	case Mode2: // low for the one cycle the count is 1
		return !c.running() || n == 1 || e%n != n-1
	case Mode3: // high for the first (n+1)/2 cycles of each period
		return !c.running() || e%n < (n+1)/2
	default: // modes 4, 5: low for the one cycle the count is 0
		return !c.loaded || e != n
	}
}

// nextEdge returns the VM time of OUT's next rising edge after now (the
// moment counter 0 interrupts), or false if none is coming.
func (c *counter) nextEdge(now int64) (int64, bool) {
	if !c.running() {
		return 0, false
	}
	n, e, off := c.phase(now)
	var t int64 // elapsed tick of the edge
	if c.periodic() {
		t = off + (e/n+1)*n
		if off == 0 && c.nullCount && c.reloadAt > e {
			t = min(t, c.reloadAt)
		}
	} else {
		edge := n // modes 0, 1: OUT rises at terminal count
		if m := c.mode(); m == Mode4 || m == Mode5 {
			edge = n + 1 // after the one cycle low at terminal count
		}
		if e >= edge {
			return 0, false
		}
		t = edge
	}
	d := nsFor(uint64(t - c.acc)) // t > elapsed >= acc
	if d >= math.MaxInt64 || c.start > math.MaxInt64-int64(d) {
		return 0, false
	}
	// The edge is after now by construction; the floor makes sure a
	// timer can never be re-armed in the past and fire in a loop.
	return max(c.start+int64(d), now+1), true
}

// load moves cr into the CE and starts counting at now.
func (c *counter) load(now int64) {
	c.n = c.crCount()
	c.acc, c.start = 0, now
	c.loaded, c.nullCount = true, false
}

// freeze stops the CE at its current count (mode 0: the first byte of a
// two-byte count was written); it waits for the rest of the count.
func (c *counter) freeze(now int64) {
	c.acc = c.elapsed(now)
	c.loaded = false
}

// control handles a control word for this counter (not a latch command):
// the CE stops at its current count, which reads back unchanged in the
// new mode until a count is written.
func (c *counter) control(v uint8, now int64) {
	c.n = uint32(c.count(now))
	if c.n == 0 {
		c.n = maxCount
	}
	c.acc, c.loaded = 0, false
	c.ctrl = v & modeBits
	c.writeMSB, c.readMSB = false, false
	c.latched, c.stLatch = false, false
	c.nullCount, c.haveCount = true, false
}

// latchCount handles a counter latch command or the count part of a
// read-back command: a second latch before the count is read is ignored.
func (c *counter) latchCount(now int64) {
	if !c.latched {
		c.ol, c.latched = c.count(now), true
	}
}

func (c *counter) latchStatus(now int64) {
	if c.stLatch {
		return
	}
	s := c.ctrl
	if c.out(now) {
		s |= STATUS_OUTPUT
	}
	if c.nullCount {
		s |= STATUS_NULL_COUNT
	}
	c.status, c.stLatch = s, true
}

// write handles a count byte written to the counter's port.
func (c *counter) write(v uint8, now int64) {
	switch c.ctrl & RW_MASK {
	case RW_LSB:
		c.setCount(uint16(v), now)
	case RW_MSB:
		c.setCount(uint16(v)<<8, now)
	default:
		if !c.writeMSB {
			c.lsb, c.writeMSB = v, true
			// Mode 0: writing the first byte stops counting and
			// sets OUT low (8254 datasheet, Mode 0).
			if c.mode() == Mode0 && c.loaded {
				c.freeze(now)
			}
			return
		}
		c.writeMSB = false
		c.setCount(uint16(c.lsb)|uint16(v)<<8, now)
	}
}

func (c *counter) setCount(cr uint16, now int64) {
	c.cr, c.nullCount, c.haveCount = cr, true, true
	switch c.mode() {
	case Mode0, Mode4:
		c.load(now)
	case Mode2, Mode3:
		switch {
		case !c.loaded:
			c.load(now)
		case c.running():
			// Loaded at the end of the current period.
			n, e := int64(c.n), c.elapsed(now)
			c.reloadAt = (e/n + 1) * n
		}
		// Loaded but gated off: the rising GATE loads it.
	}
	// Modes 1, 5: loaded by the next trigger.
}

// setGate changes the GATE input (8254 datasheet, Table 7 "Gate Pin
// Operations Summary").
func (c *counter) setGate(high bool, now int64) {
	if high == c.gate {
		return
	}
	switch {
	case !high:
		if !c.gateTriggered() {
			// Modes 0, 2, 3, 4: low GATE suspends counting (and
			// forces OUT high in modes 2, 3).
			c.acc = c.elapsed(now)
		}
		c.gate = false
	case c.mode() == Mode0 || c.mode() == Mode4:
		c.gate, c.start = true, now // resume
	default:
		// Modes 1, 2, 3, 5: a rising GATE (re)loads the count.
		c.gate = true
		if c.haveCount {
			c.load(now)
		} else {
			c.start = now
		}
	}
}

// read returns the next byte read from the counter's port.
func (c *counter) read(now int64) uint8 {
	if c.stLatch {
		c.stLatch = false
		return c.status
	}
	v := c.ol
	if !c.latched {
		v = c.count(now)
	}
	lo, hi := uint8(v), uint8(v>>8)
	switch c.ctrl & RW_MASK {
	case RW_LSB:
		c.latched = false
		return lo
	case RW_MSB:
		c.latched = false
		return hi
	default:
		if !c.readMSB {
			c.readMSB = true
			return lo
		}
		c.readMSB, c.latched = false, false
		return hi
	}
}

// PIT is an 8254 with the PC's NMI_SC register.
type PIT struct {
	mu    sync.Mutex
	q     *event.Queue
	irq   devices.IRQLine
	timer *event.Timer

	ch    [3]counter
	nmisc uint8 // NMI_SC read/write bits (nmiscWritable)
}

// New returns a PIT reading VM time from q, whose counter 0 pulses irq0
// at each rising edge of its OUT (nil: wired to nothing). All counters
// start in mode 0 with binary LSB-then-MSB access and no count, OUT low;
// counter 2's GATE is low.
func New(q *event.Queue, irq0 devices.IRQLine) *PIT {
	if irq0 == nil {
		irq0 = devices.NoIRQ
	}
	p := &PIT{q: q, irq: irq0}
	p.timer = q.NewTimer(p.fire)
	for i := range p.ch {
		c := &p.ch[i]
		c.ctrl = RW_LSB_MSB
		c.n = maxCount
		c.nullCount = true
	}
	p.ch[0].gate, p.ch[1].gate = true, true
	return p
}

// Register puts the PIT on bus: ports COUNTER0..CONTROL_WORD and NMI_SC.
func (p *PIT) Register(bus *devices.Bus) error {
	if err := bus.Register(COUNTER0, Ports, p); err != nil {
		return err
	}
	return bus.Register(NMI_SC, 1, p)
}

// In implements devices.PortDevice. A multi-byte access is split into
// byte accesses to consecutive ports; ports the PIT does not decode, and
// the write-only control word register, read as 0xFF.
func (p *PIT) In(port uint16, size uint8) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.q.Now()
	return devices.ByteWiseIn(port, size, func(port uint16) uint8 { return p.in8(port, now) })
}

// Out implements devices.PortDevice.
func (p *PIT) Out(port uint16, size uint8, v uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.q.Now()
	devices.ByteWiseOut(port, size, v, func(port uint16, b uint8) { p.out8(port, b, now) })
	p.arm(now)
}

func (p *PIT) in8(port uint16, now int64) uint8 {
	switch port {
	case COUNTER0, COUNTER1, COUNTER2:
		return p.ch[port-COUNTER0].read(now)
	case NMI_SC:
		v := p.nmisc
		if t := ticksSince(0, now); (t/refreshTicks)%2 != 0 {
			v |= REF_TOGGLE
		}
		if p.ch[2].out(now) {
			v |= TMR2_OUT_STS
		}
		return v
	}
	return 0xFF
}

func (p *PIT) out8(port uint16, v uint8, now int64) {
	for i := range p.ch {
		p.ch[i].normalize(now)
	}
	switch port {
	case COUNTER0, COUNTER1, COUNTER2:
		p.ch[port-COUNTER0].write(v, now)
	case CONTROL_WORD:
		p.controlWord(v, now)
	case NMI_SC:
		p.nmisc = v & nmiscWritable
		p.ch[2].setGate(v&TIM_CNT2_EN != 0, now)
	}
}

func (p *PIT) controlWord(v uint8, now int64) {
	if v&SC_MASK == SC_READ_BACK {
		for i, sel := range [3]uint8{RB_CNT0, RB_CNT1, RB_CNT2} {
			if v&sel == 0 {
				continue
			}
			// Status first: when both are latched, the status byte
			// is read before the count.
			if v&RB_STATUS == 0 {
				p.ch[i].latchStatus(now)
			}
			if v&RB_COUNT == 0 {
				p.ch[i].latchCount(now)
			}
		}
		return
	}
	c := &p.ch[v>>SC_SHIFT]
	if v&RW_MASK == RW_LATCH {
		c.latchCount(now)
		return
	}
	c.control(v, now)
}

// arm sets the IRQ timer to counter 0's next rising OUT edge. An edge
// already due but not yet delivered (the queue has not run since) stays:
// it happened, whatever the guest programmed since; fire re-arms.
func (p *PIT) arm(now int64) {
	if d, ok := p.timer.Armed(); ok && d <= now {
		return
	}
	if t, ok := p.ch[0].nextEdge(now); ok {
		p.timer.Arm(t)
	} else {
		p.timer.Stop()
	}
}

// fire runs from the event queue at a rising edge of counter 0's OUT.
func (p *PIT) fire(now int64) {
	p.mu.Lock()
	p.arm(now)
	p.mu.Unlock()
	p.irq.Set(true)
	p.irq.Set(false)
}

// StateVersion is the version of the PIT's snapshot encoding.
const StateVersion = 1

// Snapshot layout, version 1, little endian: one byte of NMI_SC bits 3:0,
// then for each counter 0, 1, 2 counterStateLen bytes:
//
//	offset size field
//	0      1    control word bits 5:0 (RW != 0)
//	1      1    flags: bit 0 next write is MSB, 1 next read is MSB,
//	            2 count latched, 3 status latched, 4 null count,
//	            5 count written since the control word, 6 CE loaded
//	2      1    first byte of a two-byte count write
//	3      1    latched status byte
//	4      2    output latch
//	6      2    count register
//	8      4    count in the CE, 1-65536
//	12     8    ticks counted before the start time (signed)
//	20     8    start of counting, VM time in ns (absolute)
//	28     8    deferred reload tick (modes 2, 3)
//
// and last, 8 bytes: the VM time (ns) of counter 0's next IRQ edge, or
// math.MaxInt64 (event.Never) for none. It may lie before the time of the
// snapshot: an edge due but not yet delivered.
//
// GATE is not stored: counters 0 and 1 have it high, counter 2 takes it
// from NMI_SC bit 0.
const (
	counterStateLen = 36
	deadlineOff     = 1 + 3*counterStateLen
	stateLen        = deadlineOff + 8
)

const (
	flagWriteMSB = 1 << iota
	flagReadMSB
	flagLatched
	flagStatusLatched
	flagNullCount
	flagHaveCount
	flagLoaded
	flagsMask = 1<<iota - 1
)

// MarshalState returns the PIT's state, version StateVersion. Times are
// absolute VM times: restored on a queue whose clock continues the saved
// VM time, the counters continue counting.
func (p *PIT) MarshalState() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := make([]byte, stateLen)
	b[0] = p.nmisc
	for i := range p.ch {
		c := &p.ch[i]
		s := b[1+i*counterStateLen:]
		s[0] = c.ctrl
		for _, f := range []struct {
			set  bool
			flag uint8
		}{
			{c.writeMSB, flagWriteMSB}, {c.readMSB, flagReadMSB}, {c.latched, flagLatched},
			{c.stLatch, flagStatusLatched}, {c.nullCount, flagNullCount},
			{c.haveCount, flagHaveCount}, {c.loaded, flagLoaded},
		} {
			if f.set {
				s[1] |= f.flag
			}
		}
		s[2], s[3] = c.lsb, c.status
		binary.LittleEndian.PutUint16(s[4:], c.ol)
		binary.LittleEndian.PutUint16(s[6:], c.cr)
		binary.LittleEndian.PutUint32(s[8:], c.n)
		binary.LittleEndian.PutUint64(s[12:], uint64(c.acc))
		binary.LittleEndian.PutUint64(s[20:], uint64(c.start))
		binary.LittleEndian.PutUint64(s[28:], uint64(c.reloadAt))
	}
	d, _ := p.timer.Armed() // event.Never when not armed
	binary.LittleEndian.PutUint64(b[deadlineOff:], uint64(d))
	return b
}

// UnmarshalState replaces the PIT's state with one produced by
// MarshalState and re-arms counter 0's timer at the saved deadline. It
// does not drive the IRQ line. It rejects an unknown version, a wrong length and values the PIT
// can never hold; on error the state is unchanged.
func (p *PIT) UnmarshalState(version uint16, b []byte) error {
	if version != StateVersion {
		return fmt.Errorf("%w: PIT state version %d, want %d", devices.ErrStateVersion, version, StateVersion)
	}
	if len(b) != stateLen {
		return fmt.Errorf("%w: PIT state is %d bytes, want %d", devices.ErrStateLength, len(b), stateLen)
	}
	bad := func(i int, field string, v any) error {
		return fmt.Errorf("%w: PIT counter %d %s = %v", devices.ErrStateInvalid, i, field, v)
	}
	if b[0]&^nmiscWritable != 0 {
		return fmt.Errorf("%w: PIT NMI_SC = %#02x", devices.ErrStateInvalid, b[0])
	}
	var ch [3]counter
	for i := range ch {
		c := &ch[i]
		s := b[1+i*counterStateLen:]
		flags := s[1]
		c.ctrl = s[0]
		c.writeMSB = flags&flagWriteMSB != 0
		c.readMSB = flags&flagReadMSB != 0
		c.latched = flags&flagLatched != 0
		c.stLatch = flags&flagStatusLatched != 0
		c.nullCount = flags&flagNullCount != 0
		c.haveCount = flags&flagHaveCount != 0
		c.loaded = flags&flagLoaded != 0
		c.lsb, c.status = s[2], s[3]
		c.ol = binary.LittleEndian.Uint16(s[4:])
		c.cr = binary.LittleEndian.Uint16(s[6:])
		c.n = binary.LittleEndian.Uint32(s[8:])
		c.acc = int64(binary.LittleEndian.Uint64(s[12:]))
		c.start = int64(binary.LittleEndian.Uint64(s[20:]))
		c.reloadAt = int64(binary.LittleEndian.Uint64(s[28:]))
		switch {
		case c.ctrl&^modeBits != 0 || c.ctrl&RW_MASK == RW_LATCH:
			return bad(i, "control word", c.ctrl)
		case flags&^flagsMask != 0:
			return bad(i, "flags", flags)
		case (c.writeMSB || c.readMSB) && c.ctrl&RW_MASK != RW_LSB_MSB:
			return bad(i, "byte toggles", flags)
		case c.loaded && !c.haveCount:
			return bad(i, "flags", flags)
		case c.stLatch && c.status&modeBits != c.ctrl:
			return bad(i, "latched status", c.status)
		case c.n < 1 || c.n > maxCount:
			return bad(i, "CE count", c.n)
		case c.acc < -maxTicks || c.acc > maxTicks:
			return bad(i, "ticks", c.acc)
		case c.reloadAt < 0 || c.reloadAt > maxTicks:
			return bad(i, "reload tick", c.reloadAt)
		}
	}
	ch[0].gate, ch[1].gate, ch[2].gate = true, true, b[0]&TIM_CNT2_EN != 0

	p.mu.Lock()
	defer p.mu.Unlock()
	p.nmisc, p.ch = b[0], ch
	if d := int64(binary.LittleEndian.Uint64(b[deadlineOff:])); d != event.Never {
		p.timer.Arm(d)
	} else {
		p.timer.Stop()
	}
	return nil
}
