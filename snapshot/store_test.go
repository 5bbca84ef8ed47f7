package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

const testDevSize = DataStart + 2*(1<<20)

func newTestStore(t testing.TB, dev BlockDevice, block int) *Store {
	t.Helper()
	s, err := Open(dev, StoreOptions{BlockSize: block})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreSaveLoad(t *testing.T) {
	dev := NewMemDevice(testDevSize, 512)
	s := newTestStore(t, dev, 0)
	reg := testRegistry(t)
	if _, _, err := s.Load(DecodeOptions{Registry: reg}); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("empty store: %v", err)
	}
	var slots []int
	for gen := uint64(1); gen <= 4; gen++ {
		vm := newTestVM(int64(gen), 1<<20+128<<10)
		c, err := s.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill)
		if err != nil {
			t.Fatal(err)
		}
		if c.Generation != gen {
			t.Errorf("generation %d, want %d", c.Generation, gen)
		}
		slots = append(slots, c.Slot)
		// A fresh Store (as after a reboot) loads the same snapshot.
		sink := &guestMem{b: make([]byte, len(vm.mem.b))}
		snap, lc, err := newTestStore(t, dev, 0).Load(DecodeOptions{Registry: reg, Memory: sink})
		if err != nil {
			t.Fatal(err)
		}
		if lc.Generation != gen || snap.Header.Generation != gen || !bytes.Equal(sink.b, vm.mem.b[:len(sink.b)]) && !ramEqual(vm, sink) {
			t.Errorf("generation %d: loaded %d", gen, lc.Generation)
		}
	}
	if fmt.Sprint(slots) != "[0 1 0 1]" {
		t.Errorf("slots used %v, want alternating", slots)
	}
}

// ramEqual compares the RAM ranges of vm with sink.
func ramEqual(vm *testVM, sink *guestMem) bool {
	for _, r := range vm.ranges {
		if !bytes.Equal(sink.b[r.GPA:r.GPA+r.Size], vm.mem.b[r.GPA:r.GPA+r.Size]) {
			return false
		}
	}
	return true
}

func TestStoreFallsBackOnCorruption(t *testing.T) {
	dev := NewMemDevice(testDevSize, 512)
	s := newTestStore(t, dev, 0)
	reg := testRegistry(t)
	old := newTestVM(1, 1<<20+64<<10)
	s.Save(SaveOptions{}, old.fill)
	c2, err := s.Save(SaveOptions{}, newTestVM(2, 1<<20+64<<10).fill)
	if err != nil {
		t.Fatal(err)
	}
	dev.Data[c2.Offset+c2.Length/2] ^= 0xff
	snap, c, err := newTestStore(t, dev, 0).Load(DecodeOptions{Registry: reg})
	if err != nil || c.Generation != 1 || snap.Header.Generation != 1 {
		t.Fatalf("fallback: %v %+v", err, c)
	}
	// The next save must not overwrite the valid generation 1.
	c3, err := s.Save(SaveOptions{}, newTestVM(3, 1<<20+64<<10).fill)
	if err != nil || c3.Slot != c2.Slot || c3.Generation != 3 {
		t.Fatalf("save after corruption: %v %+v", err, c3)
	}
	// Corrupting a commit record makes its slot invisible.
	dev.Data[int64(c3.Slot)*RecordArea+20] ^= 1
	_, c, err = newTestStore(t, dev, 0).Load(DecodeOptions{Registry: reg})
	if err != nil || c.Generation != 1 {
		t.Fatalf("corrupt record: %v %+v", err, c)
	}
}

func TestStoreTrustCommit(t *testing.T) {
	dev := NewMemDevice(testDevSize, 512)
	s := newTestStore(t, dev, 0)
	c1, _ := s.Save(SaveOptions{TrustCommit: true}, newTestVM(1, 1<<20+64<<10).fill)
	c2, err := s.Save(SaveOptions{TrustCommit: true}, newTestVM(2, 1<<20+64<<10).fill)
	if err != nil || c2.Slot == c1.Slot {
		t.Fatalf("second save %+v %v must use the other slot than %+v", c2, err, c1)
	}
	// Corrupt generation 2's data: a trusting save still keeps its slot
	// (the commit record says it is newest) and overwrites generation 1.
	dev.Data[c2.Offset+c2.Length/2] ^= 0xff
	c3, err := s.Save(SaveOptions{TrustCommit: true}, newTestVM(3, 1<<20+64<<10).fill)
	if err != nil || c3.Slot != c1.Slot || c3.Generation != 3 {
		t.Fatalf("trusting save after corruption: %+v %v", c3, err)
	}
	if _, c, err := s.Load(DecodeOptions{Registry: testRegistry(t)}); err != nil || c.Generation != 3 {
		t.Fatalf("load: %+v %v", c, err)
	}
}

func TestStoreHMAC(t *testing.T) {
	dev := NewMemDevice(testDevSize, 4096)
	s := newTestStore(t, dev, 0)
	key := []byte("k")
	if _, err := s.Save(SaveOptions{Key: key}, newTestVM(1, 1<<20+64<<10).fill); err != nil {
		t.Fatal(err)
	}
	reg := testRegistry(t)
	if _, _, err := s.Load(DecodeOptions{Registry: reg, Key: key}); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Load(DecodeOptions{Registry: reg, Key: []byte("other")})
	if !errors.Is(err, ErrAuth) || !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("wrong key: %v", err)
	}
}

func TestStoreTooSmall(t *testing.T) {
	if _, err := Open(NewMemDevice(DataStart+MinSlotSize, 512), StoreOptions{}); err == nil {
		t.Error("tiny device accepted")
	}
	if _, err := Open(NewMemDevice(testDevSize, 1000), StoreOptions{}); err == nil {
		t.Error("sector size 1000 accepted")
	}
	s := newTestStore(t, NewMemDevice(DataStart+2*MinSlotSize, 512), 0)
	_, err := s.Save(SaveOptions{}, newTestVM(1, 1<<20+256<<10).fill)
	if !errors.Is(err, errSlotFull) {
		t.Errorf("oversized snapshot: %v", err)
	}
}

// TestSlotView: a slot view shows that slot's snapshot only (so Load takes
// it even when the other is newer) and refuses writes.
func TestSlotView(t *testing.T) {
	st := newTestStore(t, NewMemDevice(8<<20, 512), 0)
	vm := newTestVM(31, 1<<20+128<<10)
	for range 2 {
		if _, err := st.Save(SaveOptions{Header: Header{VMName: "v"}}, vm.fill); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := st.Records()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		view, err := st.SlotView(r.Slot)
		if err != nil {
			t.Fatal(err)
		}
		_, c, err := view.Load(DecodeOptions{Registry: testRegistry(t)})
		if err != nil || c.Slot != r.Slot || c.Generation != r.Commit.Generation {
			t.Errorf("view of slot %d loads %+v, %v", r.Slot, c, err)
		}
		if _, err := view.Save(SaveOptions{}, vm.fill); err == nil {
			t.Errorf("a save into the view of slot %d succeeded", r.Slot)
		}
	}
	if _, err := st.SlotView(2); err == nil {
		t.Error("slot 2 view made")
	}
}
