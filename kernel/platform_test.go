package kernel

// The PC platform of every VM wired into the exit path: device interrupts
// through the I/O APIC and local APIC to the vCPU, halting and the host
// timer, ACPI power-off and resets, and the platform in snapshots.

import (
	"bytes"
	"strings"
	"testing"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/devices/acpipm"
	"tamavisor/kernel/devices/ioapic"
	"tamavisor/kernel/devices/lapic"
	"tamavisor/kernel/devices/legacy"
	"tamavisor/kernel/devices/pit"
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// fakeTimer is the host preemption timer: it records what it is asked,
// and HaltUntil advances the fake TSC to its deadline (the host slept).
type fakeTimer struct {
	e     *env
	arms  []uint64 // Arm deadlines, one per VMRUN
	halts []uint64 // HaltUntil deadlines
}

// maxHalts bounds HaltUntil calls: an idle loop that never returns
// panics, which Run reports as a stop, instead of hanging the test.
const maxHalts = 100

func (f *fakeTimer) Arm(d uint64) { f.arms = append(f.arms, d) }

func (f *fakeTimer) HaltUntil(d uint64) {
	f.halts = append(f.halts, d)
	if len(f.halts) > maxHalts {
		panic("fakeTimer: HaltUntil called too often, the idle loop does not end")
	}
	if d > f.e.tsc {
		f.e.tsc = d
	}
}

// withTimer gives the env a host timer and a TSC of hz (the service
// interval one second).
func (e *env) withTimer(hz uint64) *fakeTimer {
	ft := &fakeTimer{e: e}
	e.plat.Timer = ft
	e.plat.TSCHz = hz
	e.plat.ServiceInterval = hz
	return ft
}

// Redirection entry register indexes of pin, low and high halves.
func redLow(pin int) uint32  { return uint32(ioapic.IOREDTBL + 2*pin) }
func redHigh(pin int) uint32 { return redLow(pin) + 1 }

// routeSteps program I/O APIC pin to vector (fixed, edge, active high,
// unmasked, destination 0) through MMIO, and software-enable the LAPIC.
func (e *env) routeSteps(pin int, vector uint8) []step {
	return e.routeEntry(pin, uint32(vector))
}

// routeEntry is routeSteps with the low half of the entry given.
func (e *env) routeEntry(pin int, low uint32) []step {
	io := uint64(ioapic.DefaultBase)
	return []step{
		e.mmioWrite(io+ioapic.IOREGSEL, redHigh(pin)),
		e.mmioWrite(io+ioapic.IOWIN, 0),
		e.mmioWrite(io+ioapic.IOREGSEL, redLow(pin)),
		e.mmioWrite(io+ioapic.IOWIN, low),
		e.mmioWrite(lapic.DefaultBase+lapic.SVR, 0x1ff),
	}
}

// withIF sets RFLAGS.IF before st.
func withIF(st step) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		setIF(v)
		st(v, r)
	}
}

// injected returns the vectors of the external interrupts injected, by
// entry index.
func injected(es []entry) map[int]uint8 {
	m := map[int]uint8{}
	for i, en := range es {
		ev := en.vmcb.Control.EventInj
		if ev&svm.EventValid != 0 && isInterrupt(ev) {
			m[i] = uint8(ev)
		}
	}
	return m
}

const (
	uartIER = COM1Base + devices.IER
	uartIIR = COM1Base + 2
	uartMCR = COM1Base + devices.MCR
	vecUART = 0x34
)

