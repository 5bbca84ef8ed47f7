package rtc

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

// rig is an RTC whose wall clock is wallBase + VM time, both fake.
type rig struct {
	t        *testing.T
	vm       int64
	wallBase int64
	q        *event.Queue
	r        *RTC
	level    bool
	rises    int
}

// when is 2026-12-01 21:57:31 UTC, a Tuesday.
var when = time.Date(2026, 12, 1, 21, 57, 31, 0, time.UTC)

func newRig(t *testing.T, wall time.Time) *rig {
	g := &rig{t: t, vm: 5_000_000_000, wallBase: wall.UnixNano() - 5_000_000_000}
	g.q = event.NewQueue(func() int64 { return g.vm })
	g.r = New(g.q, func() int64 { return g.wallBase + g.vm }, devices.IRQFunc(func(l bool) {
		if l && !g.level {
			g.rises++
		}
		g.level = l
	}), 2<<30, 4<<30)
	return g
}

func (g *rig) read(reg uint8) uint8 {
	g.r.Out(ADDRESS_PORT, 1, uint32(reg))
	return uint8(g.r.In(DATA_PORT, 1))
}

func (g *rig) write(reg, v uint8) {
	g.r.Out(ADDRESS_PORT, 1, uint32(reg))
	g.r.Out(DATA_PORT, 1, uint32(v))
}

// advance moves VM time (and the wall clock with it) by d, running the
// timers at their deadlines.
func (g *rig) advance(d time.Duration) {
	end := g.vm + int64(d)
	for i := 0; ; i++ {
		next := g.q.Next()
		if next > end {
			break
		}
		if i > 1_000_000 {
			g.t.Fatal("timer stuck")
		}
		g.vm = max(g.vm, next)
		g.q.Run()
	}
	g.vm = end
	g.q.Run()
}

func (g *rig) clock() clock {
	var c clock
	for i, reg := range timeRegs {
		c[i] = g.read(reg)
	}
	return c
}

func TestTimeFormats(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    uint8
		at   time.Time
		want clock
	}{
		{"BCD 24h", B_24_12, when, clock{0x31, 0x57, 0x21, 0x03, 0x01, 0x12, 0x26, 0x20}},
		{"binary 24h", B_24_12 | B_DM, when, clock{31, 57, 21, 3, 1, 12, 26, 20}},
		{"BCD 12h", 0, when, clock{0x31, 0x57, 0x89, 0x03, 0x01, 0x12, 0x26, 0x20}},
		{"binary 12h", B_DM, when, clock{31, 57, 0x89, 3, 1, 12, 26, 20}},
		{"BCD 12h midnight", 0, time.Date(2000, 2, 29, 0, 5, 9, 0, time.UTC),
			clock{0x09, 0x05, 0x12, 0x03, 0x29, 0x02, 0x00, 0x20}},
		{"BCD 12h noon", 0, time.Date(1999, 12, 31, 12, 59, 59, 0, time.UTC),
			clock{0x59, 0x59, 0x92, 0x06, 0x31, 0x12, 0x99, 0x19}},
		{"binary 12h noon", B_DM, time.Date(2100, 3, 7, 12, 0, 0, 0, time.UTC),
			clock{0, 0, 0x8C, 1, 7, 3, 0, 21}},
		{"binary 12h 11 pm", B_DM, time.Date(2100, 3, 7, 23, 0, 0, 0, time.UTC),
			clock{0, 0, 0x8B, 1, 7, 3, 0, 21}},
	} {
		g := newRig(t, tc.at.Add(100*time.Millisecond))
		g.write(REG_B, tc.b)
		if got := g.clock(); got != tc.want {
			t.Errorf("%s: clock % x, want % x", tc.name, got[:], tc.want[:])
		}
		// Writing every register back as read changes nothing.
		for i, reg := range timeRegs {
			g.write(reg, tc.want[i])
		}
		if got := g.clock(); got != tc.want {
			t.Errorf("%s: after rewriting: % x", tc.name, got[:])
		}
	}
}

