// Package rtc models the PC's real-time clock and CMOS RAM, a Motorola
// MC146818A (MC146818A datasheet), at ports 0x70 (address, with the PC's
// NMI mask in bit 7) and 0x71 (data), with the IBM PC/AT conventions for
// the CMOS RAM: the century at 0x32 and the memory sizes the BIOS stores.
//
// The clock is the host's wall clock (Unix ns) plus an offset the guest
// sets by writing the time registers; it is read lazily, never ticked.
// Register B selects BCD or binary (DM) and 12 or 24 hour (24/12) data;
// SET stops updates so the guest can write a consistent time, which
// starts running when SET is cleared. Register A's UIP reads 1 during the
// 244 us before each second boundary (the chip's update cycle, seen from
// software: if UIP reads 0, the time registers will not change for 244
// us); at the boundary the registers show the new second at once.
//
// Interrupts (register C, IRQ 8 through an IRQLine held at the level of
// IRQF): the periodic interrupt at the rate of register A's RS bits,
// counted on VM time from VM time 0; the update-ended interrupt at each
// second; the alarm interrupt when seconds, minutes and hours match the
// alarm registers (0xC0-0xFF: don't care). The flags are set whether or
// not enabled; an event.Timer runs only for enabled interrupts whose flag
// is clear.
//
// Departures from the datasheet:
//   - Divider (DV) values other than reset (11x) all run at 32.768 kHz;
//     holding the divider in reset does not stop the clock, but releasing
//     it starts the next second 500 ms later, as the chip does.
//   - The day of the week is computed from the date; a written day of the
//     week reads back only while SET is 1.
//   - Dates the guest writes outside the calendar are normalized (month
//     13 is January of the next year).
//   - The square-wave output (SQWE) and daylight saving (DSE) are stored
//     only.
//   - The clock keeps following the host's wall clock across a snapshot
//     and restore, like a battery-backed clock; the guest's offset is kept.
//
// Register the RTC on the port bus with Register (ports 0x70-0x71). An
// RTC is safe for concurrent use; the methods that program its timer (In,
// Out, UnmarshalState) and the timer itself run on the goroutine that
// owns the event.Queue, as event requires.
package rtc

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"time"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

// Ports (PC/AT).
const (
	ADDRESS_PORT = 0x70 // register address (write only); bit 7 masks NMI
	DATA_PORT    = 0x71 // data of the addressed register

	NMI_DISABLE = 0x80 // ADDRESS_PORT bit 7
	addressMask = 0x7F

	// Ports is the number of ports at ADDRESS_PORT.
	Ports = 2
)

// Register addresses (MC146818A datasheet, "Address Map").
const (
	SECONDS       = 0x00
	SECONDS_ALARM = 0x01
	MINUTES       = 0x02
	MINUTES_ALARM = 0x03
	HOURS         = 0x04
	HOURS_ALARM   = 0x05
	DAY_OF_WEEK   = 0x06 // 1-7, Sunday = 1
	DATE_OF_MONTH = 0x07
	MONTH         = 0x08
	YEAR          = 0x09 // 0-99
	REG_A         = 0x0A
	REG_B         = 0x0B
	REG_C         = 0x0C
	REG_D         = 0x0D
	CENTURY       = 0x32 // PC/AT CMOS: century, in the data mode of register B

	// Size is the number of registers and RAM bytes.
	Size = 128
)

// Register A bits.
const (
	A_UIP     = 0x80 // update in progress (read only)
	A_DV_MASK = 0x70 // divider select
	DV_32768  = 0x20 // 010: 32.768 kHz time base (the PC's)
	DV_RESET  = 0x60 // 11x: divider chain held in reset
	A_RS_MASK = 0x0F // rate select of the periodic interrupt
)

// Register B bits.
const (
	B_SET   = 0x80 // stop updates; time registers are written
	B_PIE   = 0x40 // periodic interrupt enable
	B_AIE   = 0x20 // alarm interrupt enable
	B_UIE   = 0x10 // update-ended interrupt enable
	B_SQWE  = 0x08 // square-wave enable (stored only)
	B_DM    = 0x04 // data mode: 1 binary, 0 BCD
	B_24_12 = 0x02 // 1: 24-hour mode, 0: 12-hour mode
	B_DSE   = 0x01 // daylight saving enable (stored only)
)

