package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime/debug"
	"time"

	"tamavisor/kernel/event"
	"tamavisor/snapshot"
)

// Live save: the snapshot is the VM's state at the request, but the guest
// runs on while its RAM is written. At the request the vCPU and device
// state are encoded and all guest RAM is write-protected in the nested
// page table (the guest's only pause of any length); from then on the
// save and the guest take turns on the CPU: liveTurn of saving, then
// liveGuestTurn of guest, the host preemption timer taking the CPU back
// from a guest that does not exit. A guest write to a page the save has
// not copied yet saves the page's old content first (ramTracker). The
// writer runs in its own goroutine, handed the CPU by the run loop and
// handing it back at a checkpoint when its turn is up, so that the two
// never run at once.
const (
	liveTurn      = 4 * time.Millisecond
	liveGuestTurn = 4 * time.Millisecond
)

// liveSave is a save in progress.
type liveSave struct {
	vm       *VM
	turn     chan uint64 // run loop -> writer: work until this TSC
	yielded  chan bool   // writer -> run loop: true when the save is over
	deadline uint64
	done     bool
	commit   *snapshot.Commit
	err      error

	out     io.Writer
	byGuest bool
	answer  func(err error) // tells the requester the outcome, or nil
	timer   *event.Timer

	start   uint64 // TSC of the request
	request uint64 // cycles the request paused the guest for
	longest uint64 // the longest turn of the writer, cycles
	// longestWait: the longest wait of a guest write for the disk
	// (ramTracker.releasedBelow), cycles
	longestWait uint64
	waitFor     func() bool // what the guest waits for (until), or nil
	turns       int
}

// liveCapable reports whether saves can run beside the guest: the host
// timer must be able to take the CPU back for the writer's turns.
func (vm *VM) liveCapable() bool {
	return vm.plat.Timer != nil && vm.plat.TSCHz != 0 && vm.plat.Store != nil
}

// errLiveUnavailable: a live save needs the host timer.
var errLiveUnavailable = errors.New("a live save needs the host preemption timer and a calibrated TSC")

// startLive begins a live save of the VM at this exit boundary. answer,
// if set, is called with the outcome when the save is over.
func (vm *VM) startLive(out io.Writer, byGuest bool, answer func(error)) error {
	p := vm.plat
	if p.Store == nil {
		return ErrNoDisk
	}
	if !vm.liveCapable() {
		return errLiveUnavailable
	}
	if vm.live != nil {
		vm.live.finish() // one save at a time: the earlier one completes first
	}
	// A lazy restore still filling RAM completes first (lazy.go).
	if err := vm.fillAll(); err != nil {
		return err
	}
	start := p.TSC()
	fz := vm.freeze()
	// The pages written since the last snapshot, for an increment on it;
	// protect starts the next set.
	var dirty []byte
	base := vm.track.base
	if vm.track.on {
		dirty = bytes.Clone(vm.track.dirty)
	}
	if byGuest && !vm.incremental(p.Store, base, dirty, true) {
		if err := vm.guestMayWriteFull(p.Store); err != nil {
			return err
		}
	}
	if err := vm.protect(nil); err != nil {
		return fmt.Errorf("write-protecting guest RAM: %w", err)
	}
	t := &vm.track
	t.startCopies(vm.Mem.Size)
	ls := &liveSave{vm: vm, turn: make(chan uint64), yielded: make(chan bool), out: out, byGuest: byGuest, answer: answer, start: start}
	vm.live = ls
	h := snapshot.Header{VMName: vm.Name, VMID: vm.ID}
	if p.Now != nil {
		h.Created = p.Now()
	}
	ram := snapshot.RAMOptions{Copied: func(gpa uint64) {
		t.copied(gpa)
		ls.checkpoint()
	}, Released: t.released}
	go func() {
		defer func() {
			if r := recover(); r != nil {
				ls.err = fmt.Errorf("hypervisor error in the live save: %v", r)
			}
			ls.done = true
			ls.yielded <- true
		}()
		ls.deadline = <-ls.turn
		// A collection would stop the guest for tens of milliseconds under
		// emulation; the save's allocations are bounded (cowMaxBytes,
		// the store's buffers), so none runs until the save is over.
		old := debug.SetGCPercent(-1)
		defer debug.SetGCPercent(old)
		// The guest runs while the writer waits for the disk.
		if d, ok := p.Store.Device().(snapshot.Idler); ok {
			d.SetIdle(ls.checkpoint)
			defer d.SetIdle(nil)
		}
		ls.commit, ls.err = vm.store(p.Store, p.SnapshotKey, h, fz, liveSource{vm}, dirty, base, true, byGuest, ram)
	}()
	fmt.Fprintf(ls.output(), "tamavisor: snapshot started, live: the guest runs on while its RAM is written\n")
	ls.timer = vm.clock.NewTimer(func(int64) { ls.runTurn(ls.cycles(liveTurn)) })
	ls.timer.Arm(vm.now() + int64(liveGuestTurn))
	ls.request = p.TSC() - start
	return nil
}

