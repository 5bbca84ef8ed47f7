package pit

import (
	"bytes"
	"errors"
	"math/big"
	"testing"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

// rig is a PIT on a fake VM clock, counting counter 0's IRQ edges.
type rig struct {
	t     *testing.T
	now   int64
	q     *event.Queue
	p     *PIT
	edges int
	level bool
	at    []int64 // VM times of the rising edges
}

func newRig(t *testing.T, start int64) *rig {
	r := &rig{t: t, now: start}
	r.q = event.NewQueue(func() int64 { return r.now })
	r.p = New(r.q, devices.IRQFunc(func(l bool) {
		if l && !r.level {
			r.edges++
			r.at = append(r.at, r.now)
		}
		r.level = l
	}))
	return r
}

func (r *rig) out(port uint16, v uint8) { r.p.Out(port, 1, uint32(v)) }
func (r *rig) in(port uint16) uint8     { return uint8(r.p.In(port, 1)) }

// read16 reads a count LSB then MSB, as Linux does.
func (r *rig) read16(port uint16) uint16 {
	lo := r.in(port)
	hi := r.in(port)
	return uint16(lo) | uint16(hi)<<8
}

// runTo advances the clock to t, firing every timer on the way at its
// own deadline.
func (r *rig) runTo(t int64) {
	for i := 0; ; i++ {
		next := r.q.Next()
		if next > t {
			break
		}
		if i > 1_000_000 || next < r.now {
			r.t.Fatalf("timer stuck at %d (now %d)", next, r.now)
		}
		r.now = next
		r.q.Run()
	}
	r.now = t
	r.q.Run()
}

// wantTicks is floor(d * CLK / 1e9), computed independently.
func wantTicks(d int64) int64 {
	x := new(big.Int).Mul(big.NewInt(d), big.NewInt(CLK))
	return x.Div(x, big.NewInt(1e9)).Int64()
}

// tickTime is the first ns offset at which k ticks have elapsed.
func tickTime(k int64) int64 {
	x := new(big.Int).Mul(big.NewInt(k), big.NewInt(1e9))
	x.Add(x, big.NewInt(CLK-1))
	return x.Div(x, big.NewInt(CLK)).Int64()
}

// TestFastCalibration follows Linux's quick PIT calibration: counter 2
// gated through NMI_SC, mode 0, count 0xFFFF, unlatched LSB/MSB reads.
func TestFastCalibration(t *testing.T) {
	const t0 = 987_654_321_123
	r := newRig(t, t0-5000)
	r.out(NMI_SC, (r.in(NMI_SC)&^SPKR_DAT_EN)|TIM_CNT2_EN)
	r.now = t0
	r.out(CONTROL_WORD, 0xB0) // counter 2, LSB then MSB, mode 0, binary
	r.out(COUNTER2, 0xFF)
	r.out(COUNTER2, 0xFF)
	if r.in(NMI_SC)&TMR2_OUT_STS != 0 {
		t.Fatal("OUT2 high right after the count was written")
	}
	for _, d := range []int64{0, 1, 837, 838, 839, 1676, 1677, 12345, 999_999, 1_000_000,
		7_777_777, 30_000_001, 54_924_000, 54_924_700, 54_925_000} {
		r.now = t0 + d
		want := uint16(0xFFFF - wantTicks(d))
		if got := r.read16(COUNTER2); got != want {
			t.Fatalf("at +%d ns count %#04x, want %#04x", d, got, want)
		}
	}
	// The MSB alone, as pit_expect_msb polls it: LSB read, MSB checked.
	for k := int64(1); k < 255; k += 7 {
		// The first instant the MSB reads 0xFF-k.
		at := tickTime(0xFFFF - (0xFF-k)<<8 - 0xFF)
		r.now = t0 + at - 1
		if _, msb := r.in(COUNTER2), r.in(COUNTER2); msb != uint8(0xFF-k+1) {
			t.Fatalf("1 ns before tick: MSB %#x, want %#x", msb, 0xFF-k+1)
		}
		r.now = t0 + at
		if _, msb := r.in(COUNTER2), r.in(COUNTER2); msb != uint8(0xFF-k) {
			t.Fatalf("at tick: MSB %#x, want %#x", msb, 0xFF-k)
		}
	}
}

// TestSlowCalibrationOUT2 checks OUT2 in NMI_SC rises exactly at
// terminal count (Linux's pit_calibrate_tsc polls it).
func TestSlowCalibrationOUT2(t *testing.T) {
	r := newRig(t, 1_000_000)
	const latch = 11932 // CLK / 100
	r.out(NMI_SC, TIM_CNT2_EN)
	r.out(CONTROL_WORD, 0xB0)
	r.out(COUNTER2, latch&0xFF)
	r.out(COUNTER2, latch>>8)
	t0 := r.now
	tc := tickTime(latch)
	r.now = t0 + tc - 1
	if r.in(NMI_SC)&TMR2_OUT_STS != 0 {
		t.Fatal("OUT2 high 1 ns before terminal count")
	}
	r.now = t0 + tc
	if v := r.in(NMI_SC); v&TMR2_OUT_STS == 0 || v&nmiscWritable != TIM_CNT2_EN {
		t.Fatalf("NMI_SC %#x at terminal count", v)
	}
	// Mode 0 counts on past zero, OUT stays high.
	r.now = t0 + tickTime(latch+5)
	if got := r.read16(COUNTER2); got != 0xFFFB {
		t.Fatalf("count %#x after wrap, want 0xfffb", got)
	}
	if r.in(NMI_SC)&TMR2_OUT_STS == 0 {
		t.Fatal("OUT2 fell after terminal count in mode 0")
	}
}

func TestGatePausesMode0(t *testing.T) {
	r := newRig(t, 0)
	r.out(NMI_SC, TIM_CNT2_EN)
	r.out(CONTROL_WORD, 0xB0)
	r.out(COUNTER2, 0x00)
	r.out(COUNTER2, 0x10) // 0x1000
	r.now = tickTime(100)
	r.out(NMI_SC, 0) // gate low: counting suspended
	r.now = tickTime(5000)
	if got := r.read16(COUNTER2); got != 0x1000-100 {
		t.Fatalf("count %#x while gated off, want %#x", got, 0x1000-100)
	}
	r.out(NMI_SC, TIM_CNT2_EN)
	resume := r.now
	r.now = resume + tickTime(50)
	if got := r.read16(COUNTER2); got != 0x1000-150 {
		t.Fatalf("count %#x after resuming, want %#x", got, 0x1000-150)
	}
}

func TestLatchCommand(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x34) // counter 0, LSB/MSB, mode 2
	r.out(COUNTER0, 0x00)
	r.out(COUNTER0, 0x80) // 0x8000
	r.now = tickTime(0x123)
	r.out(CONTROL_WORD, 0x00) // latch counter 0
	r.now = tickTime(0x456)
	r.out(CONTROL_WORD, 0x00) // ignored: not read yet
	if got := r.read16(COUNTER0); got != 0x8000-0x123 {
		t.Fatalf("latched %#x, want %#x", got, 0x8000-0x123)
	}
	if got := r.read16(COUNTER0); got != 0x8000-0x456 {
		t.Fatalf("after the latch was read: %#x, want %#x", got, 0x8000-0x456)
	}
}