func TestClockRuns(t *testing.T) {
	g := newRig(t, when)
	g.advance(29*time.Second - 1)
	if got := g.clock(); got != (clock{0x59, 0x57, 0x21, 0x03, 0x01, 0x12, 0x26, 0x20}) {
		t.Fatalf("clock % x", got[:])
	}
	g.advance(1)
	if got := g.clock(); got != (clock{0x00, 0x58, 0x21, 0x03, 0x01, 0x12, 0x26, 0x20}) {
		t.Fatalf("clock % x at the minute", got[:])
	}
}

func TestUIPWindow(t *testing.T) {
	g := newRig(t, when)
	edge := time.Second - uipNs*time.Nanosecond
	g.advance(edge - 1)
	if g.read(REG_A)&A_UIP != 0 {
		t.Fatal("UIP set 244 us + 1 ns before the update")
	}
	g.advance(1)
	if a := g.read(REG_A); a != A_UIP|DV_32768|0x06 {
		t.Fatalf("register A %#x at the start of the window", a)
	}
	if s := g.read(SECONDS); s != 0x31 {
		t.Fatalf("seconds %#x inside the window, want 0x31", s)
	}
	g.advance(uipNs - 1)
	if g.read(REG_A)&A_UIP == 0 {
		t.Fatal("UIP clear 1 ns before the update")
	}
	g.advance(1)
	if g.read(REG_A)&A_UIP != 0 || g.read(SECONDS) != 0x32 {
		t.Fatal("UIP still set, or seconds not updated, at the second")
	}
	// Linux's loop: wait for UIP clear, read, check UIP and seconds;
	// started inside the window, it must wait for the update.
	g.advance(edge + 1000)
	for tries := 0; ; tries++ {
		if tries > 1000 {
			t.Fatal("UIP never cleared")
		}
		if g.read(REG_A)&A_UIP != 0 {
			g.advance(100 * time.Microsecond)
			continue
		}
		c := g.clock()
		if g.read(REG_A)&A_UIP == 0 && g.read(SECONDS) == c[0] {
			if c[0] != 0x33 {
				t.Fatalf("read seconds %#x, want 0x33", c[0])
			}
			break
		}
	}
	// SET stops updates: no UIP.
	g.write(REG_B, B_SET|B_24_12)
	g.advance(edge - 1000)
	g.advance(500)
	if g.read(REG_A)&A_UIP != 0 {
		t.Fatal("UIP set while SET")
	}
}

// TestSetTime follows Linux's mc146818_set_time: SET, divider reset,
// the registers, then B and A restored.
func TestSetTime(t *testing.T) {
	g := newRig(t, when)
	b := g.read(REG_B)
	g.write(REG_B, b|B_SET)
	a := g.read(REG_A)
	g.write(REG_A, a|0x70)
	set := clock{0x05, 0x04, 0x03, 0x07, 0x02, 0x01, 0x30, 0x20} // 2030-01-02 03:04:05
	for i, reg := range timeRegs {
		g.write(reg, set[i])
	}
	g.advance(5 * time.Second) // frozen while SET
	if got := g.clock(); got != set {
		t.Fatalf("clock moved while SET: % x", got[:])
	}
	g.write(REG_B, b)
	g.write(REG_A, a)
	want := set
	want[3] = 0x04 // 2030-01-02 is a Wednesday
	if got := g.clock(); got != want {
		t.Fatalf("clock % x after setting, want % x", got[:], want[:])
	}
	// The first update comes 500 ms after the divider is released.
	g.advance(500*time.Millisecond - 1)
	if s := g.read(SECONDS); s != 0x05 {
		t.Fatalf("seconds %#x before the first update", s)
	}
	g.advance(1)
	if s := g.read(SECONDS); s != 0x06 {
		t.Fatalf("seconds %#x after the first update", s)
	}
	g.advance(3 * time.Second)
	if s := g.read(SECONDS); s != 0x09 {
		t.Fatalf("seconds %#x 3 s later", s)
	}
	// A write while running moves the clock, keeping the phase.
	g.write(HOURS, 0x23)
	g.write(YEAR, 0x99)
	if got := g.clock(); got != (clock{0x09, 0x04, 0x23, 0x06, 0x02, 0x01, 0x99, 0x20}) {
		t.Fatalf("clock % x after writes", got[:])
	}
	// SET clears UIE; SET is read back.
	g.write(REG_B, B_UIE|B_24_12)
	g.write(REG_B, B_SET|B_UIE|B_24_12)
	if v := g.read(REG_B); v != B_SET|B_24_12 {
		t.Fatalf("register B %#x after setting SET with UIE", v)
	}
}