// TestUARTInterruptRouting: the UART's THR-empty interrupt, gated by
// MCR.OUT2, reaches the vCPU through I/O APIC pin 4 as the programmed
// vector; reading IIR ends it and the next transmit raises it again.
func TestUARTInterruptRouting(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		steps := e.routeSteps(4, vecUART)
		steps[0] = withIF(steps[0])
		n := len(steps)
		steps = append(steps,
			ioStep(uartIER, 1, false, devices.IER_ETBEI), // n+1: no OUT2 yet
			ioStep(uartMCR, 1, false, devices.MCR_OUT2),  // n+2: the line rises
			ioStep(uartIIR, 1, true, 0),                  // n+3: IIR says THR empty, clears it
			e.eoiStep(),                                  // n+4
			ioStep(COM1Base, 1, false, 'x'),              // n+5: THR empty again
			e.cpuidStep(0, 0),                            // n+6
		)
		es := e.resume(steps...)
		vm.PC.IOAPIC.Write(ioapic.IOREGSEL, 4, uint64(redLow(4)))
		if got := vm.PC.IOAPIC.Read(ioapic.IOWIN, 4); got != vecUART {
			t.Errorf("redirection entry 4 %#x after the MMIO writes, want %#x", got, vecUART)
		}
		want := map[int]uint8{n + 2: vecUART, n + 5: vecUART}
		got := injected(es)
		if len(got) != len(want) || got[n+2] != vecUART || got[n+5] != vecUART {
			t.Errorf("interrupts injected at entries %v, want %v", got, want)
		}
		if iir := es[n+3].vmcb.State.RAX & 0xff; iir&0x0f != devices.IIR_THRI {
			t.Errorf("IIR %#x, want THR empty", iir)
		}
		if e.console.String() != "x" {
			t.Errorf("console %q", e.console.String())
		}
	})
}

// TestUARTInterruptOUT2First: OUT2 set before the interrupt is enabled.
func TestUARTInterruptOUT2First(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode64)
	steps := e.routeSteps(4, vecUART)
	steps[0] = withIF(steps[0])
	n := len(steps)
	steps = append(steps,
		ioStep(uartMCR, 1, false, devices.MCR_OUT2|devices.MCR_DTR|devices.MCR_RTS),
		ioStep(uartIER, 1, false, devices.IER_ETBEI),
		e.cpuidStep(0, 0),
	)
	es := e.resume(steps...)
	if got := injected(es); len(got) != 1 || got[n+2] != vecUART {
		t.Errorf("interrupts injected at entries %v, want %#x at %d", got, vecUART, n+2)
	}
}

// TestUARTInterruptNeedsOUT2: without MCR.OUT2 the UART's interrupt
// reaches nobody.
func TestUARTInterruptNeedsOUT2(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	steps := e.routeSteps(4, vecUART)
	steps[0] = withIF(steps[0])
	steps = append(steps,
		ioStep(uartMCR, 1, false, devices.MCR_DTR|devices.MCR_RTS|devices.MCR_OUT1),
		ioStep(uartIER, 1, false, devices.IER_ETBEI|devices.IER_ERBFI),
		ioStep(COM1Base, 1, false, 'y'),
		e.cpuidStep(0, 0),
	)
	es := e.resume(steps...)
	if got := injected(es); len(got) != 0 {
		t.Errorf("interrupts injected without OUT2: %v", got)
	}
	if !vm.UART.IRQ() {
		t.Error("the UART's own interrupt output is not active: the test proves nothing")
	}
	if vecBit(vm, lapic.IRR, vecUART) {
		t.Error("the UART's vector reached the LAPIC's IRR")
	}
}

// TestUARTLevelTriggered: routed level-triggered, the UART's interrupt
// comes again after an EOI while its line is still active (the LAPIC's EOI
// reaches the I/O APIC's remote IRR), and no more once IIR was read.
func TestUARTLevelTriggered(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	steps := e.routeEntry(4, vecUART|ioapic.TRIGGER)
	steps[0] = withIF(steps[0])
	n := len(steps)
	steps = append(steps,
		ioStep(uartMCR, 1, false, devices.MCR_OUT2),
		ioStep(uartIER, 1, false, devices.IER_ETBEI), // n+2: 0x34
		e.eoiStep(),                 // n+3: line still active: 0x34 again
		ioStep(uartIIR, 1, true, 0), // n+4: the line drops
		e.eoiStep(),                 // n+5: nothing
		e.cpuidStep(0, 0),
	)
	es := e.resume(steps...)
	if got := injected(es); len(got) != 2 || got[n+2] != vecUART || got[n+3] != vecUART {
		t.Errorf("interrupts injected at entries %v, want %#x at %d and %d", got, vecUART, n+2, n+3)
	}
	vm.PC.IOAPIC.Write(ioapic.IOREGSEL, 4, uint64(redLow(4)))
	if got := vm.PC.IOAPIC.Read(ioapic.IOWIN, 4); got&ioapic.REMOTE_IRR != 0 {
		t.Errorf("redirection entry 4 %#x: remote IRR still set after the last EOI", got)
	}
}

