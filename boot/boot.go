// Package boot is tamavisor's board support for QEMU's microvm machine (and
// AMD machines like it) under TCG or KVM: the TamaGo goos hooks (console,
// RAM size, clock, early init), a TSC calibrated against the i8254 PIT, the
// memory layout, and power-off with a status code.
//
// TamaGo's own microvm board needs kvmclock and panics under TCG, so this
// package replaces it. Importing it (for side effects) is what makes a
// TamaGo program run on the machine.
package boot

import "math/bits"

// Physical memory layout. TamaGo's runtime (code, heap, stack) owns
// [RuntimeStart, RuntimeEnd); the DMA region serves device drivers; guest
// RAM, VMCBs and nested page tables come from the pool above it, which
// extends to the end of the usable RAM containing it in the firmware's
// memory map, below 4 GiB (PoolEnd in memmap.go; QEMU needs -m 2G).
const (
	RuntimeStart = 0x10000000
	RuntimeSize  = 0x20000000 // 512 MiB
	RuntimeEnd   = RuntimeStart + RuntimeSize
	DMAStart     = RuntimeEnd
	DMASize      = 0x04000000 // 64 MiB
	PoolStart    = DMAStart + DMASize
)

// i8254 programmable interval timer (Intel 8254 datasheet; PC ports).
const (
	PITChannel0 = 0x40
	PITCommand  = 0x43
	PITFreq     = 1193182 // Hz

	// Command byte fields.
	PITSelect0     = 0 << 6
	PITLatch       = 0 << 4 // counter latch command
	PITAccessLoHi  = 3 << 4
	PITMode2       = 2 << 1 // rate generator
	PITBinary      = 0
	pitCounterMask = 0xffff
)

// Calibrate measures the TSC frequency against the PIT: counter reads the
// latched value of a free-running channel in mode 2 with reload 65536
// (counting down at PITFreq and wrapping), tsc reads the TSC. It polls until
// at least window PIT ticks have passed, summing the wrapped differences, so
// it is correct as long as two reads are less than 65536 ticks (55 ms)
// apart. It returns the TSC frequency in Hz, or 0 if the PIT does not move.
//
// The two ends of the window pair a PIT read with the TSC: each is read
// between two TSC reads, the narrowest of several tries kept and its
// midpoint used. Under emulation the CPU can be descheduled between the
// two reads; paired naively, one such pause at an end skews the result by
// the pause over the window (4 ms in 50 ms: 8%).
func Calibrate(counter func() uint16, tsc func() uint64, window uint32) uint64 {
	read := func() uint64 { return uint64(-counter()) & pitCounterMask } // as an up-counter
	return calibrate(read, pitCounterMask, PITFreq, tsc, uint64(window))
}

// CalibrateCounter measures the TSC frequency against an up-counting
// reference of freq Hz, such as the ACPI PM timer (24 or 32 bits at
// acpi.PMTimerHz) or the HPET's main counter: counter returns its value,
// of which the bits in mask count and wrap. As Calibrate, it needs two
// reads less than one wrap apart, and returns 0 if the counter does not
// move.
func CalibrateCounter(counter func() uint32, mask uint32, freq uint64, tsc func() uint64, window uint64) uint64 {
	return calibrate(func() uint64 { return uint64(counter()) }, uint64(mask), freq, tsc, window)
}

// calibrate measures tsc against an up-counter of freq Hz wrapping at
// mask, over at least window of its ticks.
func calibrate(counter func() uint64, mask, freq uint64, tsc func() uint64, window uint64) uint64 {
	prev, t0 := pairedRead(counter, tsc)
	var ticks uint64
	for stuck := 0; ticks < window; {
		cur := counter()
		d := (cur - prev) & mask
		if d == 0 {
			if stuck++; stuck > 10_000_000 {
				return 0
			}
			continue
		}
		stuck = 0
		ticks += d
		prev = cur
	}
	cur, t1 := pairedRead(counter, tsc)
	ticks += (cur - prev) & mask
	if t1 <= t0 || ticks == 0 {
		return 0
	}
	hi, lo := bits.Mul64(t1-t0, freq)
	if hi >= ticks {
		return 0
	}
	hz, _ := bits.Div64(hi, lo, ticks)
	return hz
}

// pairedTries is how many bracketed reads pairedRead tries.
const pairedTries = 16

// pairedRead returns a counter value and the TSC at the moment it was
// read: the midpoint of the narrowest TSC bracket of pairedTries reads.
func pairedRead(counter func() uint64, tsc func() uint64) (count, at uint64) {
	best := ^uint64(0)
	for i := 0; i < pairedTries; i++ {
		a := tsc()
		c := counter()
		b := tsc()
		if b >= a && b-a < best {
			best, count, at = b-a, c, a+(b-a)/2
		}
	}
	return count, at
}

