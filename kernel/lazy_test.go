package kernel

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"tamavisor/snapshot"
	"tamavisor/svm"
)

// Lazy restore test guest: pages of data from lazyDataStart to
// lazyDataEnd (about 2.5 MiB: three blocks), each page stamped with its
// address so it can be found on the disk; the rest of RAM is zero.
const (
	lazyDataStart = 0x100000
	lazyDataEnd   = 0x380000
)

// lazyPage is the content of the data page at gpa.
func lazyPage(gpa uint64) []byte {
	b := make([]byte, svm.PageSize)
	for o := 0; o < len(b); o += 16 {
		binary.LittleEndian.PutUint64(b[o:], gpa)
		binary.LittleEndian.PutUint64(b[o+8:], uint64(o)^0x5a5a)
	}
	return b
}

// savedLazyGuest saves a guest with the lazy test pattern on a fresh disk
// and returns the disk and the guest's RAM as saved.
func savedLazyGuest(t *testing.T) (*snapshot.MemDevice, []byte) {
	t.Helper()
	e := newEnv(t, featNRIP)
	e.withTimer(1_000_000_000)
	dev := snapshot.NewMemDevice(32<<20, 512)
	st := e.withStore(dev)
	vm := e.boot(Mode64)
	defer vm.Destroy()
	for gpa := uint64(lazyDataStart); gpa < lazyDataEnd; gpa += svm.PageSize {
		vm.Mem.WriteGPA(gpa, lazyPage(gpa))
	}
	if _, err := vm.Save(st, nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	return dev, bytes.Clone(vm.Mem.ram)
}

// garbage is what an earlier user of the memory left in it.
const garbage = 0xa5

// restoreLazy restores the disk's snapshot lazily into a fresh machine.
func restoreLazy(t *testing.T, dev *snapshot.MemDevice) (*env, *VM) {
	t.Helper()
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	// The pool's memory holds an earlier user's bytes: a lazy restore
	// must not show them to the guest.
	e.soilPool(t)
	vm, _, err := RestoreLazy(e.plat, e.withStore(dev), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.vm = vm
	t.Cleanup(vm.Destroy)
	return e, vm
}

// soilPool fills the pool's free memory with garbage, as an earlier user
// of it would leave it.
func (e *env) soilPool(t *testing.T) {
	t.Helper()
	free := e.pool.FreeBytes()
	pa, err := e.pool.Alloc(free, svm.PageSize)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := 0, e.mem.Bytes(pa, free); i < len(b); i++ {
		b[i] = garbage
	}
	e.pool.Free(pa, free)
}

// guestLoad is a guest read of the page at gpa as the CPU does it under
// nested paging: a page not mapped exits with a nested page fault (not
// present) and the load runs again after it; once mapped, the page's
// first bytes are recorded in *got and the guest exits on a host
// interrupt.
func (e *env) guestLoad(gpa uint64, got *[]byte) step {
	var st step
	st = func(v *svm.VMCB, r *svm.Regs) {
		e.tsc += 10_000
		if _, _, ok := e.vm.NPT.Translate(gpa); !ok {
			v.Control.ExitCode = uint64(svm.ExitNPF)
			v.Control.ExitInfo1 = svm.NPFFinalAddr
			v.Control.ExitInfo2 = gpa
			e.runner.steps = append([]step{st}, e.runner.steps...)
			return
		}
		*got = bytes.Clone(e.vm.Mem.ram[gpa : gpa+32])
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
	return st
}

// TestLazyRestoreFault: after a lazy restore no page of guest RAM is
// mapped; the guest's first access to a page with data fills its block
// with the saved content, maps it read-only (write tracking), and leaves
// the other blocks on the disk; its first access to a zero page clears
// and maps the zero pages around it, and it reads zeros (not what the
// memory held before).
func TestLazyRestoreFault(t *testing.T) {
	dev, saved := savedLazyGuest(t)
	e, vm := restoreLazy(t, dev)
	lz, ok := vm.Lazy()
	if !ok || lz.Blocks < 3 || lz.Remaining != lz.Blocks {
		t.Fatalf("lazy stats %+v, %v", lz, ok)
	}
	for gpa := uint64(0); gpa < testMem; gpa += svm.PageSize {
		if _, _, ok := vm.NPT.Translate(gpa); ok {
			t.Fatalf("page %#x mapped before it was filled", gpa)
		}
	}
	const probe, zero = 0x280000, 0x3ff000 // in the middle block; a zero page
	var got, gotZero []byte
	e.runAll(e.guestLoad(probe, &got), e.guestLoad(zero, &gotZero))
	if !bytes.Equal(got, saved[probe:probe+32]) {
		t.Fatalf("the guest read %x, saved %x", got, saved[probe:probe+32])
	}
	if !bytes.Equal(gotZero, make([]byte, 32)) || !bytes.Equal(vm.Mem.ram[lazyDataEnd:testMem], make([]byte, testMem-lazyDataEnd)) {
		t.Fatalf("a zero page reads %x, or the region's zero pages were not cleared", gotZero)
	}
	lz, _ = vm.Lazy()
	if lz.Faults != 2 || lz.Remaining != lz.Blocks-1 {
		t.Fatalf("lazy stats after one fault %+v", lz)
	}
	if _, p, ok := vm.NPT.Translate(probe); !ok || p&svm.PermWrite != 0 {
		t.Fatalf("filled page mapped %v with %v: want read-only (tracked)", ok, p)
	}
	if _, _, ok := vm.NPT.Translate(lazyDataStart); ok {
		t.Fatal("the first block was filled too")
	}
}

// TestLazyRestoreBackground: the background job fills every block in
// turns beside the guest; then all RAM is as saved, and the VM is an
// ordinary one (no fill hook).
func TestLazyRestoreBackground(t *testing.T) {
	dev, saved := savedLazyGuest(t)
	e, vm := restoreLazy(t, dev)
	var steps []step
	for range 60 {
		steps = append(steps, e.guestRuns(1))
	}
	e.resume(steps...)
	lz, _ := vm.Lazy()
	if lz.Remaining != 0 || lz.DoneTSC == 0 || vm.Mem.fill != nil {
		t.Fatalf("lazy stats after 60 ms %+v", lz)
	}
	if !bytes.Equal(vm.Mem.ram, saved) {
		t.Fatal("RAM differs from the saved RAM")
	}
	if !strings.Contains(e.console.String(), "lazy restore: all RAM present") {
		t.Fatalf("console: %s", e.console.String())
	}
	// Every whole 2 MiB region of RAM is one 2 MiB page again, read-only
	// (write tracking), as a VM restored eagerly maps it.
	regions := 0
	vm.NPT.Walk(func(gpa, hpa, size uint64, p svm.Perm) {
		if size == svm.Size2M && hpa == vm.Mem.HostBase+gpa && p&svm.PermWrite == 0 {
			regions++
		}
	})
	if want := int(vm.Mem.Size / svm.Size2M); regions != want || lz.Promoted != want {
		t.Fatalf("%d 2 MiB pages mapped (%d promoted), want %d", regions, lz.Promoted, want)
	}
	// Turns: the guest ran between the fills (more than one timer turn).
	if n := len(e.runner.entries); n != len(steps)+1 {
		t.Fatalf("%d entries", n)
	}
}

// TestLazyRestoreCorrupt: a block whose page data changed on the disk
// stops the VM, naming the block, when the guest first touches it: the
// guest is not entered again and the page stays unmapped.
func TestLazyRestoreCorrupt(t *testing.T) {
	dev, _ := savedLazyGuest(t)
	const bad = 0x280000
	at := bytes.Index(dev.Data, lazyPage(bad))
	if at < 0 {
		t.Fatal("page not found on the disk")
	}
	dev.Data[at+100] ^= 0x01
	e, vm := restoreLazy(t, dev)
	var got []byte
	stop := e.stopped(e.guestLoad(0x100000, &got), e.guestLoad(bad, &got), e.guestRuns(1))
	if stop.Class != ClassSnapshotCorrupt || !strings.Contains(stop.Reason, "RAM block 1 (guest-physical") ||
		!strings.Contains(stop.Reason, "checksum mismatch") {
		t.Fatalf("stop %v (%s)", stop, stop.Class)
	}
	if len(e.runner.entries) != 3 {
		t.Fatalf("the guest was entered %d times: want 3 (the load before, two tries at the bad page)", len(e.runner.entries))
	}
	if _, _, ok := vm.NPT.Translate(bad); ok {
		t.Fatal("a page of the bad block is mapped")
	}
	if !bytes.Equal(vm.Mem.ram[bad:bad+svm.PageSize], make([]byte, svm.PageSize)) {
		t.Fatal("the bad block's bytes stayed in guest RAM")
	}
}

// TestLazyRestoreSave: a save while blocks are missing fills them first;
// the snapshot holds all RAM.
func TestLazyRestoreSave(t *testing.T) {
	dev, saved := savedLazyGuest(t)
	e, vm := restoreLazy(t, dev)
	e.resume(snapshotStep(e, 0))
	if lz, _ := vm.Lazy(); lz.Remaining != 0 {
		t.Fatalf("%d blocks missing after the save", lz.Remaining)
	}
	if vm.LastSave.Generation != 2 {
		t.Fatalf("last save %+v: %s", vm.LastSave, e.console.String())
	}
	checkRestored(t, dev, 2, saved, "the save during the lazy restore lost RAM")
}

// TestLazyRestoreHypercallBuffer: a hypercall whose buffer lies in a
// block not filled yet reads the saved bytes (the hypervisor's access
// fills first).
func TestLazyRestoreHypercallBuffer(t *testing.T) {
	dev, saved := savedLazyGuest(t)
	e, vm := restoreLazy(t, dev)
	const buf = 0x300000
	e.resume(hypercallStepArgs(e, HCConsoleWrite, buf, 16))
	if !strings.Contains(e.console.String(), sanitize(saved[buf:buf+16])) {
		t.Fatalf("console %q lacks the buffer's bytes", e.console.String())
	}
	if lz, _ := vm.Lazy(); lz.Accesses == 0 {
		t.Fatalf("no block filled for the hypervisor's access: %+v", lz)
	}
}

func hypercallStepArgs(e *env, fn, rbx, rcx uint64) step {
	return e.insnExit(svm.ExitVMMCALL, encVMMCALL, func(v *svm.VMCB, r *svm.Regs) {
		v.State.RAX = fn
		r.RBX, r.RCX = rbx, rcx
	})
}

// runAll runs the VM through steps (which may repeat themselves after a
// fault), expecting it to keep running.
func (e *env) runAll(steps ...step) {
	e.t.Helper()
	if stop := e.play(steps...); !e.runner.exhausted {
		e.t.Fatalf("VM stopped: %v\n%s", stop, e.console.String())
	}
}

// Pages the chain test guest changes after its full snapshot: one with
// data in the full snapshot's second block, one with data made zero and
// then non-zero again, and one zero in the full snapshot given data.
const (
	chainChanged = 0x281000
	chainZeroed  = 0x282000
	chainNewData = 0x3ff000
)

// savedLazyChain saves the lazy test guest as a chain on a fresh disk: a
// full snapshot, an increment that changes chainChanged, clears
// chainZeroed and writes chainNewData, and one that changes chainChanged
// again and makes chainZeroed non-zero; it returns the disk and the
// guest's RAM as last saved.
func savedLazyChain(t *testing.T) (*snapshot.MemDevice, []byte) {
	t.Helper()
	e := newEnv(t, featNRIP)
	e.withWorkClock()
	dev := snapshot.NewMemDevice(32<<20, 512)
	e.withStore(dev)
	vm := e.boot(Mode64)
	defer vm.Destroy()
	for gpa := uint64(lazyDataStart); gpa < lazyDataEnd; gpa += svm.PageSize {
		vm.Mem.WriteGPA(gpa, lazyPage(gpa))
	}
	if stop := e.play(snapshotStep(e, 0),
		e.guestStore(chainChanged, []byte("first increment")),
		e.guestStore(chainZeroed, make([]byte, svm.PageSize)),
		e.guestStore(chainNewData, []byte("was zero")),
		snapshotStep(e, 0),
		e.guestStore(chainChanged, []byte("second increment")),
		e.guestStore(chainZeroed, []byte("non-zero again")),
		snapshotStep(e, 0)); !e.runner.exhausted {
		t.Fatalf("VM stopped: %v\n%s", stop, e.console.String())
	}
	if !strings.Contains(e.console.String(), "generation 3, slot 0, increment on generation 2") {
		t.Fatalf("no chain of three saved:\n%s", e.console.String())
	}
	return dev, bytes.Clone(vm.Mem.ram)
}

// TestLazyRestoreChain: a chain (a full snapshot and two increments)
// restores lazily, not eagerly: no page is mapped at first; the guest's
// first access to a page an increment changed reads the newest
// increment's contents, to a page beside it in the full snapshot's block
// the full snapshot's, to a page made zero and non-zero again its last
// contents; the background fill then brings all RAM, exactly as saved
// (the full snapshot's block filled after the increment's does not
// bring back its older pages).
func TestLazyRestoreChain(t *testing.T) {
	dev, saved := savedLazyChain(t)
	e, vm := restoreLazy(t, dev)
	if strings.Contains(e.console.String(), "eagerly") {
		t.Fatalf("restored eagerly:\n%s", e.console.String())
	}
	lz, ok := vm.Lazy()
	if !ok || lz.Streams != 3 || lz.Blocks < 3 || lz.Remaining != lz.Blocks {
		t.Fatalf("lazy stats %+v, %v", lz, ok)
	}
	for gpa := uint64(0); gpa < testMem; gpa += svm.PageSize {
		if _, _, ok := vm.NPT.Translate(gpa); ok {
			t.Fatalf("page %#x mapped before it was filled", gpa)
		}
	}
	probes := []uint64{chainChanged, chainChanged + svm.PageSize, chainZeroed, chainNewData}
	got := make([][]byte, len(probes))
	var steps []step
	for i, p := range probes {
		steps = append(steps, e.guestLoad(p, &got[i]))
	}
	for range 60 {
		steps = append(steps, e.guestRuns(1))
	}
	e.runAll(steps...)
	for i, p := range probes {
		if !bytes.Equal(got[i], saved[p:p+32]) {
			t.Fatalf("the guest read %q at %#x, saved %q", got[i], p, saved[p:p+32])
		}
	}
	if lz, _ := vm.Lazy(); lz.Remaining != 0 || lz.DoneTSC == 0 || vm.Mem.fill != nil {
		t.Fatalf("lazy stats after 60 ms %+v", lz)
	}
	want := bytes.Clone(saved)
	// The harness writes the hypercall's code at the guest's RIP.
	copy(want[testLoad:testLoad+svm.PageSize], vm.Mem.ram[testLoad:])
	if !bytes.Equal(vm.Mem.ram, want) {
		for i := range want {
			if vm.Mem.ram[i] != want[i] {
				t.Fatalf("RAM differs from the saved RAM first at %#x: %#x, want %#x", i, vm.Mem.ram[i], want[i])
			}
		}
	}
	if !strings.Contains(e.console.String(), "from 3 streams") {
		t.Fatalf("console: %s", e.console.String())
	}
}

// TestLazyRestoreChainCorrupt: a block of the chain's full snapshot whose
// page data changed on the disk stops the VM when the guest first
// touches it, naming the full snapshot's generation and the block.
func TestLazyRestoreChainCorrupt(t *testing.T) {
	dev, _ := savedLazyChain(t)
	const bad = 0x280000 // the full snapshot's second block
	at := bytes.Index(dev.Data, lazyPage(bad))
	if at < 0 {
		t.Fatal("page not found on the disk")
	}
	dev.Data[at+100] ^= 0x01
	e, vm := restoreLazy(t, dev)
	var got []byte
	stop := e.stopped(e.guestLoad(chainNewData, &got), e.guestLoad(bad, &got), e.guestRuns(1))
	if stop.Class != ClassSnapshotCorrupt || !strings.Contains(stop.Reason, "generation 1: RAM block 1 (guest-physical") ||
		!strings.Contains(stop.Reason, "checksum mismatch") {
		t.Fatalf("stop %v (%s)", stop, stop.Class)
	}
	if _, _, ok := vm.NPT.Translate(bad); ok {
		t.Fatal("a page of the bad block is mapped")
	}
}

// TestLazyRestoreChainSave: a save while blocks of a chain are missing
// fills them first and appends an increment to the chain; the eager
// restore of the longer chain gives RAM as saved.
func TestLazyRestoreChainSave(t *testing.T) {
	dev, saved := savedLazyChain(t)
	e, vm := restoreLazy(t, dev)
	e.resume(snapshotStep(e, 0))
	if lz, _ := vm.Lazy(); lz.Remaining != 0 {
		t.Fatalf("%d blocks missing after the save", lz.Remaining)
	}
	if vm.LastSave.Generation != 4 || !vm.LastSave.Incremental {
		t.Fatalf("last save %+v: %s", vm.LastSave, e.console.String())
	}
	checkRestored(t, dev, 4, saved, "the save during the lazy restore of the chain lost RAM")
}

// checkRestored restores the disk's newest snapshot eagerly into a fresh
// machine and checks it is generation gen with RAM saved (what: the
// failure's message).
func checkRestored(t *testing.T, dev *snapshot.MemDevice, gen uint64, saved []byte, what string) {
	t.Helper()
	e2 := newEnv(t, featNRIP)
	rvm, c, err := Restore(e2.plat, e2.withStore(dev), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rvm.Destroy()
	if c.Generation != gen {
		t.Fatalf("restored generation %d", c.Generation)
	}
	want := bytes.Clone(saved)
	// The harness writes the hypercall's code at the guest's RIP.
	copy(want[testLoad:testLoad+svm.PageSize], rvm.Mem.ram[testLoad:])
	if !bytes.Equal(rvm.Mem.ram, want) {
		t.Fatal(what)
	}
}