// TestInterleavedLatch: the read flip-flop is independent of the latch
// and of writes (8254 datasheet, "Read Operations").
func TestInterleavedLatch(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x74) // counter 1, LSB/MSB, mode 2
	r.out(COUNTER1, 0x34)
	r.out(COUNTER1, 0x12) // 0x1234
	r.now = tickTime(0x11)
	if lo := r.in(COUNTER1); lo != 0x23 { // live LSB of 0x1223
		t.Fatalf("LSB %#x, want 0x23", lo)
	}
	r.out(CONTROL_WORD, 0x40) // latch counter 1 between the two bytes
	r.now = tickTime(0x300)
	if hi := r.in(COUNTER1); hi != 0x12 { // MSB of the latched 0x1223
		t.Fatalf("MSB %#x, want 0x12 (latched)", hi)
	}
	// The latch is released: the next pair is live again.
	if got := r.read16(COUNTER1); got != 0x1234-0x300 {
		t.Fatalf("live %#x, want %#x", got, 0x1234-0x300)
	}
	// Read LSB, write LSB, read MSB, write MSB (datasheet example).
	r.now = tickTime(0x400)
	lo := r.in(COUNTER1)
	r.out(COUNTER1, 0x00)
	hi := r.in(COUNTER1)
	r.out(COUNTER1, 0x20)
	if got := uint16(lo) | uint16(hi)<<8; got != 0x1234-0x400 {
		t.Fatalf("interleaved read %#x, want %#x", got, 0x1234-0x400)
	}
	// Mode 2: the new count 0x2000 waits for the end of the period.
	r.out(CONTROL_WORD, 0xE4) // read-back status of counter 1
	if st := r.in(COUNTER1); st&STATUS_NULL_COUNT == 0 {
		t.Fatalf("status %#x: null count clear before reload", st)
	}
	r.now = tickTime(0x1234)
	if got := r.read16(COUNTER1); got != 0x2000 {
		t.Fatalf("count at the period end %#x, want 0x2000", got)
	}
	r.now = tickTime(0x1234 + 0x10)
	if got := r.read16(COUNTER1); got != 0x2000-0x10 {
		t.Fatalf("count %#x, want %#x", got, 0x2000-0x10)
	}
	r.out(CONTROL_WORD, 0xE4)
	if st := r.in(COUNTER1); st&STATUS_NULL_COUNT != 0 {
		t.Fatalf("status %#x: null count still set after reload", st)
	}
}