// Register C bits (read only, cleared by reading). Each flag has the bit
// position of its enable in register B.
const (
	C_IRQF = 0x80 // interrupt request: (PF and PIE) or (AF and AIE) or (UF and UIE)
	C_PF   = 0x40 // periodic interrupt flag
	C_AF   = 0x20 // alarm flag
	C_UF   = 0x10 // update-ended flag
	cFlags = C_PF | C_AF | C_UF
)

// Register D and time register bits.
const (
	D_VRT           = 0x80 // valid RAM and time (always 1)
	HOUR_PM         = 0x80 // hours register bit 7 in 12-hour mode
	ALARM_DONT_CARE = 0xC0 // an alarm register >= 0xC0 matches any value
)

// PC/AT CMOS RAM bytes holding the memory size, low byte first.
const (
	BASE_MEM_LO   = 0x15 // KiB of base memory (at most 640)
	BASE_MEM_HI   = 0x16
	EXT_MEM_LO    = 0x17 // KiB of memory above 1 MiB (at most 0xFFFF)
	EXT_MEM_HI    = 0x18
	EXT_MEM2_LO   = 0x30 // the same, as found by POST
	EXT_MEM2_HI   = 0x31
	MEM_16M_LO    = 0x34 // 64 KiB blocks between 16 MiB and 4 GiB
	MEM_16M_HI    = 0x35
	MEM_4G_LO     = 0x5B // 64 KiB blocks above 4 GiB (3 bytes)
	MEM_4G_MID    = 0x5C
	MEM_4G_HI     = 0x5D
	baseMemKiB    = 640
	kiB           = 1 << 10
	block64K      = 64 << 10
	mem1M, mem16M = 1 << 20, 16 << 20
)

const (
	nsPerSec = 1_000_000_000
	// uipNs is how long UIP reads 1 before an update (MC146818A
	// datasheet: tBUC, 244 us with a 32.768 kHz time base).
	uipNs = 244_000
	// releaseNs is the delay from releasing the divider chain from
	// reset to the first update (MC146818A datasheet, register A).
	releaseNs = nsPerSec / 2
	// timeBaseLog2 is log2 of the 32.768 kHz time base.
	timeBaseLog2  = 15
	secondsPerDay = 86400
	// maxOffset bounds the guest's clock offset (s) in a snapshot; the
	// time registers reach years 0-16665 at most.
	maxOffset = 1 << 40
)

// timeRegs are the clock registers, in the order of clock's fields.
var timeRegs = [...]uint8{SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DATE_OF_MONTH, MONTH, YEAR, CENTURY}

type clock [len(timeRegs)]uint8

func timeRegIndex(reg uint8) int {
	for i, r := range timeRegs {
		if r == reg {
			return i
		}
	}
	return -1
}

// RTC is an MC146818A with its 128 bytes of CMOS RAM.
type RTC struct {
	mu    sync.Mutex
	q     *event.Queue
	wall  func() int64
	irq   devices.IRQLine
	timer *event.Timer

	index uint8       // last byte written to ADDRESS_PORT
	ram   [Size]uint8 // registers A-C (C: its flags), alarms, RAM; the clock registers while SET

	// The guest's time is the wall clock plus offSec s and offNsec ns
	// (0 <= offNsec < 1e9).
	offSec, offNsec int64
	lastSec         int64 // guest second up to which updates were accounted
	lastPeriod      int64 // VM time (ns) up to which periodic flags were accounted
	line            bool  // level driven on irq (IRQF)
}