func (ls *liveSave) cycles(d time.Duration) uint64 {
	return uint64(float64(ls.vm.plat.TSCHz) * d.Seconds())
}

// checkpoint, in the writer's goroutine, hands the CPU back to the run
// loop when the writer's turn is up, and waits for its next turn.
func (ls *liveSave) checkpoint() {
	if ls == nil || ls.vm.plat.TSC() < ls.deadline && (ls.waitFor == nil || !ls.waitFor()) {
		return
	}

	ls.yielded <- false
	ls.deadline = <-ls.turn
}

// runTurn gives the writer the CPU for budget TSC cycles (or until the
// save is over), then re-arms the guest's turn.
func (ls *liveSave) runTurn(budget uint64) {
	if ls.done {
		return
	}
	t0 := ls.vm.plat.TSC()
	deadline := t0 + budget
	if budget == math.MaxUint64 || deadline < t0 {
		deadline = math.MaxUint64
	}
	ls.turn <- deadline
	over := <-ls.yielded
	ls.turns++
	ls.longest = max(ls.longest, ls.vm.plat.TSC()-t0)
	if over {
		ls.end()
		return
	}
	ls.timer.Arm(ls.vm.now() + int64(liveGuestTurn))
}

// output is where the save reports: the console, and the requester's
// writer (the control channel) too.
func (ls *liveSave) output() io.Writer {
	vm := ls.vm
	console := vm.hostOut()
	out := ls.out
	if _, toConsole := out.(hostWriter); out == nil || toConsole || out == vm.plat.Console {
		return console
	}
	return io.MultiWriter(console, out)
}

// finish completes the save now, with the guest held.
func (ls *liveSave) finish() {
	for ls != nil && !ls.done {
		ls.runTurn(math.MaxUint64)
	}
}

// until runs the writer, with the guest held, until cond holds or the
// save is over; the wait counts as a pause of the guest.
func (ls *liveSave) until(cond func() bool) {
	t0 := ls.vm.plat.TSC()
	ls.waitFor = cond // the writer hands the CPU back as soon as it holds
	for !ls.done && !cond() {
		ls.runTurn(ls.cycles(liveTurn))
	}
	ls.waitFor = nil
	ls.longestWait = max(ls.longestWait, ls.vm.plat.TSC()-t0)
}

// end reports a finished save and returns the VM to plain write tracking
// relative to the new snapshot.
func (ls *liveSave) end() {
	vm := ls.vm
	ls.timer.Stop()
	vm.live = nil
	t := &vm.track
	copies, waits := t.copies, t.waits
	t.endCopies(vm.plat.Pool)
	p := vm.plat
	hz := float64(p.TSCHz)
	out := ls.output()
	if ls.err != nil {
		// The pages written before the request are not in the dirty
		// set any more: the next save must be full.
		t.base = nil
		err := fmt.Errorf("snapshot failed, the guest keeps running and the previous snapshot stays valid: %w", ls.err)
		fmt.Fprintf(out, "tamavisor: %v\n", err)
		if ls.answer != nil {
			ls.answer(err)
		}
		return
	}
	c := ls.commit
	total := p.TSC() - ls.start

	longest := max(ls.longest, ls.longestWait)
	fmt.Fprintf(out, "tamavisor: snapshot saved: generation %d, slot %d, %s, %s on disk for %s of RAM, live in %.3f s: guest paused %.1f ms at the request, at most %.1f ms at a time after (%d turns), %d pages copied before the guest wrote them, %d writes waited for the disk\n",
		c.Generation, c.Slot, vm.saveKind(c), size(uint64(c.Length)), size(vm.Mem.Size), float64(total)/hz,
		float64(ls.request)/hz*1e3, float64(longest)/hz*1e3, ls.turns, copies, waits)
	vm.recordSave(SaveStats{Generation: c.Generation, Bytes: uint64(c.Length), Cycles: total,
		Live: true, PauseCycles: max(ls.request, longest), Copies: copies, Waits: waits, Incremental: c.Incremental(p.Store),
		Phases: p.Store.LastSaveProfile()})
	t.base = c
	if !ls.byGuest {
		p.operatorGen = c.Generation
	}
	if ls.answer != nil {
		ls.answer(nil)
	}
}