func TestLSBAndMSBOnly(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x90) // counter 2, LSB only, mode 0
	r.out(COUNTER2, 0x80)
	r.out(NMI_SC, TIM_CNT2_EN)
	r.now = tickTime(0x10)
	if got, again := r.in(COUNTER2), r.in(COUNTER2); got != 0x70 || again != 0x70 {
		t.Fatalf("LSB-only reads %#x %#x, want 0x70 twice", got, again)
	}
	r.out(CONTROL_WORD, 0xA0) // counter 2, MSB only, mode 0
	r.out(COUNTER2, 0x02)     // 0x0200
	start := r.now
	r.now = start + tickTime(0x101)
	if got := r.in(COUNTER2); got != 0x00 { // 0x00FF
		t.Fatalf("MSB-only read %#x, want 0", got)
	}
}

func TestReadBack(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x36) // counter 0, LSB/MSB, mode 3
	r.out(CONTROL_WORD, 0xB1) // counter 2, LSB/MSB, mode 0, BCD
	// Status right after a control word: OUT low (mode 0), null count.
	r.out(CONTROL_WORD, 0xE8) // read-back status, counter 2
	if st := r.in(COUNTER2); st != STATUS_NULL_COUNT|0x31 {
		t.Fatalf("status %#x, want %#x", st, STATUS_NULL_COUNT|0x31)
	}
	r.out(COUNTER2, 0x00)
	r.out(COUNTER2, 0x01) // 0x0100 (counted in binary)
	r.out(NMI_SC, TIM_CNT2_EN)
	r.now = tickTime(0x20)
	// Count and status of counters 0 and 2: status first, then count.
	r.out(CONTROL_WORD, 0xCA)
	r.now = tickTime(0x40)
	r.out(CONTROL_WORD, 0xE8) // status again: ignored, already latched
	if st := r.in(COUNTER2); st != 0x31 {
		t.Fatalf("status %#x, want 0x31 (OUT low, count loaded)", st)
	}
	if got := r.read16(COUNTER2); got != 0x0100-0x20 {
		t.Fatalf("read-back count %#x, want %#x", got, 0x0100-0x20)
	}
	if st := r.in(COUNTER0); st != STATUS_OUTPUT|STATUS_NULL_COUNT|0x36 {
		t.Fatalf("counter 0 status %#x", st)
	}
	r.now = tickTime(0x100)
	r.out(CONTROL_WORD, 0xE8)
	if st := r.in(COUNTER2); st&STATUS_OUTPUT == 0 {
		t.Fatalf("status %#x at terminal count: OUT low", st)
	}
	// Count only (bit 4 set): no status byte in front.
	r.now = tickTime(0x200)
	r.out(CONTROL_WORD, 0xD8)
	r.now = tickTime(0x300) // the latch holds the count at 0x200
	if got := r.read16(COUNTER2); got != 0x10000-0x100 {
		t.Fatalf("count-only read-back %#x", got)
	}
	// The control word register reads float.
	if v := r.in(CONTROL_WORD); v != 0xFF {
		t.Fatalf("control word register read %#x", v)
	}
}

