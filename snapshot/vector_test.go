package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"unsafe"
)

// vecMem is an asyncMem that also gathers writes from several buffers
// (VectorWriter): like its WriteAsync, the segments are read only at Sync,
// so a writer that changes one before Sync stores the wrong bytes. refuse
// makes every other vectored write refused (started false), as a device
// that cannot describe the segments does.
type vecMem struct {
	asyncMem
	refuse  bool
	prp     bool // refuse gathers NVMe PRP entries cannot describe (prpFit)
	calls   int
	inPlace int64 // bytes taken in place from memory outside the store's buffers
	bufs    [][]byte
}

func (v *vecMem) WriteVAsync(segs [][]byte, off int64) (bool, error) {
	n := 0
	for _, s := range segs {
		n += len(s)
	}
	if err := CheckRequest(v.Sector, v.Size(), n, off); err != nil {
		return false, err
	}
	v.calls++
	if v.refuse && v.calls%2 == 0 || v.prp && !prpFit(segs) {
		return false, nil
	}
	for _, s := range segs {
		v.pending = append(v.pending, pendingWrite{s, off})
		off += int64(len(s))
		if !v.inBuffers(s) {
			v.inPlace += int64(len(s))
		}
	}
	v.started++
	return true, nil
}

// inBuffers reports whether s lies in one of the store's save buffers.
func (v *vecMem) inBuffers(s []byte) bool {
	for _, b := range v.bufs {
		for i := range b {
			if &b[i] == &s[0] {
				return true
			}
		}
	}
	return false
}

// zeroCopyCases are the devices and keys the zero-copy saves are tested
// on: all gathers taken, every other one refused, a keyed snapshot.
var zeroCopyCases = []struct {
	name   string
	refuse bool
	key    []byte
}{{"in place", false, nil}, {"some refused", true, nil}, {"keyed", false, []byte("zero copy key")}}

// newVecStore returns a store on a vecMem (every other gather refused if
// refuse) that tells its buffers from memory taken in place.
func newVecStore(t *testing.T, refuse bool) (*vecMem, *Store) {
	dev := &vecMem{asyncMem: asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}, refuse: refuse}
	s := newTestStore(t, dev, 64<<10)
	s.Reserve()
	dev.bufs = s.bufs[:]
	return dev, s
}

// dataBytes is the bytes of the non-zero pages of mem.
func dataBytes(mem []byte) int64 {
	var n int64
	for p := 0; p < len(mem); p += PageSize {
		if !IsZeroPage(mem[p : p+PageSize]) {
			n += PageSize
		}
	}
	return n
}

// loadRanges loads the newest snapshot on dev and fails unless its RAM
// ranges hold want's bytes (why: what differs would be).
func loadRanges(t *testing.T, dev *MemDevice, key []byte, ranges []MemRange, want []byte, why string) {
	t.Helper()
	sink := &guestMem{b: make([]byte, len(want))}
	if _, _, err := newTestStore(t, dev, 0).Load(DecodeOptions{Registry: testRegistry(t), Memory: sink, Key: key}); err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if !bytes.Equal(sink.b[r.GPA:r.GPA+r.Size], want[r.GPA:r.GPA+r.Size]) {
			t.Fatalf("range %#x: %s", r.GPA, why)
		}
	}
}

// TestStoreZeroCopy: on a VectorWriter a save writes guest pages from
// guest memory in place (a Viewer source), gathered with the store's
// staged bytes; the snapshot loads byte-identical, also when the device
// refuses some gathers (the store copies those) and for keyed snapshots.
func TestStoreZeroCopy(t *testing.T) {
	for _, c := range zeroCopyCases {
		t.Run(c.name, func(t *testing.T) {
			dev, s := newVecStore(t, c.refuse)
			vm := newTestVM(11, 4<<20)
			vm.src = viewMem{vm.mem}
			if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}, Key: c.key}, vm.fill); err != nil {
				t.Fatal(err)
			}
			data := dataBytes(vm.mem.b)
			switch {
			case !c.refuse && dev.inPlace < data*9/10:
				t.Fatalf("%d bytes written in place of %d bytes of page data", dev.inPlace, data)
			case c.refuse && (dev.inPlace == 0 || dev.inPlace > data*3/4):
				t.Fatalf("%d bytes written in place of %d with every other gather refused", dev.inPlace, data)
			}
			if pr := s.LastSaveProfile(); int64(pr.InPlace) != dev.inPlace || int64(pr.InPlace+pr.Copied) != data {
				t.Fatalf("profile: %d bytes in place, %d copied; the device took %d in place of %d", pr.InPlace, pr.Copied, dev.inPlace, data)
			}
			sink := &guestMem{b: make([]byte, len(vm.mem.b))}
			if _, _, err := newTestStore(t, dev.MemDevice, 0).Load(DecodeOptions{Registry: testRegistry(t), Memory: sink, Key: c.key}); err != nil {
				t.Fatal(err)
			}
			if !ramEqual(vm, sink) {
				t.Fatal("RAM differs after a zero-copy save")
			}
		})
	}
}

