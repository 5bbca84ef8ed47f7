package boot

import "testing"

// A fake PIT and TSC on one simulated clock: the TSC runs at hz, the PIT at
// PITFreq, and each read advances time by step nanoseconds.
type clock struct {
	ns, step uint64
	hz       uint64
}

func (c *clock) pit() uint16 {
	c.ns += c.step
	ticks := c.ns * PITFreq / 1e9
	return uint16(-int64(ticks)) // counts down from 65536, wraps
}

func (c *clock) tsc() uint64 { c.ns += c.step; return c.ns * c.hz / 1e9 }

func TestCalibrate(t *testing.T) {
	for _, tc := range []struct{ hz, step uint64 }{
		{2_244_700_000, 1000},   // TCG, 1 us per port read
		{3_000_000_000, 40_000}, // slow reads, many wraps of 16 bits avoided
		{1_000_000_000, 50},
	} {
		c := &clock{hz: tc.hz, step: tc.step}
		got := Calibrate(c.pit, c.tsc, PITFreq/10)
		if diff := float64(got)/float64(tc.hz) - 1; diff > 0.001 || diff < -0.001 {
			t.Errorf("hz %d step %d: measured %d (%.4f%%)", tc.hz, tc.step, got, diff*100)
		}
	}
}

func TestCalibrateStuckPIT(t *testing.T) {
	n := uint64(0)
	if hz := Calibrate(func() uint16 { return 0xffff }, func() uint64 { n++; return n }, 100); hz != 0 {
		t.Errorf("stuck PIT gave %d Hz", hz)
	}
}

// pmTimer is a fake ACPI PM timer (3.579545 MHz, 24 or 32 bits) on the
// clock.
func (c *clock) pmTimer(bits uint) func() uint32 {
	return func() uint32 {
		c.ns += c.step
		return uint32(c.ns * pmTimerHz / 1e9 & (1<<bits - 1))
	}
}

const pmTimerHz = 3579545

func TestCalibrateCounter(t *testing.T) {
	for _, tc := range []struct {
		hz, step uint64
		bits     uint
	}{
		{2_244_700_000, 1000, 24},
		{3_000_000_000, 40_000, 32},
		{1_000_000_000, 50, 24},
	} {
		// Start near the wrap so that the window crosses it.
		c := &clock{hz: tc.hz, step: tc.step, ns: (1<<tc.bits - 1000) * 1e9 / pmTimerHz}
		got := CalibrateCounter(c.pmTimer(tc.bits), 1<<tc.bits-1, pmTimerHz, c.tsc, pmTimerHz/20)
		if diff := float64(got)/float64(tc.hz) - 1; diff > 0.001 || diff < -0.001 {
			t.Errorf("hz %d step %d, %d bits: measured %d (%.4f%%)", tc.hz, tc.step, tc.bits, got, diff*100)
		}
	}
	n := uint64(0)
	if hz := CalibrateCounter(func() uint32 { return 7 }, 1<<24-1, pmTimerHz, func() uint64 { n++; return n }, 100); hz != 0 {
		t.Errorf("stuck PM timer gave %d Hz", hz)
	}
}

func TestChooseTSC(t *testing.T) {
	for _, tc := range []struct {
		pit, ref, want uint64
		pitWins        bool
	}{
		{2_245_000_000, 0, 2_245_000_000, true},             // no ACPI timer (microvm)
		{2_245_000_000, 2_250_000_000, 2_245_000_000, true}, // they agree: the PIT's
		{0, 2_250_000_000, 2_250_000_000, false},            // no PIT
		{7_000, 2_250_000_000, 2_250_000_000, false},        // a PIT gone wrong
		{3_000_000_000, 2_250_000_000, 2_250_000_000, false},
		{0, 0, 0, false},
		{50_000_000_000, 0, 0, false},
		{2_245_000_000, 20, 2_245_000_000, true}, // a broken ACPI timer
	} {
		if hz, pit := ChooseTSC(tc.pit, tc.ref); hz != tc.want || pit != tc.pitWins {
			t.Errorf("ChooseTSC(%d, %d) = %d, %v; want %d, %v", tc.pit, tc.ref, hz, pit, tc.want, tc.pitWins)
		}
	}
}

func TestCPUSignature(t *testing.T) {
	for _, tc := range []struct{ eax, fam, model, step uint32 }{
		{0x00800f12, 0x17, 0x01, 2}, // QEMU's EPYC model (Zen)
		{0x00a20f10, 0x19, 0x21, 0}, // Zen 3 (Ryzen 5000)
		{0x00b40f40, 0x1a, 0x44, 0}, // Zen 5
		{0x00100f42, 0x10, 0x04, 2}, // family 10h: extended family 1
		{0x000306a9, 0x06, 0x0a, 9}, // base family 6: the extended fields do not count
	} {
		if f, m, s := CPUSignature(tc.eax); f != tc.fam || m != tc.model || s != tc.step {
			t.Errorf("CPUSignature(%#x) = %#x %#x %d, want %#x %#x %d", tc.eax, f, m, s, tc.fam, tc.model, tc.step)
		}
	}
}

func TestRTCTime(t *testing.T) {
	for _, tc := range []struct {
		regs [7]uint8 // sec min hour day month year century, BCD
		want int64
	}{
		{[7]uint8{0x00, 0x00, 0x00, 0x01, 0x01, 0x70, 0x19}, 0},
		{[7]uint8{0x09, 0x40, 0x21, 0x26, 0x11, 0x26, 0x20}, 1795729209}, // 2026-11-26 21:40:09
		{[7]uint8{0x59, 0x59, 0x23, 0x29, 0x02, 0x24, 0x20}, 1709251199}, // leap day 2024
	} {
		r := tc.regs
		got, ok := RTCTime(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
		if !ok || got != tc.want {
			t.Errorf("%x: %d %v, want %d", r, got, ok, tc.want)
		}
	}
	if _, ok := RTCTime(0, 0, 0, 0x32, 0x01, 0x26, 0x20); ok {
		t.Error("day 32 accepted")
	}
}

// TestCalibratePausedReads: the CPU is descheduled for 4 ms between a PIT
// read and the TSC read after it, at the start and at the end of the
// window (as under a loaded emulator). The paired reads keep the result
// within 0.1%; pairing naively would be off by ~8%.
func TestCalibratePausedReads(t *testing.T) {
	const hz, step = 2_100_000_000, 1000
	c := &clock{hz: hz, step: step}
	pitReads := 0
	pause := func() {
		// Every 5th PIT read is followed by a 4 ms pause: some tries of
		// each paired read are disturbed, never all.
		if pitReads%5 == 1 {
			c.ns += 4_000_000
		}
	}
	pit := func() uint16 { pitReads++; v := c.pit(); pause(); return v }
	got := Calibrate(pit, c.tsc, PITFreq/20)
	if diff := float64(got)/hz - 1; diff > 0.001 || diff < -0.001 {
		t.Errorf("measured %d Hz (%.3f%% off)", got, diff*100)
	}
}