func TestMode0LSBStopsCounting(t *testing.T) {
	r := newRig(t, 0)
	r.out(NMI_SC, TIM_CNT2_EN)
	r.out(CONTROL_WORD, 0xB0)
	r.out(COUNTER2, 0x10)
	r.out(COUNTER2, 0x00) // 0x10
	r.now = tickTime(0x20)
	if r.in(NMI_SC)&TMR2_OUT_STS == 0 {
		t.Fatal("OUT2 low after terminal count")
	}
	r.out(COUNTER2, 0x00) // first byte: counting stops, OUT low
	if r.in(NMI_SC)&TMR2_OUT_STS != 0 {
		t.Fatal("OUT2 high after the first byte of a new count")
	}
	frozen := r.read16(COUNTER2)
	r.now = tickTime(0x80)
	if got := r.read16(COUNTER2); got != frozen {
		t.Fatalf("count moved from %#x to %#x while waiting for the MSB", frozen, got)
	}
	r.out(COUNTER2, 0x01) // 0x0100, loaded now
	start := r.now
	r.now = start + tickTime(1)
	if got := r.read16(COUNTER2); got != 0xFF {
		t.Fatalf("count %#x, want 0xff", got)
	}
}

// TestPeriodicIRQ checks counter 0's edges in modes 2 and 3 fire at the
// exact tick times with no drift, over many periods.
func TestPeriodicIRQ(t *testing.T) {
	for _, tc := range []struct {
		ctrl  uint8
		count int64
	}{
		{0x34, 1193}, {0x36, 1193}, {0x34, 65536}, {0x36, 11931}, {0x36, 2}, {0x34, 3},
	} {
		r := newRig(t, 123_456_789)
		r.out(CONTROL_WORD, tc.ctrl)
		r.out(COUNTER0, uint8(tc.count))
		r.out(COUNTER0, uint8(tc.count>>8))
		t0 := r.now
		const periods = 1000
		r.runTo(t0 + tickTime(periods*tc.count))
		if r.edges != periods {
			t.Fatalf("ctrl %#x count %d: %d edges, want %d", tc.ctrl, tc.count, r.edges, periods)
		}
		for k, at := range r.at {
			if want := t0 + tickTime(int64(k+1)*tc.count); at != want {
				t.Fatalf("ctrl %#x: edge %d at %d, want %d", tc.ctrl, k+1, at, want)
			}
		}
		// Stepping with a coarse clock (steps shorter than a period)
		// loses no edge either.
		r.edges = 0
		end := r.now + tickTime(100*tc.count)
		for r.now < end {
			r.now += tickTime(tc.count) * 2 / 3
			r.q.Run()
		}
		want := int(wantTicks(r.now-t0)/tc.count) - periods
		if r.edges != want {
			t.Fatalf("ctrl %#x: coarse clock gave %d edges, want %d", tc.ctrl, r.edges, want)
		}
	}
}

func TestMode0IRQOnce(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x30) // counter 0, mode 0
	r.out(COUNTER0, 0x00)
	r.out(COUNTER0, 0x10)
	r.runTo(tickTime(0x1000) - 1)
	if r.edges != 0 {
		t.Fatal("edge before terminal count")
	}
	r.runTo(tickTime(0x1000))
	if r.edges != 1 {
		t.Fatalf("%d edges at terminal count, want 1", r.edges)
	}
	r.runTo(tickTime(0x50000))
	if r.edges != 1 {
		t.Fatalf("%d edges after terminal count, want 1", r.edges)
	}
	if _, armed := r.p.timer.Armed(); armed {
		t.Fatal("timer still armed in mode 0 after terminal count")
	}
	// A new control word stops everything.
	r.out(CONTROL_WORD, 0x34)
	if _, armed := r.p.timer.Armed(); armed {
		t.Fatal("timer armed with no count")
	}
}