// TestZeroCopyNotWithCopied: a source that changes once Copied reports
// pages done (a live save) is never written in place: the snapshot holds
// the pages as they were when the writer took them.
func TestZeroCopyNotWithCopied(t *testing.T) {
	dev := &vecMem{asyncMem: asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}}
	s := newTestStore(t, dev, 64<<10)
	vm := newTestVM(12, 4<<20)
	want := bytes.Clone(vm.mem.b)
	src := &scribbler{guestMem: vm.mem}
	vm.src = viewScribbler{src}
	vm.ramOpts.Copied = src.copied
	if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill); err != nil {
		t.Fatal(err)
	}
	if dev.inPlace != 0 {
		t.Fatalf("%d bytes written in place from a source that changes after Copied", dev.inPlace)
	}
	loadRanges(t, dev.MemDevice, nil, vm.ranges, want, "the snapshot has bytes written after Copied")
}

// TestZeroCopyReleased: with Released (a live save), pages are written in
// place although the source changes: the source changes pages only once
// Released says the device is done with them (vecMem reads the memory
// only at Sync, so a release told early stores the changed bytes).
// Released follows Copied, in order, up to the end of RAM.
func TestZeroCopyReleased(t *testing.T) {
	for _, c := range zeroCopyCases {
		t.Run(c.name, func(t *testing.T) {
			dev, s := newVecStore(t, c.refuse)
			vm := newTestVM(13, 4<<20)
			want := bytes.Clone(vm.mem.b)
			src := &scribbler{guestMem: vm.mem}
			vm.src = viewScribbler{src}
			var copiedBelow uint64
			vm.ramOpts.Copied = func(gpa uint64) { copiedBelow = max(copiedBelow, gpa) }
			vm.ramOpts.Released = func(gpa uint64) {
				if gpa > copiedBelow {
					t.Fatalf("released below %#x before the writer passed it (copied below %#x)", gpa, copiedBelow)
				}
				src.copied(gpa)
			}
			if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}, Key: c.key}, vm.fill); err != nil {
				t.Fatal(err)
			}
			end := vm.ranges[len(vm.ranges)-1]
			if src.done != end.GPA+end.Size {
				t.Fatalf("released below %#x at the end, want the end of RAM %#x", src.done, end.GPA+end.Size)
			}
			if data := dataBytes(want); c.refuse && dev.inPlace == 0 || !c.refuse && dev.inPlace < data*9/10 {
				t.Fatalf("%d bytes written in place of %d bytes of page data", dev.inPlace, data)
			}
			loadRanges(t, dev.MemDevice, c.key, vm.ranges, want, "the snapshot has bytes changed after Released")
		})
	}
}

// viewScribbler is a scribbler the writer reads in place.
type viewScribbler struct{ *scribbler }

func (v viewScribbler) View(gpa, n uint64) ([]byte, bool) { return viewMem{v.guestMem}.View(gpa, n) }

// scatterMem is a MemDevice that scatters reads (VectorReader), counting
// its requests; refuse makes it refuse every scattered read.
type scatterMem struct {
	*MemDevice
	refuse        bool
	reads, rreads int // ReadAt and ReadV requests served
}

func (m *scatterMem) ReadAt(p []byte, off int64) (int, error) {
	m.reads++
	return m.MemDevice.ReadAt(p, off)
}