// TestSCIIdle: the SCI (pin 9, level, active low as the MADT says) is idle:
// unmasking it delivers nothing.
func TestSCIIdle(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	steps := e.routeEntry(irqSCI, 0x39|ioapic.TRIGGER|ioapic.INTPOL)
	steps[0] = withIF(steps[0])
	steps = append(steps, e.cpuidStep(0, 0), e.insnExit(svm.ExitHLT, encHLT, nil))
	es := e.resume(steps...)
	if got := injected(es); len(got) != 0 {
		t.Errorf("interrupts injected from an idle SCI: %v", got)
	}
	if vecBit(vm, lapic.IRR, 0x39) {
		t.Error("SCI vector in IRR")
	}
}

// TestPITInterruptRouting: PIT counter 0 (ISA IRQ 0) arrives on I/O APIC
// pin 2 (the MADT's override), also while the guest is halted.
func TestPITInterruptRouting(t *testing.T) {
	e := newEnv(t, featNRIP)
	ft := e.withTimer(1_000_000_000)
	e.boot(Mode64)
	steps := e.routeSteps(2, 0x30)
	steps = append(steps, e.routeSteps(0, 0x31)[:4]...) // pin 0: a wrong wiring would show 0x31
	n := len(steps)
	steps = append(steps,
		ioStep(pit.CONTROL_WORD, 1, false, 0x34), // counter 0, LSB then MSB, mode 2
		ioStep(pit.COUNTER0, 1, false, 1193&0xff),
		ioStep(pit.COUNTER0, 1, false, 1193>>8), // about 1 ms
		e.insnExit(svm.ExitHLT, encHLT, func(v *svm.VMCB, r *svm.Regs) { setIF(v) }),
	)
	es := e.resume(steps...)
	if got := injected(es); len(got) != 1 || got[n+4] != 0x30 {
		t.Errorf("interrupts injected at entries %v, want 0x30 at %d (after the HLT)", got, n+4)
	}
	// 1193 PIT clocks are 999847.3 ns: the edge comes at the next ns.
	if want := uint64(1_000_000 + 999_848); len(ft.halts) != 1 || ft.halts[0] != want {
		t.Errorf("HaltUntil %v, want one sleep until the PIT's first period at %d", ft.halts, want)
	}
}

// TestHaltUntilLAPICTimer: a HLT with IF=1 sleeps on the host timer until
// the LAPIC timer's deadline, which then interrupts the guest.
func TestHaltUntilLAPICTimer(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		ft := e.withTimer(1_000_000_000) // 1 cycle = 1 ns
		vm := e.boot(Mode64)
		start := e.tsc
		const count = 1_000_000
		deadline := start + count
		setup := withIF(e.mmioWrite(lapic.DefaultBase+lapic.SVR, 0x1ff))
		es := e.resume(
			setup,
			e.mmioWrite(lapic.DefaultBase+lapic.LVT_TIMER, 0x50), // one-shot, unmasked
			e.mmioWrite(lapic.DefaultBase+lapic.TIMER_DCR, lapic.TIMER_DCR_BY_1),
			e.mmioWrite(lapic.DefaultBase+lapic.TIMER_ICR, count),
			e.insnExit(svm.ExitHLT, encHLT, nil),
		)
		if got := vm.PC.LAPIC.Read(lapic.LVT_TIMER, 4); got != 0x50 {
			t.Fatalf("LVT timer %#x", got)
		}
		if len(ft.arms) != len(es) {
			t.Fatalf("%d Arm calls for %d VMRUNs", len(ft.arms), len(es))
		}
		if got := ft.arms[4]; got != deadline {
			t.Errorf("host timer armed for %d before the VMRUN after the timer's start, want its deadline %d", got, deadline)
		}
		if len(ft.halts) == 0 || ft.halts[len(ft.halts)-1] > deadline || ft.halts[0] <= start {
			t.Errorf("HaltUntil %v, want sleeps ending at or before %d", ft.halts, deadline)
		}
		if got := es[5].vmcb.Control.EventInj; got != evIntr(0x50) {
			t.Errorf("after the HLT: EVENTINJ %#x, want the timer's %#x", got, evIntr(0x50))
		}
		if got, want := es[5].vmcb.State.RIP, es[4].vmcb.State.RIP+1; got != want {
			t.Errorf("after the HLT: RIP %#x, want %#x", got, want)
		}
		if e.tsc < deadline {
			t.Errorf("guest resumed at TSC %d, before the timer's deadline %d", e.tsc, deadline)
		}
		if vm.VCPU.halted {
			t.Error("vCPU still halted")
		}
		if got := vm.PC.LAPIC.Read(lapic.TIMER_CCR, 4); got != 0 {
			t.Errorf("timer current count %d after expiry, want 0", got)
		}
	})
}

