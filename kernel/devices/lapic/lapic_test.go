package lapic

import (
	"bytes"
	"errors"
	"testing"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

// clock is a settable VM time for tests.
type clock struct{ now int64 }

func (c *clock) read() int64 { return c.now }

func newTest() (*LAPIC, *event.Queue, *clock) {
	c := &clock{now: 1000}
	q := event.NewQueue(c.read)
	return New(q, 0), q, c
}

func rd(a *LAPIC, off uint64) uint32    { return uint32(a.Read(off, 4)) }
func wr(a *LAPIC, off uint64, v uint32) { a.Write(off, 4, uint64(v)) }

// enable software-enables the APIC with spurious vector 0xFF.
func enable(a *LAPIC) { wr(a, SVR, SVR_ASE|0xFF) }

func TestResetValues(t *testing.T) {
	a, q, _ := newTest()
	for _, c := range []struct {
		off  uint64
		want uint32
	}{
		{ID, 0}, {VER, 0x00050014}, {TPR, 0}, {APR, 0}, {PPR, 0}, {EOI, 0},
		{LDR, 0}, {DFR, 0xFFFFFFFF}, {SVR, 0xFF}, {ESR, 0}, {ICR_LO, 0}, {ICR_HI, 0},
		{LVT_TIMER, LVT_M}, {LVT_THERMAL, LVT_M}, {LVT_PERF, LVT_M},
		{LVT_LINT0, LVT_M}, {LVT_LINT1, LVT_M}, {LVT_ERROR, LVT_M},
		{TIMER_ICR, 0}, {TIMER_CCR, 0}, {TIMER_DCR, 0},
	} {
		if got := rd(a, c.off); got != c.want {
			t.Errorf("register %#x = %#x, want %#x", c.off, got, c.want)
		}
	}
	for i := uint64(0); i < vectorRegs; i++ {
		if rd(a, ISR+i*16)|rd(a, TMR+i*16)|rd(a, IRR+i*16) != 0 {
			t.Errorf("ISR/TMR/IRR word %d not 0", i)
		}
	}
	if got := a.BaseMSR(); got != 0xFEE00900 {
		t.Errorf("IA32_APIC_BASE = %#x, want 0xfee00900", got)
	}
	if q.Next() != event.Never {
		t.Error("timer armed after reset")
	}
	if b := New(q, 3); rd(b, ID) != 3<<24 {
		t.Errorf("ID of APIC 3 = %#x", rd(b, ID))
	}
	if ClockHz*nsPerTick != 1_000_000_000 {
		t.Error("ClockHz must divide 1 GHz")
	}
}

func TestAccessRules(t *testing.T) {
	a, _, _ := newTest()
	wr(a, TPR, 0x20)
	for _, c := range []struct {
		off  uint64
		size uint8
	}{{TPR, 1}, {TPR, 2}, {TPR, 8}, {TPR + 4, 4}, {TPR + 1, 4}, {Size, 4}, {Size + TPR, 4}, {1 << 63, 4}} {
		if got := a.Read(c.off, c.size); got != 0 {
			t.Errorf("read %#x size %d = %#x, want 0", c.off, c.size, got)
		}
		a.Write(c.off, c.size, 0x70)
	}
	if got := rd(a, TPR); got != 0x20 {
		t.Errorf("TPR = %#x after undefined writes, want 0x20", got)
	}
	// Read-only registers ignore writes.
	enable(a)
	a.Deliver(0x40, true)
	a.Ack(0x40)
	a.Deliver(0x41, false)
	for _, off := range []uint64{VER, APR, PPR, RRR, ISR + 0x20, TMR + 0x20, IRR + 0x20, TIMER_CCR} {
		before := rd(a, off)
		wr(a, off, 0xFFFFFFFF)
		if got := rd(a, off); got != before {
			t.Errorf("read-only %#x changed from %#x to %#x", off, before, got)
		}
	}
	// Reserved offsets read 0.
	for _, off := range []uint64{0x000, 0x010, 0x040, 0x2F0, 0x3A0, 0x3F0, 0x400, 0xFF0} {
		wr(a, off, 0xFFFFFFFF)
		if got := rd(a, off); got != 0 {
			t.Errorf("reserved %#x = %#x", off, got)
		}
	}
}

func TestRegisterMasks(t *testing.T) {
	a, _, _ := newTest()
	enable(a)
	for _, c := range []struct {
		name string
		off  uint64
		want uint32
	}{
		{"ID", ID, 0xFF000000},
		{"TPR", TPR, 0xFF},
		{"LDR", LDR, 0xFF000000},
		{"DFR", DFR, 0xFFFFFFFF},
		{"SVR", SVR, 0x3FF},
		{"ICR high", ICR_HI, 0xFF000000},
		{"LVT timer", LVT_TIMER, 0x300FF},
		{"LVT thermal", LVT_THERMAL, 0x107FF},
		{"LVT perf", LVT_PERF, 0x107FF},
		{"LVT LINT0", LVT_LINT0, 0x1A7FF},
		{"LVT LINT1", LVT_LINT1, 0x1A7FF},
		{"LVT error", LVT_ERROR, 0x100FF},
		{"timer initial count", TIMER_ICR, 0xFFFFFFFF},
		{"timer divide", TIMER_DCR, 0xB},
	} {
		wr(a, c.off, 0xFFFFFFFF)
		if got := rd(a, c.off); got != c.want {
			t.Errorf("%s = %#x after writing ones, want %#x", c.name, got, c.want)
		}
	}
	wr(a, DFR, 0x0FFFFFFF)
	if got := rd(a, DFR); got != 0x0FFFFFFF {
		t.Errorf("DFR cluster = %#x", got)
	}
	// ICR low: an all-excluding-self shorthand so nothing is sent.
	wr(a, ICR_LO, 0xFFFFFFFF)
	if got := rd(a, ICR_LO); got != 0xCCFFF {
		t.Errorf("ICR low = %#x, want 0xccfff (delivery status idle)", got)
	}
}

func TestSoftwareDisable(t *testing.T) {
	a, _, _ := newTest()
	// Software-disabled after reset: LVTs cannot be unmasked.
	wr(a, LVT_TIMER, 0x30)
	if got := rd(a, LVT_TIMER); got != LVT_M|0x30 {
		t.Errorf("LVT timer = %#x while disabled, want masked", got)
	}
	a.Deliver(0x30, false)
	if rd(a, IRR+0x10) != 0 {
		t.Error("disabled APIC accepted an interrupt")
	}
	enable(a)
	wr(a, LVT_TIMER, 0x30)
	wr(a, LVT_LINT0, 0x700)
	a.Deliver(0x31, false)
	if v, ok := a.Pending(); !ok || v != 0x31 {
		t.Fatalf("Pending = %#x %v, want 0x31", v, ok)
	}
	wr(a, SVR, 0xFF) // disable again
	for _, off := range []uint64{LVT_TIMER, LVT_LINT0} {
		if rd(a, off)&LVT_M == 0 {
			t.Errorf("LVT %#x unmasked after software disable", off)
		}
	}
	if _, ok := a.Pending(); ok {
		t.Error("Pending while software-disabled")
	}
	if rd(a, IRR+0x10)&(1<<0x11) == 0 {
		t.Error("IRR not held while disabled")
	}
	enable(a)
	if v, ok := a.Pending(); !ok || v != 0x31 {
		t.Errorf("held interrupt lost: %#x %v", v, ok)
	}
}

func TestPPR(t *testing.T) {
	for _, c := range []struct {
		tpr, isr, want uint8
	}{
		{0x00, 0, 0x00},
		{0x35, 0, 0x35},
		{0x35, 0x20, 0x35},
		{0x35, 0x3F, 0x35}, // equal class: TPR
		{0x35, 0x41, 0x40},
		{0x00, 0xEC, 0xE0},
		{0xFF, 0xEC, 0xFF},
	} {
		a, _, _ := newTest()
		enable(a)
		if c.isr != 0 {
			a.Deliver(c.isr, false)
			a.Ack(c.isr)
		}
		wr(a, TPR, uint32(c.tpr))
		if got := rd(a, PPR); got != uint32(c.want) {
			t.Errorf("TPR %#x ISR %#x: PPR %#x, want %#x", c.tpr, c.isr, got, c.want)
		}
	}
}

func TestPendingPriority(t *testing.T) {
	a, _, _ := newTest()
	enable(a)
	if _, ok := a.Pending(); ok {
		t.Fatal("Pending with empty IRR")
	}
	a.Deliver(0x35, false)
	a.Deliver(0x52, false)
	a.Deliver(0x51, false)
	for _, c := range []struct {
		tpr  uint32
		want uint8
		ok   bool
	}{
		{0x00, 0x52, true},
		{0x4F, 0x52, true},
		{0x50, 0, false}, // class 5 is not above PPR class 5
		{0x5F, 0, false},
		{0xF0, 0, false},
	} {
		wr(a, TPR, c.tpr)
		if v, ok := a.Pending(); ok != c.ok || v != c.want {
			t.Errorf("TPR %#x: Pending %#x %v, want %#x %v", c.tpr, v, ok, c.want, c.ok)
		}
	}
	wr(a, TPR, 0)
	var got []uint8
	for {
		v, ok := a.Pending()
		if !ok {
			break
		}
		got = append(got, v)
		a.Ack(v)
	}
	// 0x51 shares 0x52's class: it waits for the EOI.
	if len(got) != 1 || got[0] != 0x52 {
		t.Fatalf("taken %x, want [52]", got)
	}
	wr(a, EOI, 0)
	if v, ok := a.Pending(); !ok || v != 0x51 {
		t.Fatalf("after EOI Pending %#x %v, want 0x51", v, ok)
	}
}

func TestNestedAckEOI(t *testing.T) {
	a, _, _ := newTest()
	enable(a)
	take := func(want uint8) {
		t.Helper()
		v, ok := a.Pending()
		if !ok || v != want {
			t.Fatalf("Pending %#x %v, want %#x", v, ok, want)
		}
		a.Ack(v)
	}
	a.Deliver(0x30, false)
	take(0x30)
	a.Deliver(0x40, false)
	take(0x40) // nests: class 4 above PPR class 3
	a.Deliver(0x38, false)
	if _, ok := a.Pending(); ok {
		t.Fatal("0x38 pending under ISR 0x40")
	}
	if rd(a, ISR+0x10) != 1<<0x10 || rd(a, ISR+0x20) != 1 {
		t.Fatalf("ISR %#x %#x", rd(a, ISR+0x10), rd(a, ISR+0x20))
	}
	wr(a, EOI, 0) // retires 0x40, the highest
	if rd(a, ISR+0x20) != 0 || rd(a, ISR+0x10) != 1<<0x10 {
		t.Fatal("EOI did not retire the highest ISR vector")
	}
	if rd(a, PPR) != 0x30 {
		t.Errorf("PPR %#x, want 0x30", rd(a, PPR))
	}
	if _, ok := a.Pending(); ok {
		t.Fatal("0x38 pending under ISR 0x30")
	}
	wr(a, EOI, 0)
	take(0x38)
	wr(a, EOI, 0)
	wr(a, EOI, 0) // empty ISR: no effect
	if rd(a, PPR) != 0 {
		t.Errorf("PPR %#x after all EOIs", rd(a, PPR))
	}
	a.Ack(0x99) // not in IRR: ignored
	if rd(a, ISR+0x40) != 0 {
		t.Error("Ack of a vector not in IRR set ISR")
	}
}

func TestLevelEOICallback(t *testing.T) {
	a, _, _ := newTest()
	enable(a)
	var eois []uint8
	a.OnEOI = func(v uint8) {
		eois = append(eois, v)
		a.Deliver(v, true) // re-entry must not deadlock
	}
	a.Deliver(0x50, true)
	a.Deliver(0x60, false)
	if rd(a, TMR+0x20)&(1<<0x10) == 0 || rd(a, TMR+0x30) != 0 {
		t.Fatalf("TMR %#x %#x", rd(a, TMR+0x20), rd(a, TMR+0x30))
	}
	a.Ack(0x60)
	wr(a, EOI, 0)
	if len(eois) != 0 {
		t.Fatalf("EOI of an edge vector reported: %x", eois)
	}
	a.Ack(0x50)
	wr(a, EOI, 0)
	if len(eois) != 1 || eois[0] != 0x50 {
		t.Fatalf("EOIs %x, want [50]", eois)
	}
	if v, ok := a.Pending(); !ok || v != 0x50 {
		t.Errorf("re-delivered level interrupt not pending: %#x %v", v, ok)
	}
	// An edge delivery of the same vector clears its TMR bit.
	a.Deliver(0x50, false)
	if rd(a, TMR+0x20) != 0 {
		t.Error("edge delivery left TMR set")
	}
}

func TestTimerOneShot(t *testing.T) {
	a, q, c := newTest()
	enable(a)
	wr(a, TIMER_DCR, 0x3) // divide by 16
	wr(a, LVT_TIMER, 0xEC)
	wr(a, TIMER_ICR, 1000)
	start := c.now
	if q.Next() != start+16000 {
		t.Fatalf("deadline %d, want %d", q.Next(), start+16000)
	}
	for _, s := range []struct {
		elapsed int64
		want    uint32
	}{{0, 1000}, {1, 1000}, {16, 999}, {1600, 900}, {15999, 1}, {16000, 0}, {99999, 0}} {
		c.now = start + s.elapsed
		if got := rd(a, TIMER_CCR); got != s.want {
			t.Errorf("current count %d ns in = %d, want %d", s.elapsed, got, s.want)
		}
	}
	c.now = start + 15999
	if q.Run() != 0 {
		t.Fatal("timer fired early")
	}
	c.now = start + 16000
	if q.Run() != 1 {
		t.Fatal("timer did not fire")
	}
	if v, ok := a.Pending(); !ok || v != 0xEC {
		t.Fatalf("Pending %#x %v, want 0xec", v, ok)
	}
	if q.Next() != event.Never || rd(a, TIMER_CCR) != 0 {
		t.Error("one-shot timer still running")
	}
	if rd(a, TIMER_ICR) != 1000 {
		t.Error("initial count lost")
	}
	// Writing the initial count restarts; 0 stops.
	wr(a, TIMER_ICR, 10)
	if q.Next() != c.now+160 {
		t.Errorf("restart deadline %d", q.Next())
	}
	wr(a, TIMER_ICR, 0)
	if q.Next() != event.Never || rd(a, TIMER_CCR) != 0 {
		t.Error("initial count 0 did not stop the timer")
	}
}

func TestTimerMasked(t *testing.T) {
	a, q, c := newTest()
	enable(a)
	wr(a, TIMER_DCR, TIMER_DCR_BY_1)
	wr(a, LVT_TIMER, LVT_M|0x40)
	wr(a, TIMER_ICR, 5)
	c.now += 5
	if q.Run() != 1 {
		t.Fatal("masked timer did not count down")
	}
	if _, ok := a.Pending(); ok || rd(a, IRR+0x20) != 0 {
		t.Error("masked timer set IRR")
	}
}

func TestTimerPeriodic(t *testing.T) {
	a, q, c := newTest()
	enable(a)
	wr(a, TIMER_DCR, 0x0) // divide by 2
	wr(a, LVT_TIMER, LVT_TMM|0x40)
	wr(a, TIMER_ICR, 50) // period 100 ns
	start := c.now
	c.now = start + 130 // late: must not drift
	if q.Run() != 1 {
		t.Fatal("periodic timer did not fire")
	}
	if q.Next() != start+200 {
		t.Fatalf("next deadline %d, want %d (no drift)", q.Next(), start+200)
	}
	if got := rd(a, TIMER_CCR); got != 35 {
		t.Errorf("current count %d, want 35", got)
	}
	a.Ack(0x40)
	c.now = start + 1050 // many periods missed: one interrupt, next on the grid
	if q.Run() != 1 {
		t.Fatal("periodic timer did not fire again")
	}
	if q.Next() != start+1100 {
		t.Fatalf("next deadline %d, want %d", q.Next(), start+1100)
	}
	if v, ok := a.Pending(); ok {
		t.Errorf("second interrupt pending (%#x) under the first in ISR", v)
	}
	if rd(a, IRR+0x20) != 1 {
		t.Error("periodic expiry did not set IRR")
	}
	// Reading at an overdue deadline reloads in periodic mode.
	c.now = start + 1120
	if got := rd(a, TIMER_CCR); got != 40 {
		t.Errorf("overdue current count %d, want 40", got)
	}
	// Switching to one-shot: the next expiry stops the timer.
	wr(a, LVT_TIMER, 0x40)
	q.Run()
	if q.Next() != event.Never {
		t.Error("timer still armed after one-shot expiry")
	}
}

func TestTimerDivide(t *testing.T) {
	for _, c := range []struct {
		dcr uint32
		div int64
	}{{0x0, 2}, {0x1, 4}, {0x2, 8}, {0x3, 16}, {0x8, 32}, {0x9, 64}, {0xA, 128}, {0xB, 1}} {
		a, q, clk := newTest()
		wr(a, TIMER_DCR, c.dcr|0x4) // bit 2 is not part of the divisor
		wr(a, TIMER_ICR, 1000)
		if q.Next() != clk.now+1000*c.div {
			t.Errorf("DCR %#x: deadline after %d ns, want %d", c.dcr, q.Next()-clk.now, 1000*c.div)
		}
		clk.now += 300 * c.div
		if got := rd(a, TIMER_CCR); got != 700 {
			t.Errorf("DCR %#x: current count %d, want 700", c.dcr, got)
		}
	}
}

func TestTimerDivideChangeWhileRunning(t *testing.T) {
	a, q, c := newTest()
	wr(a, TIMER_DCR, 0xB) // by 1
	wr(a, TIMER_ICR, 1000)
	c.now += 400
	wr(a, TIMER_DCR, 0x3) // by 16: the remaining 600 ticks slow down
	if got := rd(a, TIMER_CCR); got != 600 {
		t.Errorf("current count %d after divide change, want 600", got)
	}
	if q.Next() != c.now+600*16 {
		t.Errorf("deadline in %d ns, want %d", q.Next()-c.now, 600*16)
	}
}

func TestSelfIPI(t *testing.T) {
	a, _, _ := newTest()
	enable(a)
	wr(a, LDR, 0x01<<24)
	for _, c := range []struct {
		name   string
		hi, lo uint32
		want   bool
	}{
		{"self shorthand", 0, ICR_DSH_SELF | 0x41, true},
		{"all including self", 0, ICR_DSH_ALL | 0x42, true},
		{"all excluding self", 0, ICR_DSH_OTHERS | 0x43, false},
		{"physical own ID", 0 << 24, 0x44, true},
		{"physical other ID", 1 << 24, 0x45, false},
		{"physical broadcast", 0xFF << 24, 0x46, true},
		{"logical flat match", 0x03 << 24, ICR_DM | 0x47, true},
		{"logical flat miss", 0x02 << 24, ICR_DM | 0x48, false},
		{"lowest priority", 0, ICR_DSH_SELF | ICR_MT_LOWEST | 0x49, true},
		{"NMI", 0, ICR_DSH_SELF | 4<<8 | 0x4A, false},
		{"INIT", 0, ICR_DSH_ALL | 5<<8 | 0x4B, false},
		{"SIPI", 0, ICR_DSH_OTHERS | 6<<8 | 0x4C, false},
	} {
		wr(a, ICR_HI, c.hi)
		wr(a, ICR_LO, c.lo)
		v := uint8(c.lo)
		got := rd(a, IRR+0x20)&(1<<(v-0x40)) != 0
		if got != c.want {
			t.Errorf("%s: delivered %v, want %v", c.name, got, c.want)
		}
		if rd(a, ICR_LO)&ICR_DS != 0 {
			t.Errorf("%s: delivery status busy", c.name)
		}
	}
	// Cluster model: cluster 2, member bit 1.
	wr(a, DFR, DFR_CLUSTER<<DFR_MODEL_SHIFT|dfrOnes)
	wr(a, LDR, 0x21<<24)
	for _, c := range []struct {
		dest uint32
		want bool
	}{{0x21, true}, {0x23, true}, {0x31, false}, {0x22, false}, {0xFF, true}} {
		wr(a, ICR_HI, c.dest<<24)
		wr(a, ICR_LO, ICR_DM|0x80)
		got := rd(a, IRR+0x40)&1 != 0
		if got != c.want {
			t.Errorf("cluster dest %#x: delivered %v, want %v", c.dest, got, c.want)
		}
		a.Ack(0x80)
		wr(a, EOI, 0)
	}
}

func TestESR(t *testing.T) {
	a, _, _ := newTest()
	enable(a)
	wr(a, LVT_ERROR, 0xFE)
	a.Deliver(5, false) // illegal vector
	if rd(a, ESR) != 0 {
		t.Error("ESR changed before a write")
	}
	if v, ok := a.Pending(); !ok || v != 0xFE {
		t.Errorf("error interrupt not raised: %#x %v", v, ok)
	}
	wr(a, ESR, 0)
	if got := rd(a, ESR); got != ESR_RECV_ILLEGAL_VECTOR {
		t.Errorf("ESR %#x, want receive illegal vector", got)
	}
	wr(a, ICR_LO, ICR_DSH_SELF|0x0F) // send illegal vector
	wr(a, ESR, 0)
	if got := rd(a, ESR); got != ESR_SEND_ILLEGAL_VECTOR {
		t.Errorf("ESR %#x, want send illegal vector", got)
	}
	if rd(a, IRR) != 0 {
		t.Error("illegal vector entered IRR")
	}
	wr(a, ESR, 0)
	if rd(a, ESR) != 0 {
		t.Error("ESR not cleared by a write")
	}
	// An illegal error vector ends in ESR, not in a loop.
	wr(a, LVT_ERROR, 0x03)
	wr(a, ICR_LO, ICR_DSH_SELF|0x01)
	wr(a, ESR, 0)
	if got := rd(a, ESR); got != ESR_SEND_ILLEGAL_VECTOR|ESR_RECV_ILLEGAL_VECTOR {
		t.Errorf("ESR %#x", got)
	}
}

func TestBaseMSR(t *testing.T) {
	a, q, _ := newTest()
	enable(a)
	wr(a, TPR, 0x10)
	wr(a, TIMER_ICR, 100)
	a.Deliver(0x40, false)
	for _, v := range []uint64{
		0xFEE00900 | APIC_BASE_EXTD, // x2APIC
		0xFED00900,                  // relocation
		0xFEE00901,                  // reserved
		0xFEE00900 | 1<<63,          // reserved
	} {
		if err := a.SetBaseMSR(v); !errors.Is(err, ErrBaseMSR) {
			t.Errorf("SetBaseMSR(%#x) = %v, want ErrBaseMSR", v, err)
		}
	}
	if a.BaseMSR() != 0xFEE00900 || rd(a, TPR) != 0x10 {
		t.Fatal("refused write changed the APIC")
	}
	// Global disable: BSP is read only, the APIC resets and goes dark.
	if err := a.SetBaseMSR(0xFEE00000); err != nil {
		t.Fatal(err)
	}
	if a.BaseMSR() != 0xFEE00100 {
		t.Errorf("IA32_APIC_BASE %#x, want 0xfee00100", a.BaseMSR())
	}
	if q.Next() != event.Never {
		t.Error("timer armed while disabled")
	}
	if rd(a, VER) != 0 {
		t.Error("registers visible while disabled")
	}
	wr(a, SVR, SVR_ASE|0xFF)
	a.Deliver(0x41, false)
	if _, ok := a.Pending(); ok {
		t.Error("Pending while globally disabled")
	}
	if err := a.SetBaseMSR(0xFEE00800); err != nil {
		t.Fatal(err)
	}
	if rd(a, TPR) != 0 || rd(a, SVR) != 0xFF || rd(a, IRR+0x20) != 0 {
		t.Error("re-enabled APIC not in reset state")
	}
	a.Reset()
	if a.BaseMSR() != 0xFEE00900 {
		t.Errorf("after Reset IA32_APIC_BASE %#x", a.BaseMSR())
	}
}

// busyState drives a into a state with every field non-trivial.
func busyState(a *LAPIC) {
	enable(a)
	wr(a, ID, 0x07<<24)
	wr(a, LDR, 0x20<<24)
	wr(a, DFR, 0)
	wr(a, TPR, 0x21)
	wr(a, LVT_ERROR, 0xFE)
	wr(a, LVT_LINT0, 0x700)
	wr(a, LVT_TIMER, LVT_TMM|0xEC)
	wr(a, TIMER_DCR, 0x9)
	wr(a, TIMER_ICR, 12345)
	wr(a, ICR_HI, 0x07<<24)
	wr(a, ICR_LO, 0x31)
	a.Deliver(0x99, true)
	a.Ack(0x99)
	a.Deliver(0x55, true)
	a.Deliver(2, false)
}

func TestStateRoundTrip(t *testing.T) {
	a, q, c := newTest()
	busyState(a)
	c.now += 5000
	st := a.MarshalState()
	if len(st) != stateLen {
		t.Fatalf("state is %d bytes", len(st))
	}
	deadline := q.Next()

	// Restore into a fresh APIC on a fresh queue whose time went on.
	c2 := &clock{now: c.now}
	q2 := event.NewQueue(c2.read)
	b := New(q2, 0)
	if err := b.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.MarshalState(), st) {
		t.Fatal("state round trip differs")
	}
	if q2.Next() != deadline {
		t.Fatalf("restored deadline %d, want %d", q2.Next(), deadline)
	}
	if rd(b, TIMER_CCR) != rd(a, TIMER_CCR) {
		t.Errorf("current count %d after restore, want %d", rd(b, TIMER_CCR), rd(a, TIMER_CCR))
	}
	for off := uint64(0); off < Size; off += 16 {
		if rd(a, off) != rd(b, off) {
			t.Errorf("register %#x: %#x restored as %#x", off, rd(a, off), rd(b, off))
		}
	}
	c2.now = deadline
	if q2.Run() != 1 || rd(b, IRR+0x70)&(1<<0xC) == 0 {
		t.Error("restored timer did not fire")
	}
	// Restoring a stopped timer disarms a running one.
	r := New(q2, 0)
	if err := r.UnmarshalState(StateVersion, New(q2, 0).MarshalState()); err != nil {
		t.Fatal(err)
	}
	if err := b.UnmarshalState(StateVersion, r.MarshalState()); err != nil {
		t.Fatal(err)
	}
	if q2.Next() != event.Never {
		t.Error("timer still armed after restoring a stopped one")
	}
}

