package kernel

import (
	"math/bits"

	"tamavisor/kernel/event"
)

// HostTimer is the host's preemption timer (the local APIC timer on the
// machine): armed for the VM's next deadline, its interrupt makes the CPU
// leave the guest (INTR intercept) however the guest runs.
type HostTimer interface {
	// Arm makes the timer fire at the host TSC value deadline (at once if
	// it has passed).
	Arm(deadline uint64)
	// HaltUntil sleeps until the host TSC reaches deadline or another
	// interrupt arrives.
	HaltUntil(deadline uint64)
}

const nsPerSecond = 1_000_000_000

// guestTSC is the guest's TSC now: the host's plus the VMCB offset.
func (vm *VM) guestTSC() uint64 {
	return vm.plat.TSC() + vm.VCPU.vmcb.Control.TSCOffset
}

// now is VM time in nanoseconds: the guest TSC at the host's TSC rate. It
// continues across save and restore with the guest TSC (Restore sets the
// offset), so device deadlines saved as VM time stay valid.
func (vm *VM) now() int64 {
	hz := vm.plat.TSCHz
	if hz == 0 {
		return 0
	}
	hi, lo := bits.Mul64(vm.guestTSC(), nsPerSecond)
	if hi >= hz {
		return event.Never - 1
	}
	ns, _ := bits.Div64(hi, lo, hz)
	return int64(min(ns, uint64(event.Never-1)))
}

// hostTSCAt converts VM time t (ns) to the host TSC value when it comes.
func (vm *VM) hostTSCAt(t int64) uint64 {
	hz := vm.plat.TSCHz
	if t <= 0 || hz == 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(t), hz)
	if hi >= nsPerSecond {
		return ^uint64(0)
	}
	g, rem := bits.Div64(hi, lo, nsPerSecond)
	if rem != 0 {
		g++ // round up: at the TSC returned, VM time has reached t
	}
	return g - vm.VCPU.vmcb.Control.TSCOffset
}

// nextDeadline is the host TSC of the VM's next event: a guest device
// timer or the next console and control-channel service.
func (vm *VM) nextDeadline() uint64 {
	d := vm.nextService
	if t := vm.clock.Next(); t != event.Never {
		d = min(d, vm.hostTSCAt(t))
	}
	return d
}

// armPreemption arms the host timer for the next deadline before the
// guest runs, so that a guest that never exits is still interrupted when
// a device timer is due or the console must be served.
func (vm *VM) armPreemption() {
	if t := vm.plat.Timer; t != nil {
		t.Arm(vm.nextDeadline())
	}
}

// idle runs while the vCPU is halted with interrupts enabled: the host
// sleeps until the next deadline instead of spinning, fires due timers,
// and returns when the guest has an interrupt to take or its halt has
// lasted until the next console service (a wake-up without an interrupt,
// which HLT permits: guests loop on it).
func (vm *VM) idle() {
	v := vm.VCPU
	t := vm.plat.Timer
	for v.halted && vm.stop == nil {
		if t == nil || v.interruptible() || vm.plat.TSC() >= vm.nextService {
			v.halted = false
			return
		}
		t.HaltUntil(vm.nextDeadline())
		vm.clock.Run()
	}
}