func TestPeriodicInterrupt(t *testing.T) {
	g := newRig(t, when)
	g.write(REG_A, DV_32768|0x06) // 1024 Hz: 976562.5 ns
	g.read(REG_C)
	g.write(REG_B, B_PIE|B_24_12)
	// Count the rising edges over 1 s of VM time, reading C at each.
	n := 0
	end := g.vm + int64(time.Second)
	for g.vm < end {
		g.vm = g.q.Next()
		g.q.Run()
		if !g.level {
			t.Fatal("timer fired without raising IRQ 8")
		}
		if c := g.read(REG_C); c&^C_UF != C_IRQF|C_PF {
			t.Fatalf("register C %#x, want IRQF|PF (UF: any)", c)
		}
		if g.level {
			t.Fatal("IRQ 8 still high after reading C")
		}
		n++
	}
	if n != 1024 && n != 1025 {
		t.Fatalf("%d periodic interrupts in 1 s, want 1024", n)
	}
	// Each deadline is the exact period boundary: boundary i at
	// ceil(i * 1e9 / 1024).
	d, _ := g.r.timer.Armed()
	i := periodIndex(d, 5)
	if periodStart(i, 5) != d || periodIndex(d-1, 5) != i-1 {
		t.Fatalf("deadline %d is not a period boundary", d)
	}
	// PF is set without PIE, but IRQF and the line stay low.
	g.write(REG_B, B_24_12)
	g.advance(2 * time.Millisecond)
	if c := g.read(REG_C); c&^C_UF != C_PF {
		t.Fatalf("register C %#x without PIE, want PF", c)
	}
	if c := g.read(REG_C); c&^C_UF != 0 {
		t.Fatalf("register C %#x on the second read", c)
	}
	if _, armed := g.r.timer.Armed(); armed {
		t.Fatal("timer armed with no interrupt enabled")
	}
	// Rate select 0: no periodic flag.
	g.write(REG_A, DV_32768)
	g.advance(time.Second)
	if c := g.read(REG_C); c&C_PF != 0 {
		t.Fatalf("register C %#x with RS = 0", c)
	}
}

func TestUpdateAndAlarmInterrupts(t *testing.T) {
	g := newRig(t, when.Add(300*time.Millisecond))
	g.write(REG_A, DV_32768) // no periodic flags
	g.write(REG_B, B_UIE|B_24_12)
	g.advance(700*time.Millisecond - 1)
	if g.level {
		t.Fatal("update interrupt before the second")
	}
	g.advance(1)
	if !g.level || g.rises != 1 {
		t.Fatal("no update interrupt at the second")
	}
	if c := g.read(REG_C); c != C_IRQF|C_UF {
		t.Fatalf("register C %#x, want IRQF|UF", c)
	}
	// Alarm at 21:57:35 (now 21:57:32).
	g.write(REG_B, B_AIE|B_24_12)
	g.write(SECONDS_ALARM, 0x35)
	g.write(MINUTES_ALARM, 0x57)
	g.write(HOURS_ALARM, 0x21)
	g.read(REG_C)
	g.advance(3*time.Second - 1)
	if g.level {
		t.Fatal("alarm early")
	}
	g.advance(1)
	if !g.level {
		t.Fatal("no alarm at 21:57:35")
	}
	if c := g.read(REG_C); c != C_IRQF|C_AF|C_UF {
		t.Fatalf("register C %#x, want IRQF|AF|UF", c)
	}
	g.advance(time.Minute)
	if g.level {
		t.Fatal("alarm fired again within the day")
	}
	// Don't care: every minute at second 0x10.
	g.write(MINUTES_ALARM, ALARM_DONT_CARE)
	g.write(HOURS_ALARM, 0xFF)
	g.write(SECONDS_ALARM, 0x10)
	g.read(REG_C)
	rises := g.rises
	g.advance(3 * time.Minute)
	if g.rises-rises != 1 { // C not read: one edge, then IRQF stays set
		t.Fatalf("%d alarm edges", g.rises-rises)
	}
	g.read(REG_C)
	g.advance(2 * time.Minute)
	if g.rises-rises != 2 {
		t.Fatalf("%d alarm edges after reading C", g.rises-rises)
	}
	// An alarm passed while the guest was away (no timer: AIE off)
	// still sets AF.
	g.write(REG_B, B_24_12)
	g.read(REG_C)
	g.write(SECONDS_ALARM, 0x00)
	g.write(MINUTES_ALARM, 0x00)
	g.write(HOURS_ALARM, 0x03)
	g.advance(10 * time.Hour)
	if c := g.read(REG_C); c&C_AF == 0 {
		t.Fatalf("register C %#x: 03:00:00 passed, no AF", c)
	}
}