func (m *scatterMem) ReadV(segs [][]byte, off int64) (bool, error) {
	n := 0
	for _, s := range segs {
		n += len(s)
	}
	if err := CheckRequest(m.Sector, m.Size(), n, off); err != nil {
		return false, err
	}
	if m.refuse {
		return false, nil
	}
	m.rreads++
	for _, s := range segs {
		off += int64(copy(s, m.Data[off:]))
	}
	return true, nil
}

// TestLazyScatteredReads: on a VectorReader a lazy fill reads each block
// in one request (its partial sectors and its pages in place together),
// with 512- and 4096-byte sectors, keyed or not, and gives what an eager
// decode gives; a corrupt block is still found; a device that refuses
// scattered reads is read as before.
func TestLazyScatteredReads(t *testing.T) {
	for _, sector := range []int{512, 4096} {
		for _, refuse := range []bool{false, true} {
			key := []byte("scatter key")
			t.Run(fmt.Sprintf("sector=%d/refused=%v", sector, refuse), func(t *testing.T) {
				mem, s, c, _ := lazyStore(t, int64(sector)+9, key, sector)
				want := eagerRAM(t, s, c, key)
				dev := &scatterMem{MemDevice: mem, refuse: refuse}
				st, err := Open(dev, StoreOptions{})
				if err != nil {
					t.Fatal(err)
				}
				l, _, err := st.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
				if err != nil {
					t.Fatal(err)
				}
				dev.reads = 0
				got := &guestMem{b: make([]byte, lazyVMSize)}
				for _, i := range rand.New(rand.NewSource(1)).Perm(l.Blocks()) {
					if err := l.Fill(i, viewMem{got}); err != nil {
						t.Fatal(err)
					}
				}
				if !bytes.Equal(got.b, want) {
					t.Fatal("lazily filled RAM differs from the eager decode")
				}
				// A block whose pages lie in two RAM ranges is not
				// contiguous in the stream: it is read as before.
				contiguous := 0
				for i := 0; i < l.Blocks(); i++ {
					_, runs := blockAt(l, i)
					if last := runs[len(runs)-1]; last.off+int64(last.n) == runs[0].off+int64(runsBytes(runs)) {
						contiguous++
					}
				}
				switch {
				case contiguous < l.Blocks()-1:
					t.Fatalf("only %d of %d blocks contiguous in the stream", contiguous, l.Blocks())
				case !refuse && dev.rreads != contiguous:
					t.Fatalf("%d blocks (%d contiguous) filled with %d scattered reads and %d others", l.Blocks(), contiguous, dev.rreads, dev.reads)
				case refuse && (dev.rreads != 0 || dev.reads < l.Blocks()):
					t.Fatalf("refused: %d scattered reads, %d others for %d blocks", dev.rreads, dev.reads, l.Blocks())
				}
				// A byte changed at the end of a block's page data.
				l, _, err = st.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
				if err != nil {
					t.Fatal(err)
				}
				bad := l.Blocks() - 2
				bst, runs := blockAt(l, bad)
				last := runs[len(runs)-1]
				mem.Data[bst.base+last.off+int64(last.n)-1] ^= 0x01
				if err := l.Fill(bad, viewMem{got}); !errors.Is(err, ErrAuth) && !errors.Is(err, ErrChecksum) {
					t.Fatalf("corrupt block %d: %v", bad, err)
				}
			})
		}
	}
}

func runsBytes(runs []lazyRun) (n uint64) {
	for _, r := range runs {
		n += r.n
	}
	return n
}

// aheadMem is a scatterMem whose scattered reads can also run
// asynchronously (AsyncReader): their bytes arrive only at Sync, so a
// fill that checked a block before waiting would check stale memory.
type aheadMem struct {
	scatterMem
	pending []pendingRead
	started int
}

type pendingRead struct {
	segs [][]byte
	off  int64
}

func (m *aheadMem) ReadVAsync(segs [][]byte, off int64) (bool, error) {
	n := 0
	for _, s := range segs {
		n += len(s)
	}
	if err := CheckRequest(m.Sector, m.Size(), n, off); err != nil {
		return false, err
	}
	m.pending = append(m.pending, pendingRead{append([][]byte(nil), segs...), off})
	m.started++
	return true, nil
}

func (m *aheadMem) WriteAsync(p []byte, off int64) error {
	_, err := m.WriteAt(p, off)
	return err
}

