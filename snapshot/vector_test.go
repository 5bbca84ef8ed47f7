package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"testing"
)

// vecMem is an asyncMem that also gathers writes from several buffers
// (VectorWriter): like its WriteAsync, the segments are read only at Sync,
// so a writer that changes one before Sync stores the wrong bytes. refuse
// makes every other vectored write refused (started false), as a device
// that cannot describe the segments does.
type vecMem struct {
	asyncMem
	refuse  bool
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
	if v.refuse && v.calls%2 == 0 {
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

// TestStoreZeroCopy: on a VectorWriter a save writes guest pages from
// guest memory in place (a Viewer source), gathered with the store's
// staged bytes; the snapshot loads byte-identical, also when the device
// refuses some gathers (the store copies those) and for keyed snapshots.
func TestStoreZeroCopy(t *testing.T) {
	for _, c := range []struct {
		name   string
		refuse bool
		key    []byte
	}{{"in place", false, nil}, {"some refused", true, nil}, {"keyed", false, []byte("zero copy key")}} {
		t.Run(c.name, func(t *testing.T) {
			dev := &vecMem{asyncMem: asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}, refuse: c.refuse}
			s := newTestStore(t, dev, 64<<10)
			s.Reserve()
			dev.bufs = s.bufs[:]
			vm := newTestVM(11, 4<<20)
			vm.src = viewMem{vm.mem}
			if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}, Key: c.key}, vm.fill); err != nil {
				t.Fatal(err)
			}
			var data int64
			for p := 0; p < len(vm.mem.b); p += PageSize {
				if !IsZeroPage(vm.mem.b[p : p+PageSize]) {
					data += PageSize
				}
			}
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
	sink := &guestMem{b: make([]byte, len(want))}
	if _, _, err := newTestStore(t, dev.MemDevice, 0).Load(DecodeOptions{Registry: testRegistry(t), Memory: sink}); err != nil {
		t.Fatal(err)
	}
	for _, r := range vm.ranges {
		if !bytes.Equal(sink.b[r.GPA:r.GPA+r.Size], want[r.GPA:r.GPA+r.Size]) {
			t.Fatalf("range %#x: the snapshot has bytes written after Copied", r.GPA)
		}
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