func TestUnmarshalRefusals(t *testing.T) {
	a, _, _ := newTest()
	busyState(a)
	good := a.MarshalState
	mod := func(off int, f func(b []byte)) []byte {
		b := good()
		f(b[off:])
		return b
	}
	set := func(off int, v byte) []byte { return mod(off, func(b []byte) { b[0] = v }) }
	or := func(off int, v byte) []byte { return mod(off, func(b []byte) { b[0] |= v }) }
	for _, c := range []struct {
		name    string
		version uint16
		b       []byte
		want    error
	}{
		{"version 0", 0, good(), devices.ErrStateVersion},
		{"version 2", 2, good(), devices.ErrStateVersion},
		{"nil", StateVersion, nil, devices.ErrStateLength},
		{"short", StateVersion, good()[:stateLen-1], devices.ErrStateLength},
		{"long", StateVersion, append(good(), 0), devices.ErrStateLength},
		{"base reserved bit", StateVersion, or(0, 1), devices.ErrStateInvalid},
		{"base x2APIC", StateVersion, or(1, 0x04), devices.ErrStateInvalid},
		{"base relocated", StateVersion, or(2, 0x10), devices.ErrStateInvalid},
		{"DFR model", StateVersion, set(11, 0x10), devices.ErrStateInvalid},
		{"SVR high bits", StateVersion, or(13, 0x10), devices.ErrStateInvalid},
		{"ESR unknown bit", StateVersion, or(16, 0x01), devices.ErrStateInvalid},
		{"ESR pending unknown bit", StateVersion, or(20, 0x80), devices.ErrStateInvalid},
		{"ICR delivery status", StateVersion, or(25, 0x10), devices.ErrStateInvalid},
		{"ICR high low bits", StateVersion, or(28, 0x01), devices.ErrStateInvalid},
		{"LVT timer TSC-deadline", StateVersion, or(34, 0x04), devices.ErrStateInvalid},
		{"LVT error message type", StateVersion, or(53, 0x01), devices.ErrStateInvalid},
		{"divide bit 2", StateVersion, or(60, 0x04), devices.ErrStateInvalid},
		{"negative deadline", StateVersion, or(71, 0x80), devices.ErrStateInvalid},
		{"deadline without count", StateVersion, mod(56, func(b []byte) { copy(b, []byte{0, 0, 0, 0}) }), devices.ErrStateInvalid},
		{"ISR vector 3", StateVersion, or(72, 0x08), devices.ErrStateInvalid},
		{"TMR vector 15", StateVersion, or(105, 0x80), devices.ErrStateInvalid},
		{"IRR vector 0", StateVersion, or(136, 0x01), devices.ErrStateInvalid},
	} {
		b, q, _ := newTest()
		before := b.MarshalState()
		err := b.UnmarshalState(c.version, c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		if !bytes.Equal(b.MarshalState(), before) || q.Next() != event.Never {
			t.Errorf("%s: failed UnmarshalState changed the APIC", c.name)
		}
	}
	// Software-disabled with an unmasked LVT, and a running timer while
	// globally disabled, are states the APIC never reaches.
	r, _, _ := newTest()
	st := r.MarshalState()
	st[32] = 0x30 // LVT timer unmasked, SVR.ASE clear
	st[34] = 0
	if err := r.UnmarshalState(StateVersion, st); !errors.Is(err, devices.ErrStateInvalid) {
		t.Errorf("unmasked LVT while disabled: %v", err)
	}
	st = a.MarshalState()
	st[1] &^= APIC_BASE_AE >> 8
	if err := r.UnmarshalState(StateVersion, st); !errors.Is(err, devices.ErrStateInvalid) {
		t.Errorf("timer running while globally disabled: %v", err)
	}
}