// New returns an RTC whose clock follows wall (Unix time in ns, must not
// be nil) and whose periodic interrupt follows q's VM time, raising irq
// (nil: wired to nothing). The CMOS RAM holds the memory sizes for
// ramBelow4G bytes of RAM from address 0 and ramAbove4G bytes above 4
// GiB. Registers A and B start as a PC BIOS leaves them: 32.768 kHz time
// base with a 1024 Hz periodic rate, BCD, 24-hour mode, no interrupts.
func New(q *event.Queue, wall func() int64, irq devices.IRQLine, ramBelow4G, ramAbove4G uint64) *RTC {
	if irq == nil {
		irq = devices.NoIRQ
	}
	r := &RTC{q: q, wall: wall, irq: irq}
	r.timer = q.NewTimer(r.fire)
	r.ram[REG_A] = DV_32768 | 0x06
	r.ram[REG_B] = B_24_12
	r.lastSec, _ = r.guestNow()
	r.lastPeriod = q.Now()
	r.setMemory(ramBelow4G, ramAbove4G)
	return r
}

func (r *RTC) setMemory(below4G, above4G uint64) {
	put16 := func(lo uint8, v uint64) {
		v = min(v, math.MaxUint16)
		r.ram[lo], r.ram[lo+1] = uint8(v), uint8(v>>8)
	}
	put16(BASE_MEM_LO, min(below4G/kiB, baseMemKiB))
	ext := uint64(0)
	if below4G > mem1M {
		ext = (below4G - mem1M) / kiB
	}
	put16(EXT_MEM_LO, ext)
	put16(EXT_MEM2_LO, ext)
	above16 := uint64(0)
	if below4G > mem16M {
		above16 = (below4G - mem16M) / block64K
	}
	put16(MEM_16M_LO, above16)
	high := min(above4G/block64K, 1<<24-1)
	r.ram[MEM_4G_LO], r.ram[MEM_4G_MID], r.ram[MEM_4G_HI] = uint8(high), uint8(high>>8), uint8(high>>16)
}

// Register puts the RTC on bus at ADDRESS_PORT and DATA_PORT.
func (r *RTC) Register(bus *devices.Bus) error {
	return bus.Register(ADDRESS_PORT, Ports, r)
}

// NMIDisabled reports whether the guest has masked NMIs with bit 7 of
// ADDRESS_PORT.
func (r *RTC) NMIDisabled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.index&NMI_DISABLE != 0
}

// In implements devices.PortDevice. A multi-byte access is split into
// byte accesses to consecutive ports; ADDRESS_PORT (write only) and ports
// the RTC does not decode read as 0xFF.
func (r *RTC) In(port uint16, size uint8) uint32 {
	r.mu.Lock()
	vm := r.q.Now()
	r.advance(vm)
	v := devices.ByteWiseIn(port, size, func(port uint16) uint8 {
		if port != DATA_PORT {
			return 0xFF
		}
		return r.read(r.index & addressMask)
	})
	r.finish(vm)
	return v
}

// Out implements devices.PortDevice.
func (r *RTC) Out(port uint16, size uint8, v uint32) {
	r.mu.Lock()
	vm := r.q.Now()
	r.advance(vm)
	devices.ByteWiseOut(port, size, v, func(port uint16, b uint8) {
		switch port {
		case ADDRESS_PORT:
			r.index = b
		case DATA_PORT:
			r.write(r.index&addressMask, b)
		}
	})
	r.finish(vm)
}

// finish re-arms the timer, unlocks, and drives the IRQ line if IRQF
// changed (outside the lock: the line's receiver may be called back).
func (r *RTC) finish(vm int64) {
	r.arm(vm)
	level := r.irqf()
	changed := level != r.line
	r.line = level
	r.mu.Unlock()
	if changed {
		r.irq.Set(level)
	}
}

func (r *RTC) fire(vm int64) {
	r.mu.Lock()
	r.advance(vm)
	r.finish(vm)
}

func (r *RTC) irqf() bool { return r.ram[REG_C]&r.ram[REG_B]&cFlags != 0 }

func splitNs(t int64) (sec, nsec int64) {
	sec, nsec = t/nsPerSec, t%nsPerSec
	if nsec < 0 {
		sec, nsec = sec-1, nsec+nsPerSec
	}
	return sec, nsec
}

// guestNow returns the guest's time: Unix seconds and ns into the second.
func (r *RTC) guestNow() (sec, nsec int64) {
	ws, wn := splitNs(r.wall())
	sec, nsec = ws+r.offSec, wn+r.offNsec
	if nsec >= nsPerSec {
		sec, nsec = sec+1, nsec-nsPerSec
	}
	return sec, nsec
}