func TestRegistersAndRAM(t *testing.T) {
	g := newRig(t, when)
	if d := g.read(REG_D); d != D_VRT {
		t.Fatalf("register D %#x", d)
	}
	g.write(REG_D, 0)
	g.write(REG_C, 0xFF)
	if g.read(REG_D) != D_VRT || g.read(REG_C) != 0 {
		t.Fatal("read-only register written")
	}
	g.write(REG_A, 0xFF)
	if a := g.read(REG_A); a&^A_UIP != 0x7F {
		t.Fatalf("register A %#x after writing 0xff", a)
	}
	g.write(REG_A, DV_32768|0x06)
	for reg := uint8(0x0E); reg < Size; reg++ {
		if reg == CENTURY {
			continue
		}
		g.write(reg, reg^0xA5)
	}
	for reg := uint8(0x0E); reg < Size; reg++ {
		if reg != CENTURY && g.read(reg) != reg^0xA5 {
			t.Fatalf("RAM %#x reads %#x", reg, g.read(reg))
		}
	}
	// The NMI bit selects nothing; port 0x70 is write only.
	g.r.Out(ADDRESS_PORT, 1, NMI_DISABLE|0x20)
	if !g.r.NMIDisabled() || g.r.In(DATA_PORT, 1) != 0x20^0xA5 {
		t.Fatal("NMI bit not masked from the address")
	}
	if g.r.In(ADDRESS_PORT, 1) != 0xFF {
		t.Fatal("address port readable")
	}
	// A word write at 0x70 is an address and a data byte.
	g.r.Out(ADDRESS_PORT, 2, 0x5A20)
	if g.r.NMIDisabled() || g.read(0x20) != 0x5A {
		t.Fatal("word write at 0x70")
	}
	if g.r.In(DATA_PORT, 3) != devices.Floating {
		t.Fatal("size 3 read")
	}
	var bus devices.Bus
	if err := g.r.Register(&bus); err != nil || bus.Lookup(0x70) == nil || bus.Lookup(0x71) == nil || bus.Lookup(0x72) != nil {
		t.Fatalf("registration: %v", err)
	}
}

func TestMemorySizes(t *testing.T) {
	g := newRig(t, when) // 2 GiB below 4 GiB, 4 GiB above
	for _, c := range []struct{ reg, want uint8 }{
		{BASE_MEM_LO, 0x80}, {BASE_MEM_HI, 0x02}, // 640 KiB
		{EXT_MEM_LO, 0xFF}, {EXT_MEM_HI, 0xFF}, // capped
		{EXT_MEM2_LO, 0xFF}, {EXT_MEM2_HI, 0xFF},
		{MEM_16M_LO, 0x00}, {MEM_16M_HI, 0x7F}, // (2 GiB - 16 MiB) / 64 KiB = 0x7f00
		{MEM_4G_LO, 0x00}, {MEM_4G_MID, 0x00}, {MEM_4G_HI, 0x01}, // 0x10000 blocks
	} {
		if got := g.read(c.reg); got != c.want {
			t.Errorf("CMOS %#x = %#x, want %#x", c.reg, got, c.want)
		}
	}
	r := New(g.q, func() int64 { return 0 }, nil, 8<<20, 0)
	if r.ram[EXT_MEM_LO] != 0x00 || r.ram[EXT_MEM_HI] != 0x1C || r.ram[MEM_16M_LO] != 0 || r.ram[MEM_4G_HI] != 0 {
		t.Errorf("8 MiB: % x", r.ram[0x15:0x19])
	}
}