// Plausible TSC frequencies, and how far the PIT's measurement may be from
// an ACPI timer's before the PIT is taken to be wrong.
const (
	minTSCHz     = 100_000_000
	maxTSCHz     = 10_000_000_000
	tscTolerance = 0.02
)

// ChooseTSC decides between the TSC frequency measured against the PIT
// (pitHz, 0 if it did not count) and against an ACPI timer (refHz, 0 if
// there is none or it did not count): the PIT is kept when its value is
// plausible and, if there is an ACPI measurement, agrees with it within
// tscTolerance; otherwise a plausible ACPI measurement is taken. It
// returns the frequency (0 when neither is usable) and whether it is the
// PIT's.
func ChooseTSC(pitHz, refHz uint64) (hz uint64, pit bool) {
	plausible := func(hz uint64) bool { return hz >= minTSCHz && hz <= maxTSCHz }
	switch {
	case !plausible(refHz):
		if plausible(pitHz) {
			return pitHz, true
		}
		return 0, false
	case !plausible(pitHz):
		return refHz, false
	}
	if d := float64(pitHz)/float64(refHz) - 1; d > tscTolerance || d < -tscTolerance {
		return refHz, false
	}
	return pitHz, true
}

// CPUID leaf 1 EAX: the processor signature (AMD APM vol. 3, appendix
// E.3.2, and E.4.1 for the vendor string of leaf 0).
const (
	CPUIDSignature = 1
	sigStepping    = 0xf
	sigBaseModel   = 0xf << 4
	sigBaseFamily  = 0xf << 8
	sigExtModel    = 0xf << 16
	sigExtFamily   = 0xff << 20
	extendedFamily = 0xf // base family whose extended fields count
)

// CPUSignature decodes CPUID 1 EAX into the display family, model and
// stepping: the extended family is added and the extended model prefixed
// when the base family is 0xF (AMD's rule; Intel also prefixes the
// extended model for family 6).
func CPUSignature(eax uint32) (family, model, stepping uint32) {
	family = eax & sigBaseFamily >> 8
	model = eax & sigBaseModel >> 4
	stepping = eax & sigStepping
	if family == extendedFamily {
		family += eax & sigExtFamily >> 20
		model |= (eax & sigExtModel >> 16) << 4
	}
	return family, model, stepping
}

// Status codes with which tamavisor powers off (docs/guest-abi.md).
const (
	StatusGuestMax  = 99  // guest EXIT statuses are clamped to this
	StatusVMStopped = 100 // a VM was stopped by the hypervisor
	StatusBadImage  = 101 // guest image refused
	StatusNoSVM     = 110 // SVM not available
	StatusInternal  = 111 // hypervisor internal error
)

// DebugExitPort is QEMU's isa-debug-exit device (-device
// isa-debug-exit,iobase=0xf4,iosize=0x04): a write of v makes QEMU exit
// with status v*2+1.
const DebugExitPort = 0xf4

// CMOS ports (PC CMOS map): an index register, whose bit 7 disables NMIs,
// and a data register.
const (
	CMOSIndex      = 0x70
	CMOSData       = 0x71
	cmosNMIDisable = 0x80
)

// CMOS real-time clock registers (MC146818; PC CMOS map). QEMU keeps them in
// BCD, 24-hour mode.
const (
	RTCSeconds  = 0x00
	RTCMinutes  = 0x02
	RTCHours    = 0x04
	RTCDay      = 0x07 // day of the month
	RTCMonth    = 0x08
	RTCYear     = 0x09
	RTCStatusA  = 0x0a
	RTCCentury  = 0x32
	RTCUpdating = 1 << 7 // status A: update in progress
)

func bcd(v uint8) int { return int(v>>4)*10 + int(v&0xf) }

// RTCTime converts CMOS RTC register values (BCD) to Unix seconds (UTC).
// ok is false for values that are not a valid date.
func RTCTime(sec, min, hour, day, month, year, century uint8) (unix int64, ok bool) {
	y := bcd(century)*100 + bcd(year)
	if century == 0 {
		y = 2000 + bcd(year)
	}
	mo, d, h, mi, s := bcd(month), bcd(day), bcd(hour), bcd(min), bcd(sec)
	if mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60 {
		return 0, false
	}
	// Days since 1970-01-01 (proleptic Gregorian, civil-from-days inverse).
	yy := y
	if mo <= 2 {
		yy--
	}
	era := yy / 400
	yoe := yy - era*400
	m := (mo + 9) % 12
	doy := (153*m+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	days := int64(era*146097+doe) - 719468
	return days*86400 + int64(h*3600+mi*60+s), true
}
