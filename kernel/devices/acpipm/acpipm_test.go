package acpipm

import (
	"errors"
	"testing"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

const (
	evt = 0x600
	cnt = 0x604
	tmr = 0x608
)

func newPM(now *int64) (*PM, *devices.Bus) {
	q := event.NewQueue(func() int64 { return *now })
	p := New(q, evt, cnt, tmr, 5)
	var bus devices.Bus
	if err := p.Register(&bus); err != nil {
		panic(err)
	}
	return p, &bus
}

func TestTimerFollowsVMTime(t *testing.T) {
	now := int64(0)
	_, bus := newPM(&now)
	for _, tc := range []struct {
		ns   int64
		want uint32
	}{
		{0, 0},
		{1_000_000_000, PMTimerHz}, // one second
		{1000, 3},                  // 3.579 ticks
		{4_687_500_000, (PMTimerHz * 4687500 / 1000000) & timerMask}, // wraps at 24 bits
	} {
		now = tc.ns
		if got := bus.In(tmr, 4); got != tc.want {
			t.Errorf("at %d ns: timer %d, want %d", tc.ns, got, tc.want)
		}
	}
	// Two reads 10 ms apart differ by exactly 35795 ticks (a guest's TSC
	// calibration reference).
	now = 123_456_789
	a := bus.In(tmr, 4)
	now += 10_000_000
	if d := (bus.In(tmr, 4) - a) & timerMask; d != 35795 && d != 35796 {
		t.Errorf("10 ms = %d ticks", d)
	}
	if got := bus.In(tmr, 2); got != 0xffff {
		t.Errorf("word read of the timer %#x, want all ones", got)
	}
}

func TestControlAndPowerOff(t *testing.T) {
	now := int64(0)
	p, bus := newPM(&now)
	off := 0
	p.PowerOff = func() { off++ }
	if got := bus.In(cnt, 2); got&SCI_EN == 0 {
		t.Errorf("PM1_CNT %#x: SCI_EN clear (no SMI_CMD: ACPI mode is always on)", got)
	}
	bus.Out(cnt, 2, 3<<SLP_TYP_SHIFT|SLP_EN) // S3: not supported, ignored
	bus.Out(cnt, 2, 5<<SLP_TYP_SHIFT)        // type without SLP_EN
	if off != 0 {
		t.Fatalf("powered off %d times before SLP_EN with S5", off)
	}
	bus.Out(cnt, 2, 5<<SLP_TYP_SHIFT|SLP_EN)
	if off != 1 {
		t.Errorf("S5 with SLP_EN: powered off %d times", off)
	}
	if got := bus.In(cnt, 2); got&SLP_EN != 0 {
		t.Errorf("SLP_EN reads back %#x (write-only)", got)
	}
	bus.Out(evt+PM1_EN, 2, TMR_EN)
	if got := bus.In(evt+PM1_EN, 2); got != TMR_EN {
		t.Errorf("PM1_EN %#x", got)
	}
	if got := bus.In(evt, 4); got != TMR_EN<<16 {
		t.Errorf("PM1 event block as a dword %#x", got)
	}
}

func TestState(t *testing.T) {
	now := int64(0)
	p, bus := newPM(&now)
	bus.Out(evt+PM1_EN, 2, 0x21)
	q, _ := newPM(&now)
	if err := q.UnmarshalState(StateVersion, p.MarshalState()); err != nil || q.en != 0x21 || q.ctl != p.ctl {
		t.Errorf("round trip: %v %+v", err, q)
	}
	if err := q.UnmarshalState(2, p.MarshalState()); !errors.Is(err, devices.ErrStateVersion) {
		t.Errorf("version 2: %v", err)
	}
	if err := q.UnmarshalState(StateVersion, []byte{1}); !errors.Is(err, devices.ErrStateLength) {
		t.Errorf("short: %v", err)
	}
	if err := q.UnmarshalState(StateVersion, []byte{0, 0, 0, 0x20, 0, 0}); !errors.Is(err, devices.ErrStateInvalid) {
		t.Errorf("SLP_EN in state: %v", err)
	}
}