func TestMode2Sequence(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x74) // counter 1, mode 2
	r.out(COUNTER1, 4)
	r.out(COUNTER1, 0)
	r.out(CONTROL_WORD, 0xB4) // counter 2, mode 2
	r.out(COUNTER2, 4)
	r.out(COUNTER2, 0)
	r.out(NMI_SC, TIM_CNT2_EN)
	start := r.now
	want := []uint16{4, 3, 2, 1, 4, 3, 2, 1, 4}
	for k, w := range want {
		r.now = start + tickTime(int64(k))
		if got := r.read16(COUNTER2); got != w {
			t.Fatalf("tick %d: count %d, want %d", k, got, w)
		}
		if out := r.in(NMI_SC)&TMR2_OUT_STS != 0; out != (w != 1) {
			t.Fatalf("tick %d: OUT %v at count %d", k, out, w)
		}
	}
	// GATE low forces OUT high and stops counting; rising reloads.
	r.now = start + tickTime(3) // count 1, OUT low
	r.out(NMI_SC, 0)
	if r.in(NMI_SC)&TMR2_OUT_STS == 0 {
		t.Fatal("OUT2 low with GATE low in mode 2")
	}
	r.now += 10_000
	r.out(NMI_SC, TIM_CNT2_EN)
	if got := r.read16(COUNTER2); got != 4 {
		t.Fatalf("count %d after GATE rose, want 4 (reload)", got)
	}
}

func TestMode3Sequence(t *testing.T) {
	for _, tc := range []struct {
		count uint8
		want  []uint16
		out   []bool
	}{
		{6, []uint16{6, 4, 2, 6, 4, 2, 6}, []bool{true, true, true, false, false, false, true}},
		{5, []uint16{5, 4, 2, 5, 2, 5}, []bool{true, true, true, false, false, true}},
	} {
		r := newRig(t, 0)
		r.out(CONTROL_WORD, 0xB6) // counter 2, mode 3
		r.out(COUNTER2, tc.count)
		r.out(COUNTER2, 0)
		r.out(NMI_SC, TIM_CNT2_EN)
		start := r.now
		for k, w := range tc.want {
			r.now = start + tickTime(int64(k))
			if got := r.read16(COUNTER2); got != w {
				t.Fatalf("count %d tick %d: %d, want %d", tc.count, k, got, w)
			}
			if out := r.in(NMI_SC)&TMR2_OUT_STS != 0; out != tc.out[k] {
				t.Fatalf("count %d tick %d: OUT %v", tc.count, k, out)
			}
		}
	}
}

func TestMode1And5Triggers(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0xB2) // counter 2, mode 1
	r.out(COUNTER2, 10)
	r.out(COUNTER2, 0)
	r.now = 5000
	if r.in(NMI_SC)&TMR2_OUT_STS == 0 {
		t.Fatal("mode 1 OUT low before the trigger")
	}
	r.out(NMI_SC, TIM_CNT2_EN) // trigger
	trig := r.now
	r.out(NMI_SC, 0) // GATE low does not stop a one-shot
	r.now = trig + tickTime(4)
	if got := r.read16(COUNTER2); got != 6 || r.in(NMI_SC)&TMR2_OUT_STS != 0 {
		t.Fatalf("mode 1 count %d, OUT %#x", got, r.in(NMI_SC))
	}
	r.out(NMI_SC, TIM_CNT2_EN) // retrigger: reload
	trig = r.now
	r.now = trig + tickTime(9)
	if got := r.read16(COUNTER2); got != 1 || r.in(NMI_SC)&TMR2_OUT_STS != 0 {
		t.Fatalf("after retrigger: count %d", got)
	}
	r.now = trig + tickTime(10)
	if r.in(NMI_SC)&TMR2_OUT_STS == 0 {
		t.Fatal("mode 1 OUT low at terminal count")
	}

	r.out(NMI_SC, 0)
	r.out(CONTROL_WORD, 0xBA) // counter 2, mode 5
	r.out(COUNTER2, 3)
	r.out(COUNTER2, 0)
	r.out(NMI_SC, TIM_CNT2_EN)
	trig = r.now
	for k, out := range []bool{true, true, true, false, true} {
		r.now = trig + tickTime(int64(k))
		if got := r.in(NMI_SC)&TMR2_OUT_STS != 0; got != out {
			t.Fatalf("mode 5 tick %d: OUT %v", k, got)
		}
	}
}

