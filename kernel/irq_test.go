package kernel

// Interrupt delivery from the local APIC model to the vCPU: EVENTINJ when
// the guest can take an interrupt, an interrupt window (V_IRQ + VINTR
// intercept) when it cannot, re-injection and deferral of an interrupt an
// exit cut short.

import (
	"testing"

	"tamavisor/kernel/devices/lapic"
	"tamavisor/svm"
)

// evIntr is the EVENTINJ encoding of external interrupt vector.
func evIntr(vector uint8) uint64 {
	return svm.Event{Vector: vector, Type: svm.EventIntr}.Encode()
}

// enableLAPIC software-enables the LAPIC (SVR.ASE, spurious vector 0xff).
func enableLAPIC(vm *VM) { vm.PC.LAPIC.Write(lapic.SVR, 4, 0x1ff) }

// vecBit reads vector's bit in the LAPIC's ISR, TMR or IRR (base).
func vecBit(vm *VM, base uint64, vector uint8) bool {
	w := vm.PC.LAPIC.Read(base+uint64(vector/32)*0x10, 4)
	return w&(1<<(vector%32)) != 0
}

// windowOpen reports whether the VMCB of en asks for an interrupt window.
func windowOpen(en *entry) (vIRQ, intercept bool) {
	c := &en.vmcb.Control
	return c.VIntr&svm.VIntrIRQ != 0, c.InterceptMisc1&svm.InterceptVINTR != 0
}

// eoiStep is the guest's EOI: a store of 0 to the LAPIC's EOI register.
func (e *env) eoiStep() step {
	return e.mmioStep(lapic.DefaultBase+lapic.EOI, encStoreZero, nil)
}

func setIF(v *svm.VMCB) { v.State.RFLAGS |= svm.RFLAGSIF }

// TestIRQInjectPriority: with IF=1 the highest pending vector is injected
// on the next VMRUN and moves IRR -> ISR; a vector of a lower or equal
// priority class waits for the EOI, without asking for a window.
func TestIRQInjectPriority(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		setIF(vm.VCPU.vmcb)
		enableLAPIC(vm)
		for _, v := range []uint8{0x40, 0x80, 0x30} {
			vm.PC.LAPIC.Deliver(v, false)
		}
		var irr80, isr80 bool
		var pendingAfter bool
		es := e.resume(
			func(v *svm.VMCB, r *svm.Regs) {
				irr80, isr80 = vecBit(vm, lapic.IRR, 0x80), vecBit(vm, lapic.ISR, 0x80)
				vec, ok := vm.PC.LAPIC.Pending()
				pendingAfter = ok && vec == 0x80
				e.cpuidStep(0, 0)(v, r)
			},
			e.eoiStep(), // retires 0x80: 0x40 comes
			e.eoiStep(), // retires 0x40: 0x30 comes
			e.eoiStep(), // retires 0x30: nothing left
		)
		for i, want := range []uint64{evIntr(0x80), 0, evIntr(0x40), evIntr(0x30), 0} {
			if got := es[i].vmcb.Control.EventInj; got != want {
				t.Errorf("entry %d: EVENTINJ %#x, want %#x", i, got, want)
			}
		}
		if irr80 || !isr80 || pendingAfter {
			t.Errorf("after injecting 0x80: IRR bit %v ISR bit %v, still pending %v; want it moved IRR -> ISR", irr80, isr80, pendingAfter)
		}
		if irq, icpt := windowOpen(&es[1]); irq || icpt {
			t.Errorf("entry 1: window requested (V_IRQ %v, VINTR intercept %v) for an interrupt PPR blocks", irq, icpt)
		}
		for _, v := range []uint8{0x30, 0x40, 0x80} {
			if vecBit(vm, lapic.ISR, v) || vecBit(vm, lapic.IRR, v) {
				t.Errorf("vector %#x still in ISR or IRR after its EOI", v)
			}
		}
		if vm.IRQsInjected != 3 {
			t.Errorf("IRQsInjected = %d, want 3", vm.IRQsInjected)
		}
	})
}