// TestHaltUntilOddTSCRate: with a TSC rate that is not a whole number of
// cycles per nanosecond, the host TSC the idle loop sleeps until must be
// one at which the device deadline has come in VM time.
func TestHaltUntilOddTSCRate(t *testing.T) {
	e := newEnv(t, featNRIP)
	ft := e.withTimer(2_999_999_999)
	e.tsc = 3_000_000_000 // about 1 s
	vm := e.boot(Mode64)
	enableLAPIC(vm)
	vm.PC.LAPIC.Write(lapic.LVT_TIMER, 4, 0x50)
	vm.PC.LAPIC.Write(lapic.TIMER_DCR, 4, lapic.TIMER_DCR_BY_1)
	vm.PC.LAPIC.Write(lapic.TIMER_ICR, 4, 1_000_001)
	due := vm.clock.Next() // VM time (ns) the timer expires
	stop := e.play(e.insnExit(svm.ExitHLT, encHLT, func(v *svm.VMCB, r *svm.Regs) { setIF(v) }))
	if len(ft.halts) != 1 {
		h := ft.halts[len(ft.halts)-1]
		e.tsc = h
		t.Errorf("HaltUntil called %d times, last with TSC %d: VM time there is %d ns, before the timer's deadline %d ns, "+
			"so the timer does not fire and the idle loop sleeps again until the same, passed, deadline "+
			"(hostTSCAt rounds the host TSC down; it must round up)",
			len(ft.halts), h, vm.now(), due)
	}
	if !e.runner.exhausted {
		t.Fatalf("VM stopped: %v", stop)
	}
	if got := e.runner.entries[1].vmcb.Control.EventInj; got != evIntr(0x50) {
		t.Errorf("EVENTINJ %#x after the HLT, want %#x", got, evIntr(0x50))
	}
}

// TestHaltNothingPending: a HLT with IF=1 and no interrupt to come sleeps
// until the next service and returns to the guest (a wake-up without an
// interrupt), instead of hanging.
func TestHaltNothingPending(t *testing.T) {
	e := newEnv(t, featNRIP)
	ft := e.withTimer(1_000_000_000)
	e.boot(Mode64)
	start := e.tsc
	es := e.resume(
		e.cpuidStep(0, 0), // the service sets the next one at start + 1 s
		e.insnExit(svm.ExitHLT, encHLT, func(v *svm.VMCB, r *svm.Regs) { setIF(v) }),
		e.cpuidStep(0, 0),
	)
	next := start + e.plat.ServiceInterval
	if len(ft.halts) != 1 || ft.halts[0] != next {
		t.Errorf("HaltUntil %v, want one sleep until the next service at %d", ft.halts, next)
	}
	if got := es[2].vmcb.Control.EventInj; got != 0 {
		t.Errorf("EVENTINJ %#x after an idle HLT", got)
	}
	if got, want := es[2].vmcb.State.RIP, es[1].vmcb.State.RIP+1; got != want {
		t.Errorf("after the HLT: RIP %#x, want %#x", got, want)
	}
}

// TestHaltIFClearStops: CLI; HLT stops the VM even with a host timer.
func TestHaltIFClearStops(t *testing.T) {
	e := newEnv(t, featNRIP)
	ft := e.withTimer(1_000_000_000)
	vm := e.boot(Mode64)
	enableLAPIC(vm)
	vm.PC.LAPIC.Write(lapic.LVT_TIMER, 4, 0x50)
	vm.PC.LAPIC.Write(lapic.TIMER_ICR, 4, 1000)
	stop := e.stopped(e.insnExit(svm.ExitHLT, encHLT, nil))
	if stop.Kind != StopFault || !strings.Contains(stop.Reason, "interrupts disabled") {
		t.Errorf("HLT with IF=0: %v", stop)
	}
	if len(ft.halts) != 0 {
		t.Errorf("the host slept %v for a guest that cannot wake", ft.halts)
	}
}

