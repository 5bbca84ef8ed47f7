package kernel

import (
	"bytes"
	"strings"
	"testing"

	"tamavisor/snapshot"
	"tamavisor/svm"
)

// guestStore is a guest store of val at gpa as the CPU does it under
// nested paging: on a write-protected page it exits with a nested page
// fault and the store runs again after it (the step puts itself back at
// the front of the script); once stored it exits on a host interrupt.
func (e *env) guestStore(gpa uint64, val []byte) step {
	var st step
	st = func(v *svm.VMCB, r *svm.Regs) {
		e.tsc += 10_000
		if e.writeFault(v, gpa, st) {
			return
		}
		copy(e.vm.Mem.ram[gpa:], val)
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
	return st
}

// writeFault makes this entry exit with the nested page fault of a guest
// write to gpa, if its page is write-protected, and puts st back at the
// front of the script to run again after it; false: the page is writable.
func (e *env) writeFault(v *svm.VMCB, gpa uint64, st step) bool {
	if _, p, ok := e.vm.NPT.Translate(gpa &^ (svm.PageSize - 1)); !ok || p&svm.PermWrite != 0 {
		return false
	}
	v.Control.ExitCode = uint64(svm.ExitNPF)
	v.Control.ExitInfo1 = svm.NPFPresent | svm.NPFWrite | svm.NPFFinalAddr
	v.Control.ExitInfo2 = gpa
	e.runner.steps = append([]step{st}, e.runner.steps...)
	return true
}

// guestRuns is the guest running for ms milliseconds (a 1 GHz TSC) until
// a host interrupt.
func (e *env) guestRuns(ms uint64) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		e.tsc += ms * 1_000_000
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
}

func hypercallStep(e *env, fn, rbx uint64) step {
	return e.insnExit(svm.ExitVMMCALL, encVMMCALL, func(v *svm.VMCB, r *svm.Regs) {
		v.State.RAX = fn
		r.RBX = rbx
	})
}

// withWorkClock gives e the host timer and a 1 GHz TSC that also
// advances as the hypervisor works (each read), as live saves take turns
// by it.
func (e *env) withWorkClock() *env {
	e.withTimer(1_000_000_000)
	e.plat.TSC = func() uint64 { e.tsc += 2_000; return e.tsc }
	return e
}

// playLive plays steps, then runs of 1 ms of the guest and SNAPSHOT_WAIT:
// the script must run out, and SNAPSHOT_WAIT return 0.
func (e *env) playLive(runs int, steps ...step) {
	e.t.Helper()
	for range runs {
		steps = append(steps, e.guestRuns(1))
	}
	steps = append(steps, hypercallStep(e, HCSnapshotWait, 0))
	if stop := e.play(steps...); !e.runner.exhausted {
		e.t.Fatalf("VM stopped: %v\n%s", stop, e.console.String())
	}
	if rax := last(e.runner.entries).vmcb.State.RAX; rax != 0 {
		e.t.Fatalf("SNAPSHOT_WAIT returned %#x\n%s", rax, e.console.String())
	}
}

// restoredFrom restores the newest snapshot of dev into a fresh
// environment with e's CPU features; the VM is destroyed with the test.
func (e *env) restoredFrom(dev snapshot.BlockDevice) *VM {
	e.t.Helper()
	e2 := newEnv(e.t, e.plat.Features)
	rvm, _, err := Restore(e2.plat, e2.withStore(dev), nil)
	if err != nil {
		e.t.Fatalf("restore: %v", err)
	}
	e.t.Cleanup(rvm.Destroy)
	return rvm
}

