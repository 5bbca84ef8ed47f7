package kernel

import "tamavisor/svm"

// Interrupt delivery to the vCPU (APM vol. 2, 15.20 "Event Injection" and
// 15.21 "Interrupt and LAPIC Support").
//
// Before each VMRUN, the highest-priority interrupt the local APIC would
// deliver is injected through EVENTINJ when the guest can take it (RFLAGS.IF
// set, no interrupt shadow after STI or MOV SS) and nothing else is being
// injected. Otherwise a virtual interrupt (V_IRQ) is requested with the
// VINTR intercept: the CPU exits as soon as the guest could take an
// interrupt (an interrupt window), and the next VMRUN injects it.
//
// An interrupt whose delivery an exit interrupted comes back in EXITINTINFO
// and is re-injected first (handleExit). If the exit handler injects an
// exception instead (e.g. #DB reflected), the interrupt was already taken
// from the APIC: it waits in deferred and is injected on the VMRUN after.

// windowPriority is V_INTR_PRIO for a window request: the highest, with
// V_IGN_TPR, so that the guest's TPR (the APIC model's) alone decides.
const windowPriority = 0xf << svm.VIntrPrioShift

// deliverInterrupt runs before each VMRUN.
func (v *VCPU) deliverInterrupt() {
	c, s := &v.vmcb.Control, &v.vmcb.State
	if c.EventInj&svm.EventValid != 0 {
		if v.deferred != 0 || v.vm.PC.pending() {
			v.requestWindow() // come back after this event is delivered
		}
		return
	}
	blocked := s.RFLAGS&svm.RFLAGSIF == 0 || c.InterruptShadow&svm.InterruptShadowMask != 0
	if v.deferred != 0 {
		// Still pending for the guest: it waits for IF like any other.
		if blocked {
			v.requestWindow()
			return
		}
		c.EventInj, v.deferred = v.deferred, 0
		v.clearWindow()
		return
	}
	vec, ok := v.vm.PC.LAPIC.Pending()
	if !ok {
		v.clearWindow()
		return
	}
	if blocked {
		v.requestWindow()
		return
	}
	v.vm.PC.LAPIC.Ack(vec)
	c.EventInj = svm.Event{Vector: vec, Type: svm.EventIntr}.Encode()
	v.vm.IRQsInjected++
	v.clearWindow()
}

// pending reports whether the local APIC has an interrupt to deliver.
func (pc *PC) pending() bool {
	_, ok := pc.LAPIC.Pending()
	return ok
}

func (v *VCPU) requestWindow() {
	c := &v.vmcb.Control
	c.VIntr = c.VIntr&^(svm.VIntrPrioMask) | svm.VIntrIRQ | svm.VIntrIgnTPR | windowPriority
	c.InterceptMisc1 |= svm.InterceptVINTR
}

func (v *VCPU) clearWindow() {
	c := &v.vmcb.Control
	c.VIntr &^= svm.VIntrIRQ | svm.VIntrIgnTPR | svm.VIntrPrioMask
	c.InterceptMisc1 &^= svm.InterceptVINTR
}

// interruptible reports whether the halted vCPU has an interrupt to take.
func (v *VCPU) interruptible() bool {
	return v.deferred != 0 || v.vm.PC.pending()
}

// isInterrupt reports whether an EVENTINJ/EXITINTINFO value is an
// external interrupt or NMI (not an exception or software interrupt).
func isInterrupt(e uint64) bool {
	t := svm.EventType((e & svm.EventTypeMask) >> svm.EventTypeShift)
	return t == svm.EventIntr || t == svm.EventNMI
}