func (m *aheadMem) Sync() error {
	for _, r := range m.pending {
		off := r.off
		for _, s := range r.segs {
			off += int64(copy(s, m.Data[off:]))
		}
	}
	m.pending = nil
	return nil
}

// TestLazyReadAhead: on an AsyncReader a lazy fill reads the next block
// while it checks this one; filled in order most blocks come from reads
// started ahead, in any order the result is what an eager decode gives,
// a corrupt block read ahead is still found, and Close leaves no read in
// flight.
func TestLazyReadAhead(t *testing.T) {
	key := []byte("ahead key")
	mem, s, c, _ := lazyStore(t, 77, key, 512)
	want := eagerRAM(t, s, c, key)
	for _, order := range []string{"sequential", "random"} {
		t.Run(order, func(t *testing.T) {
			dev := &aheadMem{scatterMem: scatterMem{MemDevice: mem}}
			var now uint64
			st, err := Open(dev, StoreOptions{Clock: func() uint64 { now++; return now }})
			if err != nil {
				t.Fatal(err)
			}
			l, _, err := st.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
			if err != nil {
				t.Fatal(err)
			}
			blocks := make([]int, l.Blocks())
			for i := range blocks {
				blocks[i] = i
			}
			if order == "random" {
				blocks = rand.New(rand.NewSource(5)).Perm(l.Blocks())
			}
			got := &guestMem{b: make([]byte, lazyVMSize)}
			dev.rreads = 0
			for _, i := range blocks {
				if err := l.Fill(i, viewMem{got}); err != nil {
					t.Fatal(err)
				}
			}
			l.Close()
			if len(dev.pending) != 0 {
				t.Fatalf("%d reads in flight after Close", len(dev.pending))
			}
			if !bytes.Equal(got.b, want) {
				t.Fatal("RAM filled with reads ahead differs from the eager decode")
			}
			if order == "sequential" && dev.started == 0 || dev.rreads+dev.started < l.Blocks()-1 {
				t.Fatalf("%d blocks: %d read ahead, %d read when filled", l.Blocks(), dev.started, dev.rreads)
			}
			if p := l.Profile(); p.Read == 0 || p.Check == 0 || order == "sequential" && p.Ahead != dev.started {
				t.Fatalf("profile %+v: %d reads started ahead (all used when filled in order)", p, dev.started)
			}
		})
	}
	// The block after a filled one is read ahead; a byte of it changed
	// on the disk is found when it is filled.
	dev := &aheadMem{scatterMem: scatterMem{MemDevice: mem}}
	st, err := Open(dev, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, _, err := st.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	got := &guestMem{b: make([]byte, lazyVMSize)}
	if err := l.Fill(0, viewMem{got}); err != nil {
		t.Fatal(err)
	}
	if len(dev.pending) != 1 {
		t.Fatalf("%d reads started ahead after filling block 0", len(dev.pending))
	}
	bst, runs := blockAt(l, 1)
	mem.Data[bst.base+runs[0].off+5] ^= 0x40
	if err := l.Fill(1, viewMem{got}); !errors.Is(err, ErrAuth) && !errors.Is(err, ErrChecksum) {
		t.Fatalf("corrupt block read ahead: %v", err)
	}
	mem.Data[bst.base+runs[0].off+5] ^= 0x40
	l.Close()
}

// TestViewReadsAhead: a slot view (a restore of a chosen generation)
// passes scattered and asynchronous reads to the device, so its lazy fill
// reads as the store's does; a scattered read overlapping a hidden commit
// record is refused, to be read through the mask.
func TestViewReadsAhead(t *testing.T) {
	mem, _, c, _ := lazyStore(t, 78, nil, 512)
	dev := &aheadMem{scatterMem: scatterMem{MemDevice: mem}}
	st, err := Open(dev, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := eagerRAM(t, st, c, nil)
	view, err := st.CommitView(c)
	if err != nil {
		t.Fatal(err)
	}
	l, _, err := view.OpenLazy(c, DecodeOptions{Registry: testRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	got := &guestMem{b: make([]byte, lazyVMSize)}
	for i := range l.Blocks() {
		if err := l.Fill(i, viewMem{got}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	if !bytes.Equal(got.b, want) {
		t.Fatal("RAM filled through the view differs from the eager decode")
	}
	// Block 0 spans both RAM ranges (not contiguous in the stream): the
	// others are read ahead.
	if l.Profile().Ahead != l.Blocks()-1 {
		t.Fatalf("through the view: %d of %d blocks read ahead", l.Profile().Ahead, l.Blocks())
	}
	mask := view.Device().(recordMask)
	if done, err := mask.ReadV([][]byte{make([]byte, 512)}, int64(RecordArea)); done || err != nil {
		t.Fatalf("a scattered read of a hidden record: done %v, %v", done, err)
	}
}

// TestFailedFinishLeavesNoWriteInFlight: a stream that overflows its slot
// only in its last, partial buffer fails the save with no write left in
// flight (one still reading guest memory in place).
func TestFailedFinishLeavesNoWriteInFlight(t *testing.T) {
	dev := &vecMem{asyncMem: asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}}
	s := newTestStore(t, dev, 4<<20) // 8 MiB slots; the 10 MiB stream overflows in its last buffer
	big := newTestVM(8, 20<<20)
	big.src = viewMem{big.mem}
	if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, big.fill); !errors.Is(err, errSlotFull) {
		t.Fatal(err)
	}
	if len(dev.pending) != 0 {
		t.Fatalf("%d writes in flight after the failed save", len(dev.pending))
	}
}

// prpFit reports whether NVMe PRP entries can describe segs as one
// command, their addresses taken as physical: the first starts dword
// aligned, every other on a page, and every one but the last ends on a
// page.
func prpFit(segs [][]byte) bool {
	var live [][]byte
	for _, s := range segs {
		if len(s) > 0 {
			live = append(live, s)
		}
	}
	for i, s := range live {
		start := uintptr(unsafe.Pointer(&s[0]))
		if i == 0 && start%4 != 0 || i > 0 && start%PageSize != 0 || i < len(live)-1 && (start+uintptr(len(s)))%PageSize != 0 {
			return false
		}
	}
	return true
}

// TestPageDataAligned: the store starts page data on a page of the device
// (a pad chunk before the RAM chunk), whatever the length of the chunks
// before it, so that a device with NVMe's PRP rules takes every guest page
// in place; the pad is skipped by readers, and the stream restores. (Only
// the first range's page data is aligned: tamavisor saves one range.)
func TestPageDataAligned(t *testing.T) {
	for grow := range 5 {
		dev := &vecMem{asyncMem: asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}, prp: true}
		s := newTestStore(t, dev, 64<<10)
		s.Reserve()
		vm := newTestVM(13, 4<<20)
		vm.src = viewMem{pageAligned(vm.mem.b)}
		vm.devs["debugport"] = make([]byte, grow)
		// One range, as tamavisor saves (only the first range's page
		// data is aligned).
		vm.ranges = vm.ranges[1:]
		c, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill)
		if err != nil {
			t.Fatal(err)
		}
		l, snap, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t)})
		if err != nil {
			t.Fatal(err)
		}
		st := l.streams[0]
		if (st.base+st.ranges[0].off)%PageSize != 0 || snap.Find(TypePad, 0) == nil && st.ranges[0].off%PageSize != 0 {
			t.Fatalf("grow %d: page data at device offset %#x", grow, st.base+st.ranges[0].off)
		}
		if pr := s.LastSaveProfile(); pr.Copied != 0 || pr.InPlace == 0 {
			t.Fatalf("grow %d: %d bytes of page data copied, %d in place", grow, pr.Copied, pr.InPlace)
		}
		sink := &guestMem{b: make([]byte, len(vm.mem.b))}
		if _, _, err := newTestStore(t, dev.MemDevice, 0).Load(DecodeOptions{Registry: testRegistry(t), Memory: sink}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sink.b[testHighGPA:], vm.src.(viewMem).b[testHighGPA:]) {
			t.Fatalf("grow %d: RAM differs after the save", grow)
		}
	}
}

