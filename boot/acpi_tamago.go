//go:build tamago && amd64

package boot

import (
	"fmt"
	"unsafe"

	"tamavisor/boot/acpi"
	"tamavisor/internal/x86"
)

// What the board's ACPI tables change, after a firmware boot: the host
// local APIC's address (MADT), the TSC's reference when the PIT is absent
// or wrong (the FADT's PM timer, the HPET), and the console UART (SPCR).
// The callers (package main) decide and log; these functions touch the
// hardware.

// The local APIC base MSR (APM vol. 2, 16.3.1, Figure 16-2).
const (
	msrAPICBase      = 0x1b
	apicBaseAddrMask = 0x000f_ffff_ffff_f000 // ABA, bits 51:12
	lapicRegsSize    = 4096
)

// LAPICBaseMSR returns the local APIC address the CPU uses (APIC_BASE).
func LAPICBaseMSR() uint64 { return x86.RDMSR(msrAPICBase) & apicBaseAddrMask }

// SetLAPICBase makes the host use the local APIC at pa (the MADT's
// address): it must be page-aligned and mapped uncacheable. Call it
// before InitHostInterrupts.
func SetLAPICBase(pa uint64) error {
	if pa == 0 || pa%lapicRegsSize != 0 {
		return fmt.Errorf("local APIC address %#x is not a page address", pa)
	}
	if err := checkMMIO(pa, lapicRegsSize); err != nil {
		return fmt.Errorf("local APIC at %#x: %w", pa, err)
	}
	lapicBase, lapicEOIAddr = pa, pa+lapicEOI
	return nil
}

// LAPICBase returns the host local APIC's address.
func LAPICBase() uint64 { return lapicBase }

// checkMMIO maps [pa, pa+size) if it is beyond TamaGo's map and checks it
// is uncacheable.
func checkMMIO(pa, size uint64) error {
	if err := MapMMIO(pa, size); err != nil {
		return err
	}
	desc, uncached, err := MMIOType(pa, size)
	if err != nil {
		return err
	}
	if !uncached {
		return fmt.Errorf("mapped cacheable (%s): device registers need UC", desc)
	}
	return nil
}

// maxIOPort32 is the highest I/O port a 32-bit access can start at.
const maxIOPort32 = 0xfffc

// PMTimer returns a reader of the ACPI PM timer at register g (the
// FADT's), in I/O or memory space.
func PMTimer(g acpi.GAS) (func() uint32, error) {
	switch g.SpaceID {
	case acpi.SpaceSystemIO:
		if g.Address == 0 || g.Address > maxIOPort32 {
			return nil, fmt.Errorf("PM timer port %#x out of range", g.Address)
		}
		port := uint16(g.Address)
		return func() uint32 { return x86.In32(port) }, nil
	case acpi.SpaceSystemMemory:
		if err := checkMMIO(g.Address&^(lapicRegsSize-1), lapicRegsSize); err != nil {
			return nil, fmt.Errorf("PM timer at %#x: %w", g.Address, err)
		}
		p := (*uint32)(unsafe.Pointer(uintptr(g.Address)))
		return func() uint32 { return *p }, nil
	}
	return nil, fmt.Errorf("PM timer in address space %d", g.SpaceID)
}

// HPET registers (IA-PC HPET Specification 1.0a, section 2.3.1, Table 2).
const (
	hpetGCAPID            = 0x000 // General Capabilities and ID
	hpetGCONF             = 0x010 // General Configuration
	hpetMainCounter       = 0x0f0 // Main Counter Value
	hpetRegsSize          = 1024
	hpetPeriodShift       = 32         // GCAP_ID: COUNTER_CLK_PERIOD, bits 63:32, in femtoseconds
	hpetMaxPeriod         = 0x05f5e100 // 100 ns: the specification's longest period
	hpetEnableCnf         = 1 << 0     // GEN_CONF: ENABLE_CNF, the main counter runs
	femtosecondsPerSecond = 1e15
)

// HPET returns a reader of the low 32 bits of the HPET main counter at
// base, its frequency, and a function that restores the HPET's
// configuration (it is enabled for the measurement if it was stopped).
func HPET(base uint64) (read func() uint32, hz uint64, done func(), err error) {
	if err := checkMMIO(base, hpetRegsSize); err != nil {
		return nil, 0, nil, fmt.Errorf("HPET at %#x: %w", base, err)
	}
	reg := func(off uint64) *uint64 { return (*uint64)(unsafe.Pointer(uintptr(base + off))) }
	period := *reg(hpetGCAPID) >> hpetPeriodShift
	if period == 0 || period > hpetMaxPeriod {
		return nil, 0, nil, fmt.Errorf("HPET at %#x: COUNTER_CLK_PERIOD %d fs out of range", base, period)
	}
	conf := *reg(hpetGCONF)
	*reg(hpetGCONF) = conf | hpetEnableCnf
	counter := (*uint32)(unsafe.Pointer(uintptr(base + hpetMainCounter)))
	return func() uint32 { return *counter }, femtosecondsPerSecond / period, func() { *reg(hpetGCONF) = conf }, nil
}

// calibrationsPerSecond: a calibration measures over 1/20 s (50 ms).
const calibrationsPerSecond = 20

// MeasureTSC measures the TSC frequency against an up-counter of freq Hz
// whose low bits in mask count (0 if it does not move).
func MeasureTSC(counter func() uint32, mask uint32, freq uint64) uint64 {
	return CalibrateCounter(counter, mask, freq, x86.RDTSC, freq/calibrationsPerSecond)
}

// SetTSCHz makes hz the TSC frequency of the clock (TSCHz, nanotime),
// which continues from where it was. Call it before InitHostInterrupts,
// which calibrates the local APIC timer against it.
func SetTSCHz(hz uint64) {
	if hz == 0 {
		return
	}
	now := CPU.GetTime()
	CPU.TimerMultiplier = 1e9 / float64(hz)
	CPU.SetTime(now)
	TSCHz = hz
}

// 16550 line control (PC16550D datasheet, section 8.4): the divisor
// latch and the word format.
const (
	uartDLL      = 0      // divisor latch, low byte (DLAB set)
	uartDLM      = 1      // divisor latch, high byte (DLAB set)
	uartLCR      = 3      // line control register
	lcrDLAB      = 0x80   // divisor latch access bit
	lcr8N1       = 0x03   // 8 data bits, no parity, 1 stop bit
	uartBaseBaud = 115200 // 1.8432 MHz / 16: the divisor is this over the baud rate
)

// UseConsole moves the console to the 16550 UART at I/O port (SPCR's), at
// baud 8N1 (baud 0: as the firmware set it). A port where no UART
// answers is refused, and the console stays where it was.
func UseConsole(port uint16, baud uint32) error {
	if x86.In8(port+uartLSR) == lsrAbsent {
		return fmt.Errorf("no UART answers at I/O %#x (line status reads %#x)", port, lsrAbsent)
	}
	if baud != 0 {
		if baud > uartBaseBaud || uartBaseBaud%baud != 0 {
			return fmt.Errorf("baud rate %d is not a divisor of %d", baud, uartBaseBaud)
		}
		div := uartBaseBaud / baud
		x86.Out8(port+uartLCR, lcrDLAB)
		x86.Out8(port+uartDLL, uint8(div))
		x86.Out8(port+uartDLM, uint8(div>>8))
		x86.Out8(port+uartLCR, lcr8N1)
	}
	UART0.Base = port
	UART0.Init()
	return nil
}

// ConsolePort returns the console UART's I/O port.
func ConsolePort() uint16 { return UART0.Base }