func TestMode4Strobe(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x38) // counter 0, mode 4
	r.out(COUNTER0, 3)
	r.out(COUNTER0, 0)
	r.runTo(tickTime(4) - 1) // OUT low at terminal count (tick 3)
	if r.edges != 0 {
		t.Fatalf("mode 4: %d edges before OUT rose", r.edges)
	}
	r.runTo(tickTime(4))
	if r.edges != 1 {
		t.Fatalf("mode 4: %d edges when OUT rose again", r.edges)
	}
	r.runTo(tickTime(200000))
	if r.edges != 1 {
		t.Fatalf("mode 4: %d edges later", r.edges)
	}
}

func TestRefreshToggle(t *testing.T) {
	r := newRig(t, 0)
	for k := int64(0); k < 200; k++ {
		r.now = tickTime(k)
		want := (k/refreshTicks)%2 != 0
		if got := r.in(NMI_SC)&REF_TOGGLE != 0; got != want {
			t.Fatalf("tick %d: REF_TOGGLE %v, want %v", k, got, want)
		}
	}
	// Writes do not reach the read-only bits.
	r.out(NMI_SC, 0xFF)
	r.now = tickTime(1)
	if v := r.in(NMI_SC); v&^TMR2_OUT_STS != nmiscWritable {
		t.Fatalf("NMI_SC %#x after writing 0xff", v)
	}
}

func TestWideAccessAndBus(t *testing.T) {
	r := newRig(t, 0)
	var bus devices.Bus
	if err := r.p.Register(&bus); err != nil {
		t.Fatal(err)
	}
	for _, port := range []uint16{0x40, 0x41, 0x42, 0x43, 0x61} {
		if bus.Lookup(port) == nil {
			t.Errorf("port %#x not registered", port)
		}
	}
	for _, port := range []uint16{0x3F, 0x44, 0x60, 0x62} {
		if bus.Lookup(port) != nil {
			t.Errorf("port %#x registered", port)
		}
	}
	r.out(CONTROL_WORD, 0x10) // counter 0, LSB only, mode 0
	r.out(CONTROL_WORD, 0x50) // counter 1, LSB only, mode 0
	bus.Out(COUNTER0, 2, 0x2211)
	if got := bus.In(COUNTER0, 2); got != 0x2211 {
		t.Fatalf("word read %#x, want 0x2211", got)
	}
	if got := bus.In(COUNTER2+1, 4); got != 0xFFFFFFFF {
		t.Fatalf("dword read at 0x43: %#x", got)
	}
	if got := r.p.In(COUNTER0, 3); got != devices.Floating {
		t.Fatalf("size 3 read %#x", got)
	}
}

func TestStateRoundTrip(t *testing.T) {
	r := newRig(t, 50_000_000)
	r.out(CONTROL_WORD, 0x34)
	r.out(COUNTER0, 0xA9)
	r.out(COUNTER0, 0x04) // 1193
	r.out(NMI_SC, TIM_CNT2_EN|SPKR_DAT_EN)
	r.out(CONTROL_WORD, 0xB0)
	r.out(COUNTER2, 0xFF)
	r.out(COUNTER2, 0xFF)
	r.out(CONTROL_WORD, 0x74)
	r.out(COUNTER1, 0x10) // half a count: LSB only so far
	r.runTo(r.now + 3_333_333)
	r.out(CONTROL_WORD, 0xC4) // latch count and status of counter 1
	r.in(COUNTER2)            // LSB of counter 2 read: MSB next
	st := r.p.MarshalState()
	d0, _ := r.p.timer.Armed()

	s := newRig(t, r.now)
	if err := s.p.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.p.MarshalState(), st) {
		t.Fatal("state differs after a round trip")
	}
	if d1, ok := s.p.timer.Armed(); !ok || d1 != d0 {
		t.Fatalf("restored timer at %d (%v), want %d", d1, ok, d0)
	}
	r.runTo(r.now + 10_000_000)
	s.runTo(s.now + 10_000_000)
	if r.edges-3 != s.edges { // 3 edges came before the snapshot
		t.Fatalf("edges after restore: %d, original %d", s.edges, r.edges-3)
	}
	for _, port := range []uint16{COUNTER2, COUNTER1, COUNTER1, COUNTER1, COUNTER0, COUNTER0, NMI_SC} {
		if a, b := r.in(port), s.in(port); a != b {
			t.Fatalf("port %#x reads %#x after restore, %#x originally", port, b, a)
		}
	}
}