func TestStateRoundTrip(t *testing.T) {
	g := newRig(t, when)
	g.write(REG_B, B_SET|B_24_12)
	g.write(SECONDS, 0x42)
	g.write(0x40, 0x99)
	g.write(REG_A, DV_32768|0x03)
	g.advance(3 * time.Millisecond)
	st := g.r.MarshalState()

	h := newRig(t, when)
	h.vm = g.vm
	if err := h.r.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.r.MarshalState(), st) {
		t.Fatal("state differs after a round trip")
	}
	for _, reg := range []uint8{SECONDS, MINUTES, REG_A, REG_B, REG_C, 0x40, CENTURY} {
		if a, b := g.read(reg), h.read(reg); a != b {
			t.Fatalf("register %#x reads %#x after restore, %#x before", reg, b, a)
		}
	}
	// A restored periodic interrupt already due fires at once.
	g.write(REG_B, B_PIE|B_24_12)
	g.read(REG_C)
	g.vm += 2_000_000 // a period passed, queue not run
	h.vm = g.vm
	st = g.r.MarshalState()
	if err := h.r.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if d, ok := h.r.timer.Armed(); !ok || d > h.vm {
		t.Fatalf("restored timer at %d (%v), VM time %d", d, ok, h.vm)
	}
	h.q.Run()
	if !h.level {
		t.Fatal("due periodic interrupt lost in the restore")
	}
}

func TestStateErrors(t *testing.T) {
	g := newRig(t, when)
	good := g.r.MarshalState()
	if err := g.r.UnmarshalState(0, good); !errors.Is(err, devices.ErrStateVersion) {
		t.Errorf("version 0: %v", err)
	}
	if err := g.r.UnmarshalState(StateVersion, append(good, 0)); !errors.Is(err, devices.ErrStateLength) {
		t.Errorf("long: %v", err)
	}
	for name, edit := range map[string]func(b []byte){
		"UIP":        func(b []byte) { b[1+REG_A] |= A_UIP },
		"SET UIE":    func(b []byte) { b[1+REG_B] = B_SET | B_UIE },
		"C IRQF":     func(b []byte) { b[1+REG_C] = C_IRQF },
		"D":          func(b []byte) { b[1+REG_D] = D_VRT },
		"offset":     func(b []byte) { b[136] = 0x01 },
		"offset ns":  func(b []byte) { b[137], b[138], b[139], b[140] = 0, 0xCA, 0x9A, 0x3B },
		"line":       func(b []byte) { b[157] = 1 },
		"line value": func(b []byte) { b[157] = 2 },
		"line low":   func(b []byte) { b[1+REG_B] = B_PIE; b[1+REG_C] = C_PF },
	} {
		b := append([]byte(nil), good...)
		edit(b)
		if err := g.r.UnmarshalState(StateVersion, b); !errors.Is(err, devices.ErrStateInvalid) {
			t.Errorf("%s: %v", name, err)
		}
		if !bytes.Equal(g.r.MarshalState(), good) {
			t.Fatalf("%s: rejected state changed the RTC", name)
		}
	}
}

// TestPeriodicRates counts periodic interrupts over a quarter second for
// every rate select value (MC146818A datasheet, periodic rate table, for
// a 32.768 kHz time base).
func TestPeriodicRates(t *testing.T) {
	hz := [16]int{0, 256, 128, 8192, 4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2}
	for rs := range hz {
		g := newRig(t, when)
		g.write(REG_A, DV_32768|uint8(rs))
		g.write(REG_B, B_PIE|B_24_12)
		g.read(REG_C)
		n := 0
		end := g.vm + int64(250*time.Millisecond)
		for g.q.Next() <= end {
			g.vm = g.q.Next()
			g.q.Run()
			if g.read(REG_C)&C_PF != 0 {
				n++
			}
		}
		if want := hz[rs] / 4; n != want && n != want+1 {
			t.Errorf("RS %d: %d interrupts in 250 ms, want %d", rs, n, want)
		}
	}
	// Divider in reset: no periodic interrupt.
	g := newRig(t, when)
	g.write(REG_A, DV_RESET|0x06)
	g.write(REG_B, B_PIE|B_24_12)
	g.read(REG_C)
	g.advance(time.Second)
	if c := g.read(REG_C); c != 0 {
		t.Fatalf("register C %#x with the divider in reset", c)
	}
}