// setGuestTime makes the guest's time sec s and nsec ns now.
func (r *RTC) setGuestTime(sec, nsec int64) {
	ws, wn := splitNs(r.wall())
	r.offSec, r.offNsec = sec-ws, nsec-wn
	if r.offNsec < 0 {
		r.offSec, r.offNsec = r.offSec-1, r.offNsec+nsPerSec
	}
	r.lastSec = sec
}

func (r *RTC) dividerRunning() bool { return r.ram[REG_A]&DV_RESET != DV_RESET }

func (r *RTC) updating() bool { return r.ram[REG_B]&B_SET == 0 && r.dividerRunning() }

// rateLog2 returns k with the periodic interrupt's period 2^k / 32768 s
// (MC146818A datasheet, Table "Periodic Interrupt Rate"), or 0 for none.
func (r *RTC) rateLog2() uint {
	rs := uint(r.ram[REG_A] & A_RS_MASK)
	switch {
	case rs == 0 || !r.dividerRunning():
		return 0
	case rs <= 2: // 256 and 128 Hz, as RS 8 and 9
		return rs + 6
	default:
		return rs - 1
	}
}

// periodIndex returns the number of whole periods of 2^k / 32768 s in VM
// time t: floor(t * 2^(15-k) / 1e9).
func periodIndex(t int64, k uint) uint64 {
	hi, lo := bits.Mul64(uint64(max(t, 0)), 1<<(timeBaseLog2-k))
	q, _ := bits.Div64(hi, lo, nsPerSec)
	return q
}

// periodStart returns the VM time at which period i begins:
// ceil(i * 1e9 / 2^(15-k)), or event.Never if out of range.
func periodStart(i uint64, k uint) int64 {
	s := timeBaseLog2 - k
	hi, lo := bits.Mul64(i, nsPerSec)
	lo, carry := bits.Add64(lo, 1<<s-1, 0)
	hi += carry
	if hi>>s != 0 {
		return event.Never
	}
	v := lo>>s | hi<<(64-s)
	if v >= event.Never {
		return event.Never
	}
	return int64(v)
}

// advance accounts the updates and periodic interrupts up to now.
func (r *RTC) advance(vm int64) {
	sec, _ := r.guestNow()
	if r.updating() && sec > r.lastSec {
		r.ram[REG_C] |= C_UF
		if r.alarmBetween(r.lastSec, sec) {
			r.ram[REG_C] |= C_AF
		}
	}
	r.lastSec = sec
	if k := r.rateLog2(); k != 0 && periodIndex(vm, k) != periodIndex(r.lastPeriod, k) {
		r.ram[REG_C] |= C_PF
	}
	r.lastPeriod = vm
}

// alarmBetween reports whether an update in (from, to] matched the alarm.
// The alarm repeats at most daily, so the last day of seconds suffices.
func (r *RTC) alarmBetween(from, to int64) bool {
	for s := max(from+1, to-secondsPerDay+1); s <= to; s++ {
		if r.alarmMatches(s) {
			return true
		}
	}
	return false
}

func (r *RTC) alarmMatches(sec int64) bool {
	sod := sec % secondsPerDay
	if sod < 0 {
		sod += secondsPerDay
	}
	b := r.ram[REG_B]
	for _, m := range [...]struct {
		alarm uint8
		now   uint8
	}{
		{r.ram[SECONDS_ALARM], encode(int(sod%60), b)},
		{r.ram[MINUTES_ALARM], encode(int(sod/60%60), b)},
		{r.ram[HOURS_ALARM], encodeHour(int(sod/3600), b)},
	} {
		if m.alarm&ALARM_DONT_CARE != ALARM_DONT_CARE && m.alarm != m.now {
			return false
		}
	}
	return true
}