func TestStateErrors(t *testing.T) {
	r := newRig(t, 0)
	good := r.p.MarshalState()
	if err := r.p.UnmarshalState(2, good); !errors.Is(err, devices.ErrStateVersion) {
		t.Errorf("version 2: %v", err)
	}
	if err := r.p.UnmarshalState(StateVersion, good[1:]); !errors.Is(err, devices.ErrStateLength) {
		t.Errorf("short: %v", err)
	}
	c0 := 1
	for name, edit := range map[string]func(b []byte){
		"NMI_SC":       func(b []byte) { b[0] = 0x10 },
		"latch ctrl":   func(b []byte) { b[c0] = 0x00 },
		"ctrl bits":    func(b []byte) { b[c0] = 0x70 },
		"flags":        func(b []byte) { b[c0+1] = 0x80 },
		"loaded":       func(b []byte) { b[c0+1] = flagLoaded },
		"toggle":       func(b []byte) { b[c0] = RW_LSB; b[c0+1] = flagReadMSB },
		"status":       func(b []byte) { b[c0+1] = flagStatusLatched; b[c0+3] = 0x01 },
		"count 0":      func(b []byte) { clear(b[c0+8 : c0+12]) },
		"count 65537":  func(b []byte) { b[c0+8], b[c0+9], b[c0+10] = 1, 0, 1 },
		"ticks":        func(b []byte) { b[c0+19] = 0x40 },
		"reload tick":  func(b []byte) { b[c0+35] = 0x80 },
		"neg. ticks":   func(b []byte) { b[c0+19] = 0xC0 },
		"counter 2 rw": func(b []byte) { b[1+2*counterStateLen] = 0 },
	} {
		b := append([]byte(nil), good...)
		edit(b)
		if err := r.p.UnmarshalState(StateVersion, b); !errors.Is(err, devices.ErrStateInvalid) {
			t.Errorf("%s: %v", name, err)
		}
		if !bytes.Equal(r.p.MarshalState(), good) {
			t.Fatalf("%s: rejected state changed the PIT", name)
		}
	}
}

// TestDueEdgeSurvivesAccess: an edge that came due before the queue ran
// is delivered even if the guest reads or reprograms counter 0 first
// (Linux latches counter 0 in its PIT clocksource read).
func TestDueEdgeSurvivesAccess(t *testing.T) {
	r := newRig(t, 0)
	r.out(CONTROL_WORD, 0x34)
	r.out(COUNTER0, 100)
	r.out(COUNTER0, 0)
	r.now = tickTime(150) // edge at tick 100, queue not run
	r.out(CONTROL_WORD, 0x00)
	r.read16(COUNTER0)
	st := r.p.MarshalState()
	r.q.Run()
	if r.edges != 1 {
		t.Fatalf("%d edges, want 1", r.edges)
	}
	if d, ok := r.p.timer.Armed(); !ok || d != tickTime(200) {
		t.Fatalf("next edge at %d (%v), want %d", d, ok, tickTime(200))
	}
	// The same from a snapshot taken before the queue ran.
	s := newRig(t, r.now)
	if err := s.p.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	s.out(CONTROL_WORD, 0x30) // reprogrammed: the past edge still counts
	s.q.Run()
	if s.edges != 1 {
		t.Fatalf("restored: %d edges, want 1", s.edges)
	}
}