// TestConsoleInputWakesHaltedGuest: a byte typed while the guest idles
// with the receive interrupt enabled is delivered as the UART's vector.
func TestConsoleInputWakesHaltedGuest(t *testing.T) {
	e := newEnv(t, featNRIP)
	ft := e.withTimer(1_000_000_000)
	e.boot(Mode64)
	steps := e.routeSteps(4, vecUART)
	steps[0] = withIF(steps[0])
	n := len(steps)
	steps = append(steps,
		ioStep(uartMCR, 1, false, devices.MCR_OUT2),
		ioStep(uartIER, 1, false, devices.IER_ERBFI),
		func(v *svm.VMCB, r *svm.Regs) {
			e.input = []byte("k")
			e.insnExit(svm.ExitHLT, encHLT, nil)(v, r)
		},
		ioStep(COM1Base, 1, true, 0),
	)
	es := e.resume(steps...)
	if got := injected(es); len(got) != 1 || got[n+3] != vecUART {
		t.Errorf("interrupts injected at entries %v, want %#x at %d", got, vecUART, n+3)
	}
	if len(ft.halts) != 0 {
		t.Errorf("the host slept %v with input waiting", ft.halts)
	}
	if got := es[n+4].vmcb.State.RAX & 0xff; got != 'k' {
		t.Errorf("RBR %#x, want 'k'", got)
	}
}

// TestACPIPowerOff: SLP_EN with SLP_TYP = S5 in PM1a_CNT ends the VM as an
// exit with status 0; other sleep types, or no SLP_EN, do not.
func TestACPIPowerOff(t *testing.T) {
	const cnt = pmControlPort
	e := newEnv(t, featNRIP)
	e.boot(Mode64)
	stop := e.stopped(
		ioStep(cnt, 2, false, 5<<acpipm.SLP_TYP_SHIFT),               // S5 without SLP_EN
		ioStep(cnt, 2, false, 1<<acpipm.SLP_TYP_SHIFT|acpipm.SLP_EN), // S1: not modelled
		ioStep(cnt, 2, true, 0),                                      // reads SCI_EN
		ioStep(cnt, 2, false, 5<<acpipm.SLP_TYP_SHIFT|acpipm.SLP_EN), // poweroff
		e.cpuidStep(0, 0),
	)
	if n := len(e.runner.entries); n != 4 {
		t.Errorf("%d VMRUNs, want 4 (none after the power-off)", n)
	}
	if got := e.runner.entries[3].vmcb.State.RAX; got&acpipm.SCI_EN == 0 {
		t.Errorf("PM1a_CNT read %#x, SCI_EN clear", got)
	}
	if stop.Kind != StopExited || stop.Status != 0 || !strings.Contains(stop.Reason, "S5") {
		t.Errorf("power-off: %+v", stop)
	}
}

// TestGuestReset: RST_CNT (0xCF9) with RST_CPU, or the i8042's pulse
// command 0xFE, ends the VM as a reset; SYS_RST alone does not.
func TestGuestReset(t *testing.T) {
	for _, c := range []struct {
		name   string
		steps  func(e *env) []step
		vmruns int // before the reset
	}{
		{"0xcf9", func(e *env) []step {
			return []step{
				ioStep(legacy.RST_CNT, 1, false, legacy.SYS_RST), // selects the reset, starts none
				ioStep(legacy.RST_CNT, 1, true, 0),
				ioStep(legacy.RST_CNT, 1, false, legacy.SYS_RST|legacy.RST_CPU),
				e.cpuidStep(0, 0),
			}
		}, 3},
		{"i8042", func(e *env) []step {
			return []step{ioStep(0x64, 1, false, 0xfe), e.cpuidStep(0, 0)}
		}, 1},
	} {
		e := newEnv(t, featNRIP)
		e.boot(Mode64)
		stop := e.stopped(c.steps(e)...)
		if n := len(e.runner.entries); n != c.vmruns {
			t.Errorf("%s: %d VMRUNs, want %d", c.name, n, c.vmruns)
		}
		if c.vmruns == 3 {
			if got := e.runner.entries[2].vmcb.State.RAX & 0xff; got != legacy.SYS_RST {
				t.Errorf("RST_CNT read %#x, want SYS_RST", got)
			}
		}
		if stop.Kind != StopExited || stop.Status != 0 || !strings.Contains(stop.Reason, "reset") {
			t.Errorf("%s: %+v", c.name, stop)
		}
	}
}