// arm sets the timer to the next enabled interrupt whose flag is clear,
// or to now if one is already due (it fires at the next run of the
// queue). It does not change the RTC.
func (r *RTC) arm(vm int64) {
	next := int64(event.Never)
	c, b := r.ram[REG_C], r.ram[REG_B]
	if k := r.rateLog2(); k != 0 && b&B_PIE != 0 && c&C_PF == 0 {
		i := periodIndex(r.lastPeriod, k)
		if periodIndex(vm, k) != i {
			next = vm
		} else {
			next = max(periodStart(i+1, k), vm+1)
		}
	}
	if r.updating() && (b&B_UIE != 0 && c&C_UF == 0 || b&B_AIE != 0 && c&C_AF == 0) {
		sec, nsec := r.guestNow()
		if sec > r.lastSec {
			next = vm
		} else {
			next = min(next, vm+nsPerSec-nsec)
		}
	}
	if next == event.Never {
		r.timer.Stop()
	} else {
		r.timer.Arm(next)
	}
}

// encode returns v in the data mode of register B b.
func encode(v int, b uint8) uint8 {
	if b&B_DM != 0 {
		return uint8(v)
	}
	return uint8(v/10<<4 | v%10)
}

func decode(v uint8, b uint8) int {
	if b&B_DM != 0 {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0x0F)
}

func encodeHour(h int, b uint8) uint8 {
	if b&B_24_12 != 0 {
		return encode(h, b)
	}
	v := encode((h+11)%12+1, b) // 12, 1, ..., 11
	if h >= 12 {
		v |= HOUR_PM
	}
	return v
}

func decodeHour(v uint8, b uint8) int {
	if b&B_24_12 != 0 {
		return decode(v, b)
	}
	h := decode(v&^HOUR_PM, b) % 12
	if v&HOUR_PM != 0 {
		h += 12
	}
	return h
}

// clockAt returns the clock registers for Unix time sec.
func clockAt(sec int64, b uint8) clock {
	t := time.Unix(sec, 0).UTC()
	y := (t.Year()%10000 + 10000) % 10000
	return clock{
		encode(t.Second(), b), encode(t.Minute(), b), encodeHour(t.Hour(), b),
		encode(int(t.Weekday())+1, b), encode(t.Day(), b), encode(int(t.Month()), b),
		encode(y%100, b), encode(y/100, b),
	}
}

// clockTime returns the Unix time the clock registers hold (the day of
// the week is ignored, out-of-range values are normalized).
func clockTime(c clock, b uint8) int64 {
	year := decode(c[7], b)*100 + decode(c[6], b)
	return time.Date(year, time.Month(decode(c[5], b)), decode(c[4], b),
		decodeHour(c[2], b), decode(c[1], b), decode(c[0], b), 0, time.UTC).Unix()
}

// frozen returns the clock registers held in RAM while SET is 1.
func (r *RTC) frozen() clock {
	var c clock
	for i, reg := range timeRegs {
		c[i] = r.ram[reg]
	}
	return c
}

func (r *RTC) read(reg uint8) uint8 {
	if i := timeRegIndex(reg); i >= 0 {
		if r.ram[REG_B]&B_SET != 0 {
			return r.ram[reg]
		}
		sec, _ := r.guestNow()
		return clockAt(sec, r.ram[REG_B])[i]
	}
	switch reg {
	case REG_A:
		v := r.ram[REG_A]
		if _, nsec := r.guestNow(); r.updating() && nsec >= nsPerSec-uipNs {
			v |= A_UIP
		}
		return v
	case REG_C:
		v := r.ram[REG_C]
		if r.irqf() {
			v |= C_IRQF
		}
		r.ram[REG_C] = 0
		return v
	case REG_D:
		return D_VRT
	}
	return r.ram[reg]
}

func (r *RTC) write(reg, v uint8) {
	b := r.ram[REG_B]
	if i := timeRegIndex(reg); i >= 0 {
		if b&B_SET != 0 {
			r.ram[reg] = v
			return
		}
		// Written while the clock runs: it continues from the new
		// value, in the same phase of the second.
		sec, nsec := r.guestNow()
		c := clockAt(sec, b)
		c[i] = v
		r.setGuestTime(clockTime(c, b), nsec)
		return
	}
	switch reg {
	case REG_A:
		wasReset := !r.dividerRunning()
		r.ram[REG_A] = v &^ A_UIP
		if wasReset && r.dividerRunning() {
			sec, _ := r.guestNow()
			r.setGuestTime(sec, nsPerSec-releaseNs)
		}
	case REG_B:
		if v&B_SET != 0 {
			v &^= B_UIE // setting SET clears UIE
		}
		switch {
		case b&B_SET == 0 && v&B_SET != 0:
			// Freeze the clock registers, in the data mode they
			// were kept in.
			sec, _ := r.guestNow()
			for i, x := range clockAt(sec, b) {
				r.ram[timeRegs[i]] = x
			}
		case b&B_SET != 0 && v&B_SET == 0:
			// Start the clock from the registers as the guest
			// wrote them (in the data mode of the B replaced).
			_, nsec := r.guestNow()
			r.setGuestTime(clockTime(r.frozen(), b), nsec)
		}
		r.ram[REG_B] = v
	case REG_C, REG_D:
		// Read only.
	default:
		r.ram[reg] = v
	}
}