// TestLiveSave: a live save returns to the guest at once, the guest's
// writes during the save reach its RAM, the snapshot holds the RAM as it
// was at the request (the pages the guest wrote ahead of the save were
// copied first), the save runs in turns beside the guest, and
// SNAPSHOT_WAIT returns its result.
func TestLiveSave(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.withWorkClock()
		dev := snapshot.NewMemDevice(32<<20, 512)
		e.withStore(dev)
		vm := e.boot(Mode64)
		const pageA, pageB = 0x200000, 0x3ff000 // B at the end of RAM: the save reaches it last
		vm.Mem.WriteGPA(pageA, []byte("old A"))
		vm.Mem.WriteGPA(pageB, []byte("old B"))
		steps := []step{
			hypercallStep(e, HCSnapshot, SnapshotLive),
			e.guestStore(pageA, []byte("new A")),
			e.guestStore(pageB, []byte("new B")),
		}
		for range 40 {
			steps = append(steps, e.guestRuns(1))
		}
		steps = append(steps, hypercallStep(e, HCSnapshotWait, 0))
		stop := e.play(steps...)
		if !e.runner.exhausted {
			t.Fatalf("VM stopped: %v\n%s", stop, e.console.String())
		}
		es := e.runner.entries
		if rax := es[1].vmcb.State.RAX; rax != 0 {
			t.Fatalf("SNAPSHOT live returned %#x; console:\n%s", rax, e.console.String())
		}
		if rax := last(es).vmcb.State.RAX; rax != 0 {
			t.Fatalf("SNAPSHOT_WAIT returned %#x; console:\n%s", rax, e.console.String())
		}
		if !bytes.HasPrefix(vm.Mem.ram[pageA:], []byte("new A")) || !bytes.HasPrefix(vm.Mem.ram[pageB:], []byte("new B")) {
			t.Fatal("the guest's writes during the save did not reach its RAM")
		}
		ls := vm.LastSave
		if !ls.Live || ls.Generation != 1 || ls.Copies < 2 {
			t.Fatalf("last save %+v: want live, generation 1, both pages copied before the guest wrote them", ls)
		}
		con := e.console.String()
		if !strings.Contains(con, "snapshot saved: generation 1") || !strings.Contains(con, "live in") {
			t.Fatalf("console: %s", con)
		}
		// The save took turns beside the guest: the guest ran between
		// the request and the end (some 1 ms runs came before the end).
		if vm.track.saving || vm.live != nil {
			t.Fatal("save still marked in progress")
		}
		rvm := e.restoredFrom(dev)
		if !bytes.HasPrefix(rvm.Mem.ram[pageA:], []byte("old A")) || !bytes.HasPrefix(rvm.Mem.ram[pageB:], []byte("old B")) {
			t.Fatalf("the snapshot holds the guest's later writes: %q %q", rvm.Mem.ram[pageA:pageA+5], rvm.Mem.ram[pageB:pageB+5])
		}
		if rax := rvm.VCPU.vmcb.State.RAX; rax != resumedRAX {
			t.Errorf("resumed guest sees RAX %#x, want %d", rax, resumedRAX)
		}
	})
}

// TestLiveSaveLowHostMemory (a code review's finding): with the host pool
// nearly empty, the live save's copies must not take the page table the
// guest's write needs (its 2 MiB page is split): the save finishes with
// the guest held instead, and the guest runs on.
func TestLiveSaveLowHostMemory(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	dev := snapshot.NewMemDevice(32<<20, 512)
	e.withStore(dev)
	vm := e.boot(Mode64)
	const page = 0x200000
	vm.Mem.WriteGPA(page, []byte("old A"))
	for e.pool.FreeBytes() > cowChunk {
		if _, err := e.pool.AllocUncleared(svm.PageSize, svm.PageSize); err != nil {
			t.Fatal(err)
		}
	}
	steps := []step{hypercallStep(e, HCSnapshot, SnapshotLive), e.guestStore(page, []byte("new A"))}
	e.playLive(40, steps...)
	rvm := e.restoredFrom(dev)
	if !bytes.HasPrefix(rvm.Mem.ram[page:], []byte("old A")) {
		t.Fatalf("the snapshot holds %q, want the content at the request", rvm.Mem.ram[page:page+5])
	}
}

// TestLiveSaveCopyBudget: a guest that writes more pages ahead of the
// save than it may hold copies of makes the save finish at once, with
// the guest held: the snapshot is still the state at the request.
func TestLiveSaveCopyBudget(t *testing.T) {
	old := cowMaxBytes
	cowMaxBytes = svm.PageSize // one copy
	defer func() { cowMaxBytes = old }()
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	dev := snapshot.NewMemDevice(32<<20, 512)
	e.withStore(dev)
	vm := e.boot(Mode64)
	pages := []uint64{0x3fd000, 0x3fe000, 0x3ff000}
	for _, p := range pages {
		vm.Mem.WriteGPA(p, []byte("old"))
	}
	steps := []step{hypercallStep(e, HCSnapshot, SnapshotLive)}
	for _, p := range pages {
		steps = append(steps, e.guestStore(p, []byte("new")))
	}
	steps = append(steps, hypercallStep(e, HCSnapshotWait, 0))
	if stop := e.play(steps...); !e.runner.exhausted {
		t.Fatalf("VM stopped: %v", stop)
	}
	if vm.live != nil || vm.LastSave.Generation != 1 || vm.LastSave.Copies != 1 {
		t.Fatalf("last save %+v, live %v: want generation 1 done after one copy", vm.LastSave, vm.live != nil)
	}
	rvm := e.restoredFrom(dev)
	for _, p := range pages {
		if !bytes.HasPrefix(rvm.Mem.ram[p:], []byte("old")) {
			t.Errorf("page %#x: the snapshot holds %q, want the content at the request", p, rvm.Mem.ram[p:p+3])
		}
		if !bytes.HasPrefix(vm.Mem.ram[p:], []byte("new")) {
			t.Errorf("page %#x: the guest's write was lost", p)
		}
	}
}

