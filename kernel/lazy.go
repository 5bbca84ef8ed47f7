package kernel

import (
	"errors"
	"fmt"
	"time"

	"tamavisor/kernel/event"
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// Lazy restore (docs/snapshot-format.md, 3.3): the VM of a snapshot (a
// full one, or an increment with its chain) is rebuilt from everything
// but its page data, which stays on the disk.
// Guest RAM is neither cleared nor mapped in the nested page table at
// first (clearing all of it would take longer than the rest of the
// restore), so the guest's first access to a page exits with a nested
// page fault: for a page with data, the 1 MiB block of page data holding
// it in the newest stream that carries it is read, checked and placed
// (the pages of it no newer stream defines), and they are mapped; for a
// zero page, the
// zero pages of its 2 MiB region are cleared and mapped; and the guest
// resumes. Beside the guest a background job fills the other
// blocks in turns, as a live save takes turns (livesave.go): a timer on
// the VM's event queue, the host preemption timer taking the CPU back
// from the guest. Every hypervisor access to guest RAM (instruction
// fetch, hypercall buffers, saves) goes through GuestMemory, which fills
// what it touches first. A block that fails its check stops the VM
// before the guest sees a byte of it.
const (
	lazyTurn      = 4 * time.Millisecond
	lazyGuestTurn = 4 * time.Millisecond
)

// lazyRAM is a lazy restore in progress.
type lazyRAM struct {
	vm    *VM
	l     *snapshot.Lazy
	sink  rawSink
	timer *event.Timer
	next  int // the background job's next block
	err   error
	// zeroDone says, per 2 MiB region of RAM, that its zero pages are
	// cleared and mapped; zeroLeft counts the regions not done,
	// zeroNext is the background job's next.
	zeroDone []bool
	zeroLeft int
	zeroNext int

	// start is the TSC at the restore's start, done when all RAM was
	// present (0 before).
	start, done uint64
	faults      uint64 // blocks or zero regions filled for a nested page fault
	accesses    uint64 // blocks or zero regions filled for a hypervisor access
	mapCycles   uint64 // TSC cycles spent mapping filled blocks
	promoted    int    // 2 MiB regions mapped as one page once present
}

// rawSink places verified pages in guest RAM, behind the fill hook.
type rawSink struct{ mem *GuestMemory }

func (s rawSink) WriteAt(b []byte, gpa int64) (int, error) {
	v, err := s.mem.raw(uint64(gpa), uint64(len(b)))
	if err != nil {
		return 0, err
	}
	return copy(v, b), nil
}

// View lets the snapshot read a block straight into guest RAM.
func (s rawSink) View(gpa, n uint64) ([]byte, bool) {
	v, err := s.mem.raw(gpa, n)
	return v, err == nil
}

// LazyStats describes a lazy restore.
type LazyStats struct {
	// Blocks is the number of blocks of page data to fill at the restore
	// (of a chain: those of its streams with a page no newer stream
	// defines), Remaining how many are not filled yet; Streams is the
	// number of streams of the chain (1 for a full snapshot).
	Blocks, Remaining, Streams int
	// StartTSC is the host TSC at the restore's start; DoneTSC when all
	// RAM was present (0 while blocks remain).
	StartTSC, DoneTSC uint64
	// Faults: blocks (or 2 MiB regions of zero pages) filled for the
	// guest's first access, Accesses: for the hypervisor's.
	Faults, Accesses uint64
	// Fill is where the fills spent their time (TSC cycles), Map the
	// cycles spent mapping the filled pages; Promoted 2 MiB regions were
	// mapped as 2 MiB pages once all their pages were present.
	Fill     snapshot.LazyProfile
	Map      uint64
	Promoted int
}

// Lazy describes the VM's lazy restore, ok false if it was not restored
// lazily.
func (vm *VM) Lazy() (s LazyStats, ok bool) {
	lz := vm.lazyFill
	if lz == nil {
		return s, false
	}
	return LazyStats{Blocks: lz.l.Fills(), Remaining: lz.l.Remaining(), Streams: lz.l.Streams(), StartTSC: lz.start, DoneTSC: lz.done,
		Faults: lz.faults, Accesses: lz.accesses, Fill: lz.l.Profile(), Map: lz.mapCycles, Promoted: lz.promoted}, true
}

// RestoreLazy rebuilds the VM of the newest committed snapshot in store as
// Restore does, but without reading its page data first: everything else
// is read and checked (every stream's CRCs, digest and HMAC, its block
// table, and of an increment the chain), the VM gets its registers and
// devices, and the guest can run at once; zero pages are cleared and
// pages with data arrive on the guest's first access or from the
// background fill, each 1 MiB block checked before the guest sees it. A
// snapshot that cannot be restored lazily (a RAM chunk of version 1) is
// restored by Restore, saying so on the console.
func RestoreLazy(p *Platform, store *snapshot.Store, key []byte) (*VM, *snapshot.Commit, error) {
	start := p.TSC()
	newest, err := newestCommit(store)
	if err != nil {
		return nil, nil, err
	}
	sink := &restoreSink{p: p, uncleared: true}
	reg := registry(func(c vmConfig) { sink.cfg = &c })
	l, snap, err := store.OpenLazy(newest, snapshot.DecodeOptions{Registry: reg, Key: key,
		MaxRAM: MaxGuestRAM, MaxChunkSize: maxChunkBody, MaxRetained: maxRetained})
	if errors.Is(err, snapshot.ErrLazyUnsupported) {
		if p.Console != nil {
			fmt.Fprintf(p.Console, "tamavisor: restore: %v: restoring it eagerly (all RAM read first)\n", err)
		}
		return Restore(p, store, key)
	}
	var vm *VM
	if err == nil {
		err = sink.ensure()
		vm = sink.vm
	}
	if err == nil {
		err = rebuild(p, vm, snap)
	}
	if err == nil {
		err = vm.startLazy(l, start)
	}
	if err != nil {
		if vm != nil {
			vm.Destroy()
		}
		return nil, nil, fmt.Errorf("generation %d: %w", newest.Generation, err)
	}
	p.operatorGen = newest.Generation
	if err := vm.protect(newest); err != nil {
		vm.Destroy()
		return nil, nil, err
	}
	return vm, newest, nil
}

// startLazy routes the hypervisor's accesses to guest RAM (neither
// cleared nor mapped yet) through a fill, and arms the background fill.
func (vm *VM) startLazy(l *snapshot.Lazy, start uint64) error {
	regions := int((vm.Mem.Size + svm.Size2M - 1) / svm.Size2M)
	lz := &lazyRAM{vm: vm, l: l, sink: rawSink{&vm.Mem}, start: start,
		zeroDone: make([]bool, regions), zeroLeft: regions}
	vm.lazyFill = lz
	vm.Mem.fill = lz.access
	lz.timer = vm.clock.NewTimer(func(int64) { lz.turn() })
	lz.timer.Arm(vm.now() + int64(lazyGuestTurn))
	return nil
}

// fillBlock fills block i, maps its pages and reports the error that
// stopped the VM, if any.
func (lz *lazyRAM) fillBlock(i int) error {
	if lz.err != nil {
		return lz.err
	}
	if lz.l.Filled(i) {
		return nil
	}
	vm := lz.vm
	if err := lz.l.Fill(i, lz.sink); err != nil {
		lz.err = err
		if lz.timer != nil {
			lz.timer.Stop()
		}
		vm.stopFault(ClassSnapshotCorrupt, "lazy restore: %v: the VM is stopped before the guest sees it", err)
		return err
	}
	// Tracked RAM is mapped read-only: the guest's first write marks the
	// page dirty (track.go), as for every page after a restore.
	perm := svm.PermRWX
	if vm.track.on {
		perm &^= svm.PermWrite
	}
	var err error
	t := vm.plat.TSC()
	lz.l.BlockRuns(i, func(gpa, n uint64) {
		if err == nil {
			err = vm.NPT.Map(gpa, vm.Mem.HostBase+gpa, n, perm)
		}
	})
	if err == nil {
		gpa, end := lz.l.BlockGPA(i)
		err = lz.promote(gpa, end)
	}
	lz.mapCycles += vm.plat.TSC() - t
	if err != nil {
		lz.err = err
		vm.stopFault(ClassCrash, "lazy restore: mapping block %d: %v", i, err)
		return err
	}
	if lz.l.Remaining() == 0 && lz.zeroLeft == 0 {
		lz.complete()
	}
	return nil
}

// clearZero clears and maps the zero pages of 2 MiB region r (a whole
// region of zero pages as one 2 MiB page).
func (lz *lazyRAM) clearZero(r int) error {
	if lz.err != nil || lz.zeroDone[r] {
		return lz.err
	}
	vm := lz.vm
	perm := svm.PermRWX
	if vm.track.on {
		perm &^= svm.PermWrite
	}
	from := uint64(r) * svm.Size2M
	to := min(from+svm.Size2M, vm.Mem.Size)
	err := lz.l.ZeroRunsIn(from, to, func(gpa, n uint64) error {
		b, err := vm.Mem.raw(gpa, n)
		if err == nil {
			clear(b)
			err = vm.NPT.Map(gpa, vm.Mem.HostBase+gpa, n, perm)
		}
		return err
	})
	if err == nil {
		err = lz.promote(from, to)
	}
	if err != nil {
		lz.err = err
		vm.stopFault(ClassCrash, "lazy restore: zero pages of %#x-%#x: %v", from, to, err)
		return err
	}
	lz.zeroDone[r] = true
	lz.zeroLeft--
	if lz.l.Remaining() == 0 && lz.zeroLeft == 0 {
		lz.complete()
	}
	return nil
}

// promote maps each 2 MiB region of [gpa, end) whose pages are all
// present now as one 2 MiB page (svm.NPT.Promote), as a VM not restored
// lazily has them: fewer nested TLB misses for the guest.
func (lz *lazyRAM) promote(gpa, end uint64) error {
	vm := lz.vm
	for r := gpa &^ (svm.Size2M - 1); r < end; r += svm.Size2M {
		if ok, err := vm.NPT.Promote(r); err != nil {
			return err
		} else if ok {
			lz.promoted++
			vm.flushGuestTLB()
		}
	}
	return nil
}

// page makes the page at gpa present: its block filled or its region's
// zero pages cleared; filled reports whether anything had to be done.
func (lz *lazyRAM) page(gpa uint64) (filled bool, err error) {
	i, stored, ok := lz.l.Locate(gpa)
	switch {
	case ok && stored && !lz.l.Filled(i):
		return true, lz.fillBlock(i)
	case (!ok || !stored) && !lz.zeroDone[gpa/svm.Size2M]:
		return true, lz.clearZero(int(gpa / svm.Size2M))
	}
	return false, lz.err
}

// complete turns the VM into an ordinary one: all RAM is present.
func (lz *lazyRAM) complete() {
	lz.done = max(lz.vm.plat.TSC(), 1)
	lz.vm.Mem.fill = nil
	lz.l.Close()
	if lz.timer != nil {
		lz.timer.Stop()
	}
	if c := lz.vm.plat.Console; c != nil {
		hz := float64(lz.vm.plat.TSCHz)
		if hz == 0 {
			hz = 1e9
		}
		streams := "1 stream"
		if n := lz.l.Streams(); n > 1 {
			streams = fmt.Sprintf("%d streams", n)
		}
		fmt.Fprintf(c, "tamavisor: lazy restore: all RAM present (%d blocks of page data from %s; %d blocks or zero regions filled on the guest's first access, %d on the hypervisor's) %.3f s after the restore started\n",
			lz.l.Fills(), streams, lz.faults, lz.accesses, float64(lz.done-lz.start)/hz)
	}
}

// fault handles a nested page fault at gpa: a page of a block not filled
// yet is filled (or the VM stopped); it reports whether the fault was
// one.
func (lz *lazyRAM) fault(gpa uint64) bool {
	if lz == nil || lz.vm.Mem.fill == nil || gpa >= lz.vm.Mem.Size {
		return false
	}
	filled, _ := lz.page(gpa &^ (svm.PageSize - 1))
	if filled {
		lz.faults++
	}
	return filled
}

// access fills every block holding a page of [gpa, gpa+n) before the
// hypervisor reads or writes it (GuestMemory's fill hook).
func (lz *lazyRAM) access(gpa, n uint64) error {
	if n == 0 {
		return nil
	}
	for p := gpa &^ (svm.PageSize - 1); p < gpa+n && p < lz.vm.Mem.Size; p += svm.PageSize {
		filled, err := lz.page(p)
		if err != nil {
			return err
		}
		if filled {
			lz.accesses++
		}
		if lz.vm.Mem.fill == nil {
			return nil // all present
		}
	}
	return lz.err
}

// turn is the background fill's turn on the CPU: blocks in order for
// lazyTurn (one block without a calibrated TSC), then the guest's turn.
func (lz *lazyRAM) turn() {
	p := lz.vm.plat
	deadline := p.TSC() + uint64(float64(p.TSCHz)*lazyTurn.Seconds())
	for lz.err == nil {
		var err error
		switch {
		case lz.zeroNext < len(lz.zeroDone):
			err = lz.clearZero(lz.zeroNext)
			lz.zeroNext++
		case lz.next < lz.l.Blocks():
			err = lz.fillBlock(lz.next)
			lz.next++
		default:
			return
		}
		if err != nil || p.TSC() >= deadline {
			break
		}
	}
	if lz.vm.Mem.fill != nil && lz.err == nil {
		lz.timer.Arm(lz.vm.now() + int64(lazyGuestTurn))
	}
}

// fillAll fills every block now (the guest held), for a save: a snapshot
// needs all RAM.
func (vm *VM) fillAll() error {
	lz := vm.lazyFill
	if lz == nil || vm.Mem.fill == nil {
		if lz != nil {
			return lz.err
		}
		return nil
	}
	for r := range lz.zeroDone {
		if err := lz.clearZero(r); err != nil {
			return fmt.Errorf("the lazy restore could not clear guest RAM: %w", err)
		}
	}
	for i := 0; i < lz.l.Blocks(); i++ {
		if err := lz.fillBlock(i); err != nil {
			return fmt.Errorf("the lazy restore could not fill guest RAM: %w", err)
		}
	}
	return nil
}

// FillAll makes all guest RAM of a lazily restored VM present now.
func (vm *VM) FillAll() error { return vm.fillAll() }
