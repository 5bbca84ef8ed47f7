package kernel

import (
	"strings"
	"testing"
	"time"

	"tamavisor/svm"
)

// TestExitBudget: a guest that exits without end (an exit storm) stops
// with StopBudget at the exit count given, classified "budget".
func TestExitBudget(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	vm.SetBudget(0, 5)
	var steps []step
	for range 10 {
		steps = append(steps, exitStep(svm.ExitINTR, 0, 0))
	}
	stop := e.stopped(steps...)
	if stop.Kind != StopBudget || stop.Class != ClassBudget || vm.VCPU.Exits != 5 {
		t.Fatalf("stop %v (kind %d, class %q) after %d exits, want the budget after 5", stop, stop.Kind, stop.Class, vm.VCPU.Exits)
	}
	if !strings.Contains(stop.String(), "exit budget of 5 exits") {
		t.Errorf("stop reads %q", stop)
	}
}

// TestTimeBudget: a guest that never exits on its own is stopped when its
// VM time budget ends: the host timer is armed for the budget's deadline
// (the only event), and the preemption exit it causes ends the VM.
func TestTimeBudget(t *testing.T) {
	e := newEnv(t, featNRIP)
	ft := e.withTimer(1_000_000_000) // 1 GHz: a TSC cycle is a nanosecond
	e.plat.ServiceInterval = 1 << 62 // no console service in the way
	vm := e.boot(Mode64)
	vm.SetBudget(50*time.Millisecond, 0)
	start := e.tsc
	spin := func(v *svm.VMCB, r *svm.Regs) {
		// The guest spun until the host timer fired at its deadline.
		e.tsc = ft.arms[len(ft.arms)-1]
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
	stop := e.stopped(spin, spin, spin)
	if stop.Kind != StopBudget || stop.Class != ClassBudget {
		t.Fatalf("stop %v, want the time budget", stop)
	}
	if got := e.tsc - start; got < uint64(50*time.Millisecond) || got > uint64(51*time.Millisecond) {
		t.Errorf("stopped after %d ns of VM time, want 50 ms", got)
	}
	if last := ft.arms[len(ft.arms)-1]; last != start+uint64(50*time.Millisecond) {
		t.Errorf("host timer armed for %v, want the budget's end %d last", ft.arms, start+uint64(50*time.Millisecond))
	}
}

// TestBudgetLimits: a huge time budget does not overflow into an instant
// stop, and a time budget without a known TSC rate is refused, not
// silently never due.
func TestBudgetLimits(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withTimer(1_000_000_000)
	vm := e.boot(Mode64)
	if err := vm.SetBudget(time.Duration(1<<63-1), 0); err != nil {
		t.Fatal(err)
	}
	e.resume(exitStep(svm.ExitINTR, 0, 0), exitStep(svm.ExitINTR, 0, 0))
	if s := vm.Stopped(); s != nil && s.Class == ClassBudget {
		t.Errorf("a budget of 292 years stopped the VM: %v", s)
	}
	e2 := newEnv(t, featNRIP)
	vm2 := e2.boot(Mode64)
	e2.plat.TSCHz = 0
	if err := vm2.SetBudget(time.Millisecond, 0); err == nil {
		t.Error("a time budget without a TSC rate was accepted")
	}
}