// TestIncrementalSaves: after a save, RAM stays write-protected; the next
// save carries exactly the pages the guest wrote since (paused or live),
// as an increment chained on the last, and a restore of the newest
// rebuilds RAM exactly.
func TestIncrementalSaves(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	dev := snapshot.NewMemDevice(32<<20, 512)
	e.withStore(dev)
	vm := e.boot(Mode64)
	for gpa := uint64(0x100000); gpa < 0x300000; gpa += 0x1000 {
		vm.Mem.WriteGPA(gpa, []byte{byte(gpa >> 12), 1})
	}
	written := []uint64{0x101000, 0x250000, 0x250800, 0x3ff000} // 3 pages
	steps := []step{snapshotStep(e, 0)}
	for i, p := range written {
		steps = append(steps, e.guestStore(p, []byte{0xee, byte(i)}))
	}
	steps = append(steps, snapshotStep(e, 0), e.guestStore(0x102000, []byte("live")),
		hypercallStep(e, HCSnapshot, SnapshotLive), e.guestStore(0x103000, []byte("after")),
		e.guestRuns(20), hypercallStep(e, HCSnapshotWait, 0))
	if stop := e.play(steps...); !e.runner.exhausted {
		t.Fatalf("VM stopped: %v\n%s", stop, e.console.String())
	}
	con := e.console.String()
	for _, want := range []string{"generation 1, slot 0, full", "generation 2, slot 0, increment on generation 1 (3 pages written since)",
		"generation 3, slot 0, increment on generation 2 (1 pages written since)"} {
		if !strings.Contains(con, want) {
			t.Errorf("console lacks %q:\n%s", want, con)
		}
	}
	if len(vm.Saves) != 3 || !vm.Saves[1].Incremental || !vm.Saves[2].Incremental || !vm.Saves[2].Live {
		t.Fatalf("saves %+v", vm.Saves)
	}
	if vm.Saves[1].Bytes*4 > vm.Saves[0].Bytes {
		t.Errorf("the increment (%d bytes) is not much smaller than the full save (%d)", vm.Saves[1].Bytes, vm.Saves[0].Bytes)
	}
	e2 := newEnv(t, e.plat.Features)
	rvm, c, err := Restore(e2.plat, e2.withStore(dev), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rvm.Destroy()
	if c.Generation != 3 {
		t.Fatalf("restored generation %d, want 3", c.Generation)
	}
	// The live save holds RAM at its request: all but the write after it.
	want := bytes.Clone(vm.Mem.ram)
	copy(want[0x103000:], make([]byte, 5))
	want[0x103000], want[0x103001] = 3, 1
	// The test harness writes instruction bytes at the guest's RIP behind
	// the nested page table (insnExit): the code page is not compared.
	copy(want[testLoad:testLoad+svm.PageSize], rvm.Mem.ram[testLoad:])
	if !bytes.Equal(rvm.Mem.ram, want) {
		for i := range want {
			if rvm.Mem.ram[i] != want[i] {
				t.Fatalf("restored RAM differs first at %#x: %#x, want %#x", i, rvm.Mem.ram[i], want[i])
			}
		}
	}
}

// TestLiveIncrementCopiesCarriedOnly: once a live increment is being
// written, a guest write ahead of the writer to a page it does not carry
// takes no copy (its content comes from the base), while the snapshot
// still holds every page as at the request.
func TestLiveIncrementCopiesCarriedOnly(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	dev := &idleDev{MemDevice: snapshot.NewMemDevice(32<<20, 512)}
	e.withStore(dev)
	vm := e.boot(Mode64)
	const carriedLo, carriedHi, other = 0x100000, 0x300000, 0x3f0000
	vm.Mem.WriteGPA(other, []byte("base"))
	var gated step
	tries, fired := 0, false
	gated = func(v *svm.VMCB, r *svm.Regs) {
		e.tsc += 1_000_000
		v.Control.ExitCode = uint64(svm.ExitINTR)
		if tries++; tries > 100_000 {
			return // backstop: fails below
		}
		// The writer is in the RAM chunk, short of the page, and waits
		// for the disk.
		if tr := &vm.track; vm.live == nil || !dev.inSync || tr.copiedBelow == 0 || tr.copiedBelow >= other {
			e.runner.steps = append([]step{gated}, e.runner.steps...)
			return
		}
		e.runner.steps = append([]step{e.guestStore(other, []byte("late"))}, e.runner.steps...)
		dev.stopIdle, fired = true, true
	}
	steps := []step{snapshotStep(e, 0)}
	for gpa := uint64(carriedLo); gpa < carriedHi; gpa += svm.PageSize {
		steps = append(steps, e.guestStore(gpa, []byte("inc")))
	}
	steps = append(steps, hypercallStep(e, HCSnapshot, SnapshotLive), gated)
	e.playLive(20, steps...)
	if !fired {
		t.Fatalf("the guest never ran while the increment's pages were written\n%s", e.console.String())
	}
	if !bytes.HasPrefix(vm.Mem.ram[other:], []byte("late")) {
		t.Fatalf("the guest's write did not run\n%s", e.console.String())
	}
	if ls := vm.LastSave; !ls.Live || !ls.Incremental || ls.Copies != 0 {
		t.Fatalf("last save %+v: want a live increment that copied no page", ls)
	}
	rvm := e.restoredFrom(dev.MemDevice)
	if !bytes.HasPrefix(rvm.Mem.ram[other:], []byte("base")) || !bytes.HasPrefix(rvm.Mem.ram[carriedHi-svm.PageSize:], []byte("inc")) {
		t.Fatalf("restored %q at %#x; want base", rvm.Mem.ram[other:other+4], other)
	}
}

// idleDev: a MemDevice with asynchronous writes (applied at Sync) whose
// Sync waits for the device like blk.Device: it calls the idle hook
// between polls. inSync is true while it waits.
type idleDev struct {
	*snapshot.MemDevice
	pending []struct {
		p   []byte
		off int64
	}
	idle     func()
	inSync   bool
	stopIdle bool
}

func (d *idleDev) WriteAsync(p []byte, off int64) error {
	d.pending = append(d.pending, struct {
		p   []byte
		off int64
	}{p, off})
	return nil
}

func (d *idleDev) Sync() error {
	if len(d.pending) > 0 && d.idle != nil {
		d.inSync = true
		for i := 0; i < 20000 && !d.stopIdle; i++ {
			d.idle()
		}
		d.inSync = false
	}
	for _, w := range d.pending {
		copy(d.Data[w.off:], w.p)
	}
	d.pending = nil
	return nil
}

func (d *idleDev) SetIdle(f func()) { d.idle = f }

// WriteVAsync takes the segments in place, read only at Sync as
// WriteAsync's buffer (snapshot.VectorWriter).
func (d *idleDev) WriteVAsync(segs [][]byte, off int64) (bool, error) {
	for _, p := range segs {
		d.WriteAsync(p, off)
		off += int64(len(p))
	}
	return true, nil
}

// dataOnIdleDev boots a VM whose every page holds data, with its store on
// an idleDev, for the live-save races.
func dataOnIdleDev(t *testing.T) (*env, *idleDev, *VM) {
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	dev := &idleDev{MemDevice: snapshot.NewMemDevice(32<<20, 512)}
	e.withStore(dev)
	vm := e.boot(Mode64)
	for gpa := uint64(0); gpa < testMem; gpa += svm.PageSize {
		vm.Mem.WriteGPA(gpa+0x800, []byte{1})
	}
	return e, dev, vm
}

// TestLiveSaveWriteInFlight: a live save writes guest pages in place
// (zero copy); the guest writes a page the writer has passed while the
// device still has to read it (the fake device reads at Sync): the write
// waits for the device, the snapshot holds the old content and the
// guest the new.
func TestLiveSaveWriteInFlight(t *testing.T) {
	e, dev, vm := dataOnIdleDev(t)
	var target uint64 // the page written, once chosen
	done := false
	var gated step
	gated = func(v *svm.VMCB, r *svm.Regs) {
		e.tsc += 1_000_000
		v.Control.ExitCode = uint64(svm.ExitINTR)
		if done {
			return
		}
		tr := &vm.track
		if target == 0 {
			// A page the writer passed that the device has not read
			// yet: the guest runs while the writer waits for the disk.
			if vm.live == nil || !dev.inSync || tr.copiedBelow <= max(tr.releasedBelow, svm.PageSize) {
				e.runner.steps = append([]step{gated}, e.runner.steps...)
				return
			}
			target = tr.copiedBelow - svm.PageSize
		}
		if e.writeFault(v, target, gated) {
			return
		}
		if vm.live != nil && target >= tr.releasedBelow {
			t.Errorf("page %#x writable while the device may still read it (released below %#x)", target, tr.releasedBelow)
		}
		vm.Mem.ram[target] = 0xbb
		done = true
		dev.stopIdle = true
	}
	// A page ahead of the writer written first is copied; the writer
	// writes the pages around it in place.
	const ahead = 0x300000
	steps := []step{hypercallStep(e, HCSnapshot, SnapshotLive), e.guestStore(ahead, []byte("new")), gated}
	e.playLive(20, steps...)
	if !done {
		t.Fatalf("the guest's write never ran\n%s", e.console.String())
	}
	if ls := vm.LastSave; ls.Copies != 1 || ls.Waits == 0 || ls.Phases.InPlace != testMem-svm.PageSize {
		t.Fatalf("last save %+v: want 1 page copied, a write that waited for the disk, all the other pages (%d bytes) written in place",
			ls, testMem-svm.PageSize)
	}
	rvm := e.restoredFrom(dev.MemDevice)
	if got := rvm.Mem.ram[target]; got != 0 {
		t.Fatalf("the snapshot holds %#x at %#x, want 0 (the content at the request)", got, target)
	}
	if got := rvm.Mem.ram[ahead]; got != 0 {
		t.Fatalf("the snapshot holds %#x at %#x, want 0 (the content at the request)", got, ahead)
	}
}

// TestLiveSaveViewRace (a code review's finding): the guest writes, while the writer waits for the
// disk in the middle of a run of pages it viewed in place, a page of that
// run that is still to be copied into the stream.
func TestLiveSaveViewRace(t *testing.T) {
	e, dev, vm := dataOnIdleDev(t)
	const target = 0x1ff000 + 0xfff // the last byte of the second run of 256 pages
	vm.Mem.WriteGPA(target, []byte{0xaa})
	done := false
	var gated step
	gated = func(v *svm.VMCB, r *svm.Regs) {
		e.tsc += 1_000_000
		v.Control.ExitCode = uint64(svm.ExitINTR)
		if done {
			return
		}
		// The guest writes the last page of the writer's second run while
		// the writer waits for the disk in that run (the write waits for
		// the device too), if it gets the CPU there; else once the save
		// is over.
		if vm.live != nil && (!dev.inSync || vm.track.copiedBelow != 0x100000) {
			e.runner.steps = append([]step{gated}, e.runner.steps...)
			return
		}
		if e.writeFault(v, target, gated) {
			return
		}
		vm.Mem.ram[target] = 0xbb
		done = true
		dev.stopIdle = true
	}
	steps := []step{hypercallStep(e, HCSnapshot, SnapshotLive), gated}
	e.playLive(20, steps...)
	if !done {
		t.Fatalf("the guest's write never ran (copiedBelow %#x)\n%s", vm.track.copiedBelow, e.console.String())
	}
	rvm := e.restoredFrom(dev.MemDevice)
	if got := rvm.Mem.ram[target]; got != 0xaa {
		t.Fatalf("the snapshot holds %#x at %#x, want %#x (the content at the request)", got, target, 0xaa)
	}
}

// TestSnapshotFullDuringLiveSave: SNAPSHOT with SnapshotFull while the
// guest's earlier live save runs must write a full snapshot.
func TestSnapshotFullDuringLiveSave(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	dev := snapshot.NewMemDevice(32<<20, 512)
	e.withStore(dev)
	vm := e.boot(Mode64)
	steps := []step{
		snapshotStep(e, 0), // generation 1, full: the base
		e.guestStore(0x200000, []byte("x")),
		hypercallStep(e, HCSnapshot, SnapshotLive), // generation 2, increment, still running
		hypercallStep(e, HCSnapshot, SnapshotFull), // generation 3: asked full
	}
	if stop := e.play(steps...); !e.runner.exhausted {
		t.Fatalf("VM stopped: %v\n%s", stop, e.console.String())
	}
	con := e.console.String()
	if !strings.Contains(con, "generation 2, slot 0, increment on generation 1") ||
		!strings.Contains(con, "generation 3, slot 1, full") || vm.Saves[2].Incremental {
		t.Fatalf("want generation 2 an increment, 3 full (SnapshotFull):\n%s", con)
	}
}
