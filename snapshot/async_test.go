package snapshot

import (
	"bytes"
	"errors"
	"testing"
)

// asyncMem is a MemDevice with AsyncWriter writes that reach the medium
// only at Sync, copied from the caller's buffer then: a writer that
// reuses a buffer before Sync stores the wrong bytes.
type asyncMem struct {
	*MemDevice
	pending []pendingWrite
	fail    error // returned by the next Sync
	started int
}

type pendingWrite struct {
	p   []byte
	off int64
}

func (a *asyncMem) WriteAsync(p []byte, off int64) error {
	if err := CheckRequest(a.Sector, a.Size(), len(p), off); err != nil {
		return err
	}
	a.pending = append(a.pending, pendingWrite{p, off})
	a.started++
	return nil
}

func (a *asyncMem) Sync() error {
	for _, w := range a.pending {
		copy(a.Data[w.off:], w.p)
	}
	a.pending = nil
	err := a.fail
	a.fail = nil
	return err
}

// TestStoreAsyncDevice: on an AsyncWriter the store writes through it
// with two buffers (several writes outstanding across buffer refills),
// and the snapshot loads byte-identical; a failed write fails the save.
func TestStoreAsyncDevice(t *testing.T) {
	dev := &asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}
	s := newTestStore(t, dev, 64<<10)
	reg := testRegistry(t)
	vm := newTestVM(7, 3<<20)
	if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill); err != nil {
		t.Fatal(err)
	}
	if dev.started < 8 {
		t.Fatalf("%d asynchronous writes for a 3 MiB snapshot in 64 KiB blocks", dev.started)
	}
	sink := &guestMem{b: make([]byte, len(vm.mem.b))}
	if _, _, err := newTestStore(t, dev.MemDevice, 0).Load(DecodeOptions{Registry: reg, Memory: sink}); err != nil {
		t.Fatal(err)
	}
	if !ramEqual(vm, sink) {
		t.Fatal("RAM differs after a save through asynchronous writes")
	}
	dev.fail = errors.New("injected write error")
	_, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("injected write error")) {
		t.Fatalf("save with a failed asynchronous write: %v", err)
	}
}

// scribbler is guest memory that a "guest" overwrites behind the writer:
// every page the writer reported done (Copied) is scribbled over, the
// way a guest writes RAM during a live save.
type scribbler struct {
	*guestMem
	done uint64
}

func (s *scribbler) copied(gpa uint64) {
	if gpa < s.done {
		panic("Copied went backwards")
	}
	for p := s.done; p < gpa; p += PageSize {
		for i := range PageSize {
			s.b[p+uint64(i)] ^= 0xa5
		}
	}
	s.done = gpa
}

// TestRAMCopied: Copied reports progress in GPA order up to the end of
// RAM, and pages changed once reported done do not change the snapshot.
func TestRAMCopied(t *testing.T) {
	vm := newTestVM(3, 2<<20)
	want := bytes.Clone(vm.mem.b)
	src := &scribbler{guestMem: vm.mem}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Generation: 1, VMName: "vm"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteManifest(vm.manifest); err != nil {
		t.Fatal(err)
	}
	for i, b := range vm.vcpus {
		if err := w.WriteChunk(TypeVCPU, uint32(i), 1, Required, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range vm.manifest.Devices {
		if err := w.WriteDevice(d.Name, d.Instance, vm.devs[d.Name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteRAM(src, vm.ranges, RAMOptions{Copied: src.copied}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	last := vm.ranges[len(vm.ranges)-1]
	if src.done != last.GPA+last.Size {
		t.Fatalf("Copied reached %#x, want the end of RAM %#x", src.done, last.GPA+last.Size)
	}
	sink := &guestMem{b: make([]byte, len(want))}
	if _, err := decodeBytes(buf.Bytes(), DecodeOptions{Registry: testRegistry(t), Memory: sink}); err != nil {
		t.Fatal(err)
	}
	for _, r := range vm.ranges {
		if !bytes.Equal(sink.b[r.GPA:r.GPA+r.Size], want[r.GPA:r.GPA+r.Size]) {
			t.Fatalf("range %#x: the snapshot has bytes written after Copied", r.GPA)
		}
	}
}

// TestSaveProfileAndBuffers: with a clock the store times each phase of a
// save, and its buffers serve every save (a second save on the same store
// after a failed one stores the right bytes: no write of the failed save
// was left in flight on a reused buffer).
func TestSaveProfileAndBuffers(t *testing.T) {
	dev := &asyncMem{MemDevice: NewMemDevice(DataStart+2*(8<<20), 512)}
	var now uint64
	s, err := Open(dev, StoreOptions{BlockSize: 64 << 10, Clock: func() uint64 { now++; return now }})
	if err != nil {
		t.Fatal(err)
	}
	s.Reserve()
	bufs := s.bufs
	vm := newTestVM(7, 3<<20)
	big := newTestVM(8, 20<<20) // about 10 MiB of data: does not fit the 8 MiB slot
	if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, big.fill); !errors.Is(err, errSlotFull) {
		t.Fatalf("save larger than the slot: %v", err)
	}
	if len(dev.pending) != 0 {
		t.Fatalf("%d writes of the failed save still in flight", len(dev.pending))
	}
	if _, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill); err != nil {
		t.Fatal(err)
	}
	if ph := s.LastSaveProfile(); ph.Prepare == 0 || ph.Scan == 0 || ph.Data == 0 || ph.Drain == 0 || ph.Flush == 0 || ph.Commit == 0 {
		t.Fatalf("phases %+v: want every phase timed", ph)
	}
	if &s.bufs[0][0] != &bufs[0][0] || &s.bufs[2][0] != &bufs[2][0] {
		t.Fatal("the store allocated new buffers for a save")
	}
	sink := &guestMem{b: make([]byte, len(vm.mem.b))}
	if _, _, err := newTestStore(t, dev.MemDevice, 0).Load(DecodeOptions{Registry: testRegistry(t), Memory: sink}); err != nil {
		t.Fatal(err)
	}
	if !ramEqual(vm, sink) {
		t.Fatal("RAM differs after a save on reused buffers")
	}
}