// pageAligned returns a copy of b on a page boundary of memory.
func pageAligned(b []byte) *guestMem {
	buf := make([]byte, len(b)+PageSize)
	off := (PageSize - int(uintptr(unsafe.Pointer(&buf[0]))%PageSize)) % PageSize
	m := &guestMem{b: buf[off : off+len(b) : off+len(b)]}
	copy(m.b, b)
	return m
}

// TestLazyChainReadAhead: a chain's blocks, whose pages newer streams
// partly define, are read ahead too, pages the block's stream owns in
// place and the others into scratch; filled in order or at random, into a
// viewed sink or a written one, RAM is what the eager decode gives.
func TestLazyChainReadAhead(t *testing.T) {
	mem, s, cs, _ := lazyChain(t, 21, nil, -1)
	c := cs[len(cs)-1]
	eager := garbageMem(lazyVMSize)
	if _, err := s.Decode(c, DecodeOptions{Registry: testRegistry(t), Memory: eager}); err != nil {
		t.Fatal(err)
	}
	for _, viewed := range []bool{true, false} {
		for _, order := range []string{"sequential", "random"} {
			t.Run(fmt.Sprintf("viewed=%v/%s", viewed, order), func(t *testing.T) {
				dev := &aheadMem{scatterMem: scatterMem{MemDevice: mem}}
				st, err := Open(dev, StoreOptions{BlockSize: 4096})
				if err != nil {
					t.Fatal(err)
				}
				l, _, err := st.OpenLazy(c, DecodeOptions{Registry: testRegistry(t)})
				if err != nil {
					t.Fatal(err)
				}
				got := garbageMem(lazyVMSize)
				var sink MemorySink = got
				if viewed {
					sink = viewMem{got}
				}
				blocks := rand.New(rand.NewSource(9)).Perm(l.Blocks())
				if order == "sequential" {
					slices.Sort(blocks)
				}
				// In order, a block is read ahead when the one before it
				// was filled (not needed: no fill, nothing read ahead)
				// and its pages are contiguous in its stream.
				ahead := 0
				for j := 1; j < l.Blocks(); j++ {
					_, runs := blockAt(l, j)
					if last := runs[len(runs)-1]; !l.Filled(j) && !l.Filled(j-1) && last.off+int64(last.n) == runs[0].off+int64(runsBytes(runs)) {
						ahead++
					}
				}
				for _, i := range blocks {
					if err := l.Fill(i, sink); err != nil {
						t.Fatal(err)
					}
				}
				l.Close()
				checkLazyRAM(t, l, got, eager.b, "lazily filled RAM of the chain differs from the eager decode")
				if order == "sequential" && (l.Profile().Ahead != ahead || ahead == 0) {
					t.Fatalf("%d of %d blocks read ahead, want %d", l.Profile().Ahead, l.Fills(), ahead)
				}
			})
		}
	}
}

