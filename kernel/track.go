package kernel

import (
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// ramTracker follows the guest's writes to its RAM through nested page
// table write protection (svm.NPT.SetWrite): after protect, the first
// write to each 4 KiB page exits with a nested page fault; writeFault
// records the page as dirty, gives a live save in progress the page's
// content from before the write, and makes the page writable again. The
// dirty pages since a snapshot are what an incremental snapshot carries.
type ramTracker struct {
	on     bool
	dirty  []byte // bit per page: written since protect
	faults uint64 // write faults taken since protect
	// base is the snapshot the dirty pages are relative to: its state
	// plus the dirty pages' contents is the VM's RAM.
	base *snapshot.Commit
	// lastBase is the generation the last save was an increment on (0:
	// it was full), lastCarried the pages it carried.
	lastBase, lastCarried uint64

	// During a live save: the pages at and above copiedBelow that the
	// save has not copied into its stream yet keep their content at the
	// save request in a copy when the guest writes them: cowIdx[page] is
	// 1 + the copy's index in cow, 0 for none.
	saving      bool
	copiedBelow uint64
	cowIdx      []int32
	cow         [][]byte
	free        []int32  // indexes of cow free for reuse
	chunks      []uint64 // the host memory of cow (grow), cowChunk bytes each
	// carried, once a live increment is being written: the pages it
	// carries, the only ones that need copies (nil: all).
	carried []byte
	held    int    // copies in use
	cowMax  int    // copies that may be held at once
	copies  uint64 // pages copied before a write during this save
	// The save writes the pages it passed in place (snapshot.RAMOptions.
	// Released): those at and above releasedBelow may still be read by
	// the device, so a guest write to one waits for the disk (waits
	// counts them).
	releasedBelow uint64
	waits         uint64
	// viewEnd: the writer holds the guest RAM [copiedBelow, viewEnd) in
	// place (liveSource.View) until its next read or Copied: it hashes
	// those bytes and the device reads them later, so a guest write
	// there waits for the disk as for a page it passed.
	viewEnd uint64
}

// cowMaxBytes bounds the memory a live save holds for pages the guest
// writes ahead of it. When the guest has written that much the rest of
// the save runs with the guest held (see VM.writeFault).
var cowMaxBytes uint64 = 64 << 20 // a variable for the tests

// protect write-protects all guest RAM and starts a new dirty set
// relative to base (nil: none yet).
func (vm *VM) protect(base *snapshot.Commit) error {
	t := &vm.track
	pages := vm.Mem.Size / svm.PageSize
	if t.on && uint64(len(t.dirty)) == (pages+7)/8 {
		// Tracking: only the pages written since the last protect were
		// made writable (writeFault); protect those again. A save after
		// few writes then costs little here too.
		for p := uint64(0); p < pages; {
			if t.dirty[p/8] == 0 && p%8 == 0 {
				p += 8
				continue
			}
			if t.dirty[p/8]&(1<<(p%8)) == 0 {
				p++
				continue
			}
			e := p + 1
			for e < pages && t.dirty[e/8]&(1<<(e%8)) != 0 {
				e++
			}
			if err := vm.NPT.SetWrite(p*svm.PageSize, (e-p)*svm.PageSize, false); err != nil {
				return err
			}
			p = e
		}
	} else if err := vm.NPT.SetWrite(0, vm.Mem.Size, false); err != nil {
		return err
	}
	vm.flushGuestTLB()
	if uint64(len(t.dirty)) != (pages+7)/8 {
		t.dirty = make([]byte, (pages+7)/8)
	} else {
		clear(t.dirty)
	}
	t.on, t.faults, t.base = true, 0, base
	return nil
}

// flushGuestTLB makes the next VMRUN flush the guest's TLB entries, after
// nested page table entries lost permissions or changed size (APM vol. 2,
// 15.16.1): this ASID's where the CPU can (FlushByAsid), else all; a
// flush of all already requested stays.
func (vm *VM) flushGuestTLB() {
	c := &vm.VCPU.vmcb.Control
	if c.TLBControl == svm.TLBControlFlushAll {
		return
	}
	if vm.plat.Features.Has(svm.FeatFlushByASID) {
		c.TLBControl = svm.TLBControlFlushASID
	} else {
		c.TLBControl = svm.TLBControlFlushAll
	}
}

// dirtyPages is the number of pages written since protect.
func (t *ramTracker) dirtyPages() uint64 { return popcount(t.dirty) }

// writeFault handles a nested page fault on a write to guest RAM that
// write protection caused, and reports whether it was one (else the
// fault is the guest's error, handled as before).
func (vm *VM) writeFault(gpa uint64) bool {
	t := &vm.track
	if !t.on || gpa >= vm.Mem.Size {
		return false
	}
	page := gpa &^ (svm.PageSize - 1)
	if _, p, ok := vm.NPT.Translate(page); !ok || p&svm.PermWrite != 0 {
		return false // not a protected page: not ours
	}
	i := page / svm.PageSize
	switch {
	case !t.saving:
	case t.carried != nil && t.carried[i/8]&(1<<(i%8)) == 0:
		// A live increment that does not carry the page: the snapshot
		// does not need its content.
	case page >= t.releasedBelow && (page < t.copiedBelow || page < t.viewEnd):
		// The page is in a device request of the save, which reads it
		// in place (or in the run the writer is writing): the write
		// waits until the request is complete.
		t.waits++
		vm.live.until(func() bool { return t.releasedBelow > page })
	case page >= t.copiedBelow && t.cowIdx[i] == 0:
		if t.held >= t.cowMax || len(t.free) == 0 && !t.grow(vm.plat.Pool, vm.splitReserve()) {
			// The guest wrote more pages ahead of the save than the
			// save may hold (or the host has no memory for more):
			// finish it now, with the guest held.
			vm.live.finish()
		} else {
			k := t.free[len(t.free)-1]
			t.free = t.free[:len(t.free)-1]
			b, _ := vm.Mem.Slice(page, svm.PageSize)
			copy(t.cow[k], b)
			t.cowIdx[i] = k + 1
			t.held++
			t.copies++
		}
	}
	t.dirty[i/8] |= 1 << (i % 8)
	t.faults++
	if err := vm.NPT.SetWrite(page, svm.PageSize, true); err != nil {
		vm.stopFault(ClassCrash, "write tracking: %v", err)
	}
	return true
}

// copied is the live save's progress (snapshot.RAMOptions.Copied): the
// pages below gpa are in its stream, so their copies are released.
func (t *ramTracker) copied(gpa uint64) {
	t.viewEnd = 0
	for i := t.copiedBelow / svm.PageSize; i < gpa/svm.PageSize && i < uint64(len(t.cowIdx)); i++ {
		if k := t.cowIdx[i]; k != 0 {
			t.free = append(t.free, k-1)
			t.cowIdx[i] = 0
			t.held--
		}
	}
	t.copiedBelow = max(t.copiedBelow, gpa)
}

// released is the live save's device progress (snapshot.RAMOptions.
// Released): every write of the pages below gpa is complete.
func (t *ramTracker) released(gpa uint64) {
	t.releasedBelow = max(t.releasedBelow, gpa)
}

// startCopies prepares the copies of a live save.
func (t *ramTracker) startCopies(ram uint64) {
	pages := ram / svm.PageSize
	if uint64(len(t.cowIdx)) != pages {
		t.cowIdx = make([]int32, pages)
	}
	t.saving, t.copiedBelow, t.copies, t.held = true, 0, 0, 0
	t.releasedBelow, t.waits, t.viewEnd = 0, 0, 0
	t.cowMax = int(min(cowMaxBytes, ram) / svm.PageSize)
}

// carriedOnly limits the copies of a live save to the pages carried
// marks (the increment being written carries only those) and frees the
// copies of the others.
func (t *ramTracker) carriedOnly(carried []byte) {
	t.carried = carried
	for i, k := range t.cowIdx {
		if k != 0 && carried[i/8]&(1<<(i%8)) == 0 {
			t.free = append(t.free, k-1)
			t.cowIdx[i] = 0
			t.held--
		}
	}
}

// cowChunk is how much memory for copies a live save takes from the host
// pool at a time.
const cowChunk = 64 * svm.PageSize

// grow adds a chunk of pool memory to the free copies; false if the pool
// would keep less than reserve bytes. The copies' memory is not the Go
// heap's: a live save leaves no garbage whose collection would pause the
// guest after it.
func (t *ramTracker) grow(pool *PhysPool, reserve uint64) bool {
	if pool == nil || pool.FreeBytes() < cowChunk+reserve {
		return false
	}
	pa, err := pool.AllocUncleared(cowChunk, svm.PageSize) // each page is copied over before it is read
	if err != nil {
		return false
	}
	t.chunks = append(t.chunks, pa)
	b := pool.mem.Bytes(pa, cowChunk)
	for off := 0; off < cowChunk; off += svm.PageSize {
		t.free = append(t.free, int32(len(t.cow)))
		t.cow = append(t.cow, b[off:off+svm.PageSize:off+svm.PageSize])
	}
	return true
}

// splitReserve is the pool memory a live save's copies leave for the
// nested page tables that splitting every 2 MiB page of guest RAM takes
// (one 4 KiB table each, as the guest's first write in each is made
// writable alone), so that copies never take what write tracking needs.
func (vm *VM) splitReserve() uint64 {
	return (vm.Mem.Size/svm.Size2M + 1) * svm.PageSize
}

// endCopies drops the copies of a live save, their memory back to pool.
func (t *ramTracker) endCopies(pool *PhysPool) {
	t.saving, t.carried = false, nil
	clear(t.cowIdx)
	for _, pa := range t.chunks {
		pool.Free(pa, cowChunk)
	}
	clear(t.cow)
	t.cow, t.free, t.chunks, t.held = t.cow[:0], t.free[:0], t.chunks[:0], 0
}

// copyOf returns the copy of the page at gpa, or nil.
func (t *ramTracker) copyOf(gpa uint64) []byte {
	if i := gpa / svm.PageSize; t.held > 0 && i < uint64(len(t.cowIdx)) && t.cowIdx[i] != 0 {
		return t.cow[t.cowIdx[i]-1]
	}
	return nil
}

// liveSource is guest RAM as it was at a live save's request: pages the
// guest wrote since come from their copies.
type liveSource struct{ vm *VM }

func (s liveSource) ReadAt(b []byte, gpa int64) (int, error) {
	s.vm.track.viewEnd = 0 // the writer is done with what it viewed
	s.vm.live.checkpoint()
	if err := s.vm.Mem.ReadGPA(uint64(gpa), b); err != nil {
		return 0, err
	}
	t := &s.vm.track
	for off := uint64(0); off < uint64(len(b)); off += svm.PageSize {
		if c := t.copyOf(uint64(gpa) + off); c != nil {
			copy(b[off:], c)
		}
	}
	return len(b), nil
}

// View gives the bytes in place up to the first page that was copied
// (none: ok false), held (viewEnd) until the writer's next read or
// Copied.
func (s liveSource) View(gpa, n uint64) ([]byte, bool) {
	t := &s.vm.track
	t.viewEnd = 0 // the writer is done with what it viewed before
	s.vm.live.checkpoint()
	if t.held > 0 {
		for off := uint64(0); off < n; off += svm.PageSize {
			if t.copyOf(gpa+off) != nil {
				n = off
				break
			}
		}
	}
	if n == 0 {
		return nil, false
	}
	b, err := s.vm.Mem.Slice(gpa, n)
	if err != nil {
		return nil, false
	}
	t.viewEnd = gpa + n
	return b, true
}