// TestIRQSoftwareDisabledLAPIC: a LAPIC that is not software-enabled
// presents nothing.
func TestIRQSoftwareDisabledLAPIC(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	setIF(vm.VCPU.vmcb)
	vm.PC.LAPIC.Deliver(0x40, false) // dropped: SVR.ASE is clear after reset
	es := e.resume(e.mmioWrite(lapic.DefaultBase+lapic.SVR, 0x1ff), e.cpuidStep(0, 0))
	for i, en := range es {
		if en.vmcb.Control.EventInj != 0 {
			t.Errorf("entry %d: EVENTINJ %#x from a disabled LAPIC", i, en.vmcb.Control.EventInj)
		}
	}
}

// TestIRQWindow: with IF=0 or an interrupt shadow the interrupt is not
// injected; a window is requested, and the VINTR exit leads to the
// injection once the guest can take it.
func TestIRQWindow(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		enableLAPIC(vm)
		vm.PC.LAPIC.Write(lapic.TPR, 4, 0x20) // the LAPIC's TPR decides, not V_TPR
		vm.PC.LAPIC.Deliver(0x40, false)
		es := e.resume(
			e.cpuidStep(0, 0), // IF still 0
			func(v *svm.VMCB, r *svm.Regs) { // STI: IF=1 but in its shadow
				setIF(v)
				v.Control.InterruptShadow = 1
				v.Control.ExitCode = uint64(svm.ExitVINTR)
			},
			func(v *svm.VMCB, r *svm.Regs) { // the shadow is over
				v.Control.InterruptShadow = 0
				v.Control.ExitCode = uint64(svm.ExitVINTR)
			},
			e.cpuidStep(0, 0),
		)
		for i, c := range []struct {
			inj    uint64
			window bool
		}{{0, true}, {0, true}, {0, true}, {evIntr(0x40), false}, {0, false}} {
			en := &es[i]
			if got := en.vmcb.Control.EventInj; got != c.inj {
				t.Errorf("entry %d: EVENTINJ %#x, want %#x", i, got, c.inj)
			}
			irq, icpt := windowOpen(en)
			if irq != c.window || icpt != c.window {
				t.Errorf("entry %d: V_IRQ %v VINTR intercept %v, want window %v", i, irq, icpt, c.window)
			}
			vi := en.vmcb.Control.VIntr
			if vi&svm.VIntrMasking == 0 {
				t.Errorf("entry %d: V_INTR_MASKING lost: VIntr %#x", i, vi)
			}
			if c.window && (vi&svm.VIntrIgnTPR == 0 || vi&svm.VIntrPrioMask != 0xf<<svm.VIntrPrioShift) {
				t.Errorf("entry %d: window VIntr %#x, want V_IGN_TPR and priority 15", i, vi)
			}
			if en.vmcb.Control.InterceptMisc1&svm.InterceptHLT == 0 || en.vmcb.Control.InterceptMisc1&svm.InterceptINTR == 0 {
				t.Errorf("entry %d: other intercepts lost: %#x", i, en.vmcb.Control.InterceptMisc1)
			}
		}
		if vecBit(vm, lapic.IRR, 0x40) || !vecBit(vm, lapic.ISR, 0x40) {
			t.Error("0x40 not moved IRR -> ISR by its injection")
		}
	})
}

// TestIRQSTIHLT: "sti; hlt" with an interrupt pending: HLT exits in the STI
// shadow, which the HLT ends, so the interrupt is injected at once (no
// window, no sleep).
func TestIRQSTIHLT(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		ft := e.withTimer(1_000_000_000)
		vm := e.boot(Mode64)
		enableLAPIC(vm)
		vm.PC.LAPIC.Deliver(0x40, false)
		es := e.resume(e.insnExit(svm.ExitHLT, encHLT, func(v *svm.VMCB, r *svm.Regs) {
			setIF(v)
			v.Control.InterruptShadow = 1
		}))
		if irq, _ := windowOpen(&es[0]); !irq {
			t.Error("entry 0 (IF=0): no window requested")
		}
		if got := es[1].vmcb.Control.EventInj; got != evIntr(0x40) {
			t.Errorf("after sti; hlt: EVENTINJ %#x, want %#x", got, evIntr(0x40))
		}
		if got, want := es[1].vmcb.State.RIP, es[0].vmcb.State.RIP+1; got != want {
			t.Errorf("after sti; hlt: RIP %#x, want %#x", got, want)
		}
		if len(ft.halts) != 0 {
			t.Errorf("the host slept (%v) with an interrupt pending", ft.halts)
		}
	})
}