// StateVersion is the version of the RTC's snapshot encoding.
const StateVersion = 1

// Snapshot layout, version 1, little endian:
//
//	offset size field
//	0      1    last byte written to ADDRESS_PORT
//	1      128  registers and RAM: A without UIP, B, C (flags PF, AF, UF
//	            only), D as 0, the clock registers as last held while SET
//	129    8    guest clock offset from the wall clock, s (signed)
//	137    4    guest clock offset, ns (0-999999999)
//	141    8    guest second up to which updates were accounted
//	149    8    VM time (ns) up to which periodic flags were accounted
//	157    1    IRQ line level (1 when IRQF is set)
const stateLen = 158

// MarshalState returns the RTC's state, version StateVersion.
func (r *RTC) MarshalState() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := make([]byte, stateLen)
	b[0] = r.index
	copy(b[1:], r.ram[:])
	binary.LittleEndian.PutUint64(b[129:], uint64(r.offSec))
	binary.LittleEndian.PutUint32(b[137:], uint32(r.offNsec))
	binary.LittleEndian.PutUint64(b[141:], uint64(r.lastSec))
	binary.LittleEndian.PutUint64(b[149:], uint64(r.lastPeriod))
	if r.line {
		b[157] = 1
	}
	return b
}

// UnmarshalState replaces the RTC's state with one produced by
// MarshalState and re-arms its timer; it does not drive the IRQ line. It
// rejects an unknown version, a wrong length and values the RTC can never
// hold; on error the state is unchanged.
func (r *RTC) UnmarshalState(version uint16, b []byte) error {
	if version != StateVersion {
		return fmt.Errorf("%w: RTC state version %d, want %d", devices.ErrStateVersion, version, StateVersion)
	}
	if len(b) != stateLen {
		return fmt.Errorf("%w: RTC state is %d bytes, want %d", devices.ErrStateLength, len(b), stateLen)
	}
	var ram [Size]uint8
	copy(ram[:], b[1:1+Size])
	offSec := int64(binary.LittleEndian.Uint64(b[129:]))
	offNsec := int64(binary.LittleEndian.Uint32(b[137:]))
	line := b[157]
	bad := func(field string, v any) error {
		return fmt.Errorf("%w: RTC %s = %#x", devices.ErrStateInvalid, field, v)
	}
	switch {
	case ram[REG_A]&A_UIP != 0:
		return bad("register A", ram[REG_A])
	case ram[REG_B]&(B_SET|B_UIE) == B_SET|B_UIE:
		return bad("register B", ram[REG_B])
	case ram[REG_C]&^cFlags != 0:
		return bad("register C", ram[REG_C])
	case ram[REG_D] != 0:
		return bad("register D", ram[REG_D])
	case offSec < -maxOffset || offSec > maxOffset:
		return bad("offset", offSec)
	case offNsec >= nsPerSec:
		return bad("offset ns", offNsec)
	case line > 1 || (line == 1) != (ram[REG_C]&ram[REG_B]&cFlags != 0):
		return bad("IRQ line", line)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index, r.ram = b[0], ram
	r.offSec, r.offNsec = offSec, offNsec
	r.lastSec = int64(binary.LittleEndian.Uint64(b[141:]))
	r.lastPeriod = int64(binary.LittleEndian.Uint64(b[149:]))
	r.line = line == 1
	r.arm(r.q.Now())
	return nil
}