// flushMem is a vecMem that also flushes asynchronously (AsyncFlusher),
// recording, for each flush, whether every write started before it had
// completed (a flush covers completed writes only).
type flushMem struct {
	vecMem
	flushes  int
	covering bool // every flush came after the writes before it completed
}

func (f *flushMem) FlushAsync() error {
	f.flushes++
	if len(f.pending) != 0 {
		f.covering = false
	}
	return nil
}

// TestSaveFlushesAsItGoes: on an AsyncFlusher a save starts a flush every
// flushInterval bytes, each after the writes before it completed, and
// the snapshot loads.
func TestSaveFlushesAsItGoes(t *testing.T) {
	defer func(n int64) { flushInterval = n }(flushInterval)
	flushInterval = 256 << 10
	dev := &flushMem{vecMem: vecMem{asyncMem: asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}}, covering: true}
	s := newTestStore(t, dev, 64<<10)
	vm := newTestVM(14, 4<<20)
	vm.src = viewMem{vm.mem}
	c, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill)
	if err != nil {
		t.Fatal(err)
	}
	if want := int(c.Length / (256 << 10)); dev.flushes < want-2 || dev.flushes > want || !dev.covering {
		t.Fatalf("%d flushes started for a %d-byte stream (want about %d), each after the writes before it: %v", dev.flushes, c.Length, want, dev.covering)
	}
	sink := &guestMem{b: make([]byte, len(vm.mem.b))}
	if _, _, err := newTestStore(t, dev.MemDevice, 0).Load(DecodeOptions{Registry: testRegistry(t), Memory: sink}); err != nil {
		t.Fatal(err)
	}
	if !ramEqual(vm, sink) {
		t.Fatal("RAM differs after a save with flushes")
	}
}