// TestPlatformSnapshot: the LAPIC (timer included), the I/O APIC and the
// vCPU's deferred interrupt and halt state survive save and restore, and
// the restored VM runs on: the deferred interrupt first, then the timer in
// VM time that continued from the save.
func TestPlatformSnapshot(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withTimer(1_000_000_000)
	dev := snapshot.NewMemDevice(32<<20, 512)
	st := e.withStore(dev)
	vm := e.boot(Mode64)
	a, io := vm.PC.LAPIC, vm.PC.IOAPIC
	enableLAPIC(vm)
	a.Write(lapic.TPR, 4, 0x10)
	a.Write(lapic.LVT_TIMER, 4, 0x50)
	a.Write(lapic.TIMER_DCR, 4, lapic.TIMER_DCR_BY_1)
	a.Write(lapic.TIMER_ICR, 4, 1_000_000)
	io.Write(ioapic.IOREGSEL, 4, uint64(redLow(4)))
	io.Write(ioapic.IOWIN, 4, vecUART|ioapic.TRIGGER)
	io.Write(ioapic.IOREGSEL, 4, uint64(redHigh(4)))
	io.Write(ioapic.IOWIN, 4, 0x03<<24)
	// 0x41 was taken from the LAPIC, its delivery cut short by an exit
	// whose handler injected an exception: it waits in deferred.
	a.Deliver(0x41, false)
	a.Ack(0x41)
	vm.VCPU.deferred = evIntr(0x41)
	vm.VCPU.halted = true
	setIF(vm.VCPU.vmcb)
	e.tsc += 250_000 // the timer has 750000 ns to go
	if _, err := vm.Save(st, nil, 0, nil); err != nil {
		t.Fatal(err)
	}

	lapicRegs := []uint64{lapic.ID, lapic.VER, lapic.TPR, lapic.PPR, lapic.LDR, lapic.DFR, lapic.SVR,
		lapic.ISR + 0x20, lapic.IRR + 0x20, lapic.LVT_TIMER, lapic.LVT_LINT0, lapic.LVT_ERROR,
		lapic.TIMER_ICR, lapic.TIMER_CCR, lapic.TIMER_DCR}
	read := func(vm *VM) (l []uint64, redLo, redHi, regsel uint64) {
		for _, off := range lapicRegs {
			l = append(l, vm.PC.LAPIC.Read(off, 4))
		}
		io := vm.PC.IOAPIC
		regsel = io.Read(ioapic.IOREGSEL, 4)
		io.Write(ioapic.IOREGSEL, 4, uint64(redLow(4)))
		redLo = io.Read(ioapic.IOWIN, 4)
		io.Write(ioapic.IOREGSEL, 4, uint64(redHigh(4)))
		redHi = io.Read(ioapic.IOWIN, 4)
		return
	}
	wantL, wantLo, wantHi, wantSel := read(vm)
	if wantL[13] != 750_000 || wantLo != vecUART|ioapic.TRIGGER || wantHi != 0x03<<24 || wantSel != uint64(redHigh(4)) {
		t.Fatalf("before the save: CCR %d, entry %#x:%#x, IOREGSEL %#x", wantL[13], wantHi, wantLo, wantSel)
	}

	// A fresh machine whose TSC is far behind.
	e2 := newEnv(t, featNRIP)
	ft2 := e2.withTimer(1_000_000_000)
	e2.tsc = 77
	rvm, _, err := Restore(e2.plat, e2.withStore(dev), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rvm.Destroy()
	e2.vm = rvm
	if !bytes.Equal(rvm.PC.LAPIC.MarshalState(), vm.PC.LAPIC.MarshalState()) {
		t.Error("LAPIC state differs after restore")
	}
	gotL, gotLo, gotHi, gotSel := read(rvm)
	for i, off := range lapicRegs {
		if gotL[i] != wantL[i] {
			t.Errorf("LAPIC register %#x: %#x after restore, %#x saved", off, gotL[i], wantL[i])
		}
	}
	if gotLo != wantLo || gotHi != wantHi || gotSel != wantSel {
		t.Errorf("IOAPIC entry %#x:%#x IOREGSEL %#x after restore, want %#x:%#x %#x", gotHi, gotLo, gotSel, wantHi, wantLo, wantSel)
	}
	if rvm.VCPU.deferred != evIntr(0x41) || !rvm.VCPU.halted {
		t.Errorf("vCPU deferred %#x halted %v after restore", rvm.VCPU.deferred, rvm.VCPU.halted)
	}
	if d, hostD := rvm.clock.Next(), rvm.hostTSCAt(rvm.clock.Next()); d != 2_000_000 || hostD != 77+750_000 {
		t.Errorf("restored timer due at VM time %d (host TSC %d), want 2000000 (%d)", d, hostD, 77+750_000)
	}

	// Run on: the deferred interrupt at once (the halted vCPU has one to
	// take), then the timer once VM time reaches it.
	es := e2.resume(func(v *svm.VMCB, r *svm.Regs) {
		e2.tsc += 750_000
		e2.cpuidStep(0, 0)(v, r)
	})
	if got := es[0].vmcb.Control.EventInj; got != evIntr(0x41) {
		t.Errorf("first VMRUN after restore: EVENTINJ %#x, want the deferred %#x", got, evIntr(0x41))
	}
	if got := es[1].vmcb.Control.EventInj; got != evIntr(0x50) {
		t.Errorf("after the timer's deadline: EVENTINJ %#x, want %#x", got, evIntr(0x50))
	}
	if len(ft2.halts) != 0 {
		t.Errorf("the restored halted vCPU slept %v with an interrupt deferred", ft2.halts)
	}
}

// TestUARTInterruptAfterRestore: the UART's interrupt line keeps working
// across save and restore: a guest resumed with its THR-empty interrupt
// active reads IIR (the line drops) and transmits (the line rises again:
// an edge for the I/O APIC).
func TestUARTInterruptAfterRestore(t *testing.T) {
	e := newEnv(t, featNRIP)
	dev := snapshot.NewMemDevice(32<<20, 512)
	st := e.withStore(dev)
	vm := e.boot(Mode64)
	steps := e.routeSteps(4, vecUART)
	steps[0] = withIF(steps[0])
	n := len(steps)
	steps = append(steps,
		ioStep(uartMCR, 1, false, devices.MCR_OUT2),
		ioStep(uartIER, 1, false, devices.IER_ETBEI), // n+2: 0x34
		e.eoiStep(), // the handler ends without reading IIR
	)
	es := e.resume(steps...)
	if got := injected(es); len(got) != 1 || got[n+2] != vecUART {
		t.Fatalf("before the save: interrupts injected at %v", got)
	}
	if _, err := vm.Save(st, nil, 0, nil); err != nil {
		t.Fatal(err)
	}

	e2 := newEnv(t, featNRIP)
	rvm, _, err := Restore(e2.plat, e2.withStore(dev), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rvm.Destroy()
	e2.vm = rvm
	es = e2.resume(
		ioStep(uartIIR, 1, true, 0),     // THR empty: read, the line drops
		ioStep(COM1Base, 1, false, 'z'), // THR empty again: the line rises
		e2.cpuidStep(0, 0),
	)
	if iir := es[1].vmcb.State.RAX & 0x0f; iir != devices.IIR_THRI {
		t.Fatalf("IIR %#x after restore, want THR empty", iir)
	}
	if got := injected(es); len(got) != 1 || got[2] != vecUART {
		t.Errorf("after restore: interrupts injected at entries %v, want %#x at 2 after the transmit "+
			"(PC.uartLevel is not restored: it restarts false while the restored I/O APIC pin 4 is high, so the "+
			"line's drop at the IIR read never reaches the I/O APIC and the next rise is no edge)", got, vecUART)
	}
}