// TestIRQReinjectAndDefer: an interrupt taken from the LAPIC whose delivery
// an exit cut short is delivered again, not taken twice; when the exit's
// handler injects an exception, the interrupt follows on the VMRUN after.
func TestIRQReinjectAndDefer(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		setIF(vm.VCPU.vmcb)
		enableLAPIC(vm)
		vm.PC.LAPIC.Deliver(0x40, false)
		cut := func(st step) step {
			return func(v *svm.VMCB, r *svm.Regs) {
				st(v, r)
				v.Control.ExitIntInfo = evIntr(0x40)
			}
		}
		es := e.resume(
			cut(exitStep(svm.ExitINTR, 0, 0)),    // host preemption during delivery
			cut(e.msrStep(false, 0x12345678, 0)), // RDMSR of an unknown MSR: #GP, 0x40 after it
			exitStep(svm.ExitVINTR, 0, 0),
			e.cpuidStep(0, 0),
		)
		for i, want := range []uint64{evIntr(0x40), evIntr(0x40), evGP, evIntr(0x40), 0} {
			if got := es[i].vmcb.Control.EventInj; got != want {
				t.Errorf("entry %d: EVENTINJ %#x, want %#x", i, got, want)
			}
		}
		if irq, icpt := windowOpen(&es[2]); !irq || !icpt {
			t.Errorf("entry 2 (#GP injected, 0x40 deferred): V_IRQ %v VINTR intercept %v, want a window", irq, icpt)
		}
		if irq, icpt := windowOpen(&es[3]); irq || icpt {
			t.Errorf("entry 3 (deferred 0x40 injected): window still requested (%v %v)", irq, icpt)
		}
		if vm.VCPU.deferred != 0 {
			t.Errorf("deferred %#x left after its injection", vm.VCPU.deferred)
		}
		if vm.IRQsInjected != 1 {
			t.Errorf("IRQsInjected = %d, want 1 (one interrupt, delivered again)", vm.IRQsInjected)
		}
		if _, ok := vm.PC.LAPIC.Pending(); ok || vecBit(vm, lapic.IRR, 0x40) {
			t.Error("0x40 pending again in the LAPIC: taken twice")
		}
	})
}

// TestIRQWindowWhileInjecting: an interrupt pending while another event is
// being injected asks for a window instead of overwriting EVENTINJ.
func TestIRQWindowWhileInjecting(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	setIF(vm.VCPU.vmcb)
	enableLAPIC(vm)
	es := e.resume(
		func(v *svm.VMCB, r *svm.Regs) {
			vm.PC.LAPIC.Deliver(0x50, false) // arrives during the exit
			e.msrStep(false, 0x12345678, 0)(v, r)
		},
		exitStep(svm.ExitVINTR, 0, 0),
	)
	if got := es[1].vmcb.Control.EventInj; got != evGP {
		t.Errorf("entry 1: EVENTINJ %#x, want #GP %#x", got, uint64(evGP))
	}
	if irq, icpt := windowOpen(&es[1]); !irq || !icpt {
		t.Errorf("entry 1: no window for the pending 0x50 (V_IRQ %v intercept %v)", irq, icpt)
	}
	if got := es[2].vmcb.Control.EventInj; got != evIntr(0x50) {
		t.Errorf("entry 2: EVENTINJ %#x, want %#x", got, evIntr(0x50))
	}
}
