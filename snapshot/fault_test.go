package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// devOp is one request a save made: a write or a flush.
type devOp struct {
	flush bool
	off   int64
	data  []byte
}

// recordingDevice is a MemDevice that records every write and flush.
type recordingDevice struct {
	*MemDevice
	ops []devOp
}

func (r *recordingDevice) WriteAt(p []byte, off int64) (int, error) {
	r.ops = append(r.ops, devOp{off: off, data: bytes.Clone(p)})
	return r.MemDevice.WriteAt(p, off)
}

func (r *recordingDevice) Flush() error {
	r.ops = append(r.ops, devOp{flush: true})
	return nil
}

// crashImage's tornSectors: tornDropped drops op k; tornInRecord tears it
// inside its first commit record (only the first half of the record's
// bytes are written).
const (
	tornDropped  = -1
	tornInRecord = -2
)

// crashImage returns the device image after a power cut at op k of ops,
// applied on top of base. Writes before the last flush preceding k are
// durable. Writes after it (pending) survive according to keep. Op k
// itself, if a write, is applied torn: its first tornSectors sectors plus
// half of the next (tornSectors -1: dropped; tornInRecord: half a record).
func crashImage(base []byte, ops []devOp, k int, sector int, keep func(i, n int) bool, tornSectors int) []byte {
	img := bytes.Clone(base)
	lastFlush := -1
	for i := 0; i < k; i++ {
		if ops[i].flush {
			lastFlush = i
		}
	}
	for i := 0; i <= lastFlush; i++ {
		if !ops[i].flush {
			copy(img[ops[i].off:], ops[i].data)
		}
	}
	var pending []devOp
	for i := lastFlush + 1; i < k; i++ {
		pending = append(pending, ops[i])
	}
	for i, op := range pending {
		if keep(i, len(pending)) {
			copy(img[op.off:], op.data)
		}
	}
	if k < len(ops) && !ops[k].flush && tornSectors != tornDropped {
		op := ops[k]
		n := min(tornSectors*sector+sector/2, len(op.data))
		if tornSectors == tornInRecord {
			n = RecordSize / 2
		}
		copy(img[op.off:], op.data[:n])
	}
	return img
}

var keepPolicies = []struct {
	name string
	keep func(i, n int) bool
}{
	{"pending-lost", func(i, n int) bool { return false }},
	{"pending-kept", func(i, n int) bool { return true }},
	{"pending-even-kept", func(i, n int) bool { return i%2 == 0 }},
	{"pending-last-only", func(i, n int) bool { return i == n-1 }},
}

// TestTornWrites saves over stores holding zero, one and two snapshots,
// and at every write/flush boundary of the save simulates a power cut with
// the current write dropped or torn (whole sectors plus a torn sector at
// the start, middle and end) and unflushed writes lost, kept or partly
// kept. Load must then return the previous or the new snapshot, intact,
// and never fail when a previous snapshot existed.
func TestTornWrites(t *testing.T) {
	const sector = 512
	reg := testRegistry(t)
	for prior := 0; prior <= 2; prior++ {
		t.Run(fmt.Sprintf("prior=%d", prior), func(t *testing.T) {
			dev := NewMemDevice(DataStart+2*MinSlotSize*4, sector)
			s := newTestStore(t, dev, 4096)
			vms := map[uint64]*testVM{}
			for g := 1; g <= prior; g++ {
				vm := tinyVM(int64(g))
				vm.mem.b[testHighGPA+g] = 1 // second data page
				vms[uint64(g)] = vm
				if _, err := s.Save(SaveOptions{}, vm.fill); err != nil {
					t.Fatal(err)
				}
			}
			base := bytes.Clone(dev.Data)
			oldGen := uint64(prior)
			newGen := oldGen + 1
			vm := tinyVM(99)
			for _, p := range []int{0, 2, 3, 4, 30, 100, 159} {
				vm.mem.b[p*PageSize+p] = byte(p + 1)
			}
			vms[newGen] = vm
			rec := &recordingDevice{MemDevice: &MemDevice{Sector: sector, Data: bytes.Clone(base)}}
			if _, err := newTestStore(t, rec, 4096).Save(SaveOptions{}, vm.fill); err != nil {
				t.Fatal(err)
			}
			ops := rec.ops
			commitOp := len(ops) - 2 // the commit record write, before the last flush
			if ops[commitOp].flush || ops[commitOp].off >= DataStart || !ops[len(ops)-1].flush {
				t.Fatalf("unexpected op sequence ending %+v", ops[len(ops)-2:])
			}
			if len(ops) < 10 {
				t.Fatalf("only %d ops: the test does not exercise much", len(ops))
			}
			cases := 0
			for k := 0; k <= len(ops); k++ {
				torn := tornCases(ops, k, sector)
				for _, kp := range keepPolicies {
					for _, ts := range torn {
						cases++
						img := crashImage(base, ops, k, sector, kp.keep, ts)
						name := fmt.Sprintf("op %d/%d %s torn=%d", k, len(ops), kp.name, ts)
						checkCrash(t, name, img, sector, reg, vms, oldGen, newGen, k, commitOp, len(ops))
					}
				}
			}
			t.Logf("%d ops, %d crash cases", len(ops), cases)
		})
	}
}

// tornCases are the ways op k is cut by the power (crashImage's
// tornSectors): dropped, and for a write torn after its first sector, its
// middle and last sector, and inside a commit record.
func tornCases(ops []devOp, k, sector int) []int {
	torn := []int{tornDropped}
	if k < len(ops) && !ops[k].flush {
		n := len(ops[k].data) / sector
		torn = append(torn, 0, n/2, n-1)
		if ops[k].off < DataStart {
			torn = append(torn, tornInRecord)
		}
	}
	return torn
}

func checkCrash(t *testing.T, name string, img []byte, sector int, reg *Registry, vms map[uint64]*testVM, oldGen, newGen uint64, k, commitOp, nOps int) {
	t.Helper()
	dev := &MemDevice{Sector: sector, Data: img}
	s := newTestStore(t, dev, 4096)
	sink := garbageMem(testHighGPA + 2*PageSize)
	snap, c, err := s.Load(DecodeOptions{Registry: reg, Memory: sink})
	if err != nil {
		if oldGen == 0 && k < nOps && errors.Is(err, ErrNoSnapshot) {
			return // nothing existed and nothing was committed
		}
		t.Fatalf("%s: load failed: %v", name, err)
	}
	gen := snap.Header.Generation
	switch {
	case gen != oldGen && gen != newGen:
		t.Fatalf("%s: loaded generation %d, want %d or %d", name, gen, oldGen, newGen)
	case k < commitOp && gen != oldGen:
		t.Fatalf("%s: generation %d visible before its commit record", name, gen)
	case k == nOps && gen != newGen:
		t.Fatalf("%s: completed save not loaded (got generation %d)", name, gen)
	case c.Generation != gen:
		t.Fatalf("%s: commit generation %d, snapshot %d", name, c.Generation, gen)
	}
	vm := vms[gen]
	if !ramEqual(vm, &guestMem{b: sink.b[:len(vm.mem.b)]}) {
		t.Fatalf("%s: generation %d RAM differs", name, gen)
	}
	for i, b := range vm.vcpus {
		if ch := snap.Find(TypeVCPU, uint32(i)); ch == nil || !bytes.Equal(ch.Body, b) {
			t.Fatalf("%s: vcpu %d differs", name, i)
		}
	}
	for dn, st := range vm.devs {
		if ch := snap.Find(DevicePrefix+dn, 0); ch == nil || !bytes.Equal(ch.Body, st) {
			t.Fatalf("%s: device %s differs", name, dn)
		}
	}
	// The store keeps working: the next save gets a higher generation and
	// becomes the newest.
	next, err := s.Save(SaveOptions{}, tinyVM(5).fill)
	if err != nil {
		t.Fatalf("%s: save after crash: %v", name, err)
	}
	if next.Generation <= gen {
		t.Fatalf("%s: next generation %d not above %d", name, next.Generation, gen)
	}
	if _, c2, err := s.Load(DecodeOptions{Registry: reg}); err != nil || c2.Generation != next.Generation {
		t.Fatalf("%s: after the next save: %v", name, err)
	}
}

// TestTornWritesIncrement is TestTornWrites for increments: over stores
// whose newest snapshot is a full one (the other slot empty), an
// increment (its record at the slot's first position, which the save
// rewrites), or an increment with a full snapshot in the other slot, and
// trusting the commit record or reading the chain back, it cuts the
// power at every write and flush of an increment save. Load must return
// the previous or the new snapshot, byte-identical, never an older one.
func TestTornWritesIncrement(t *testing.T) {
	const sector = 512
	reg := testRegistry(t)
	for _, tc := range []struct {
		name   string
		prior  []bool // per save before the one cut: increment (or full)
		trust  bool
		oldGen uint64
	}{
		{"on-full", []bool{false}, false, 1},
		{"on-increment", []bool{false, true}, true, 2},
		{"two-slots", []bool{false, false, true, true}, false, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := NewMemDevice(DataStart+2*MinSlotSize*4, sector)
			s := newTestStore(t, dev, 4096)
			vm := newChainVM(tinyVM(21), 22)
			vms := map[uint64]*testVM{}
			var base *Commit
			for i, inc := range tc.prior {
				if i > 0 {
					vm.mutate(4)
				}
				if !inc {
					base = nil
				}
				c, err := vm.save(s, base, SaveOptions{})
				if err != nil {
					t.Fatal(err)
				}
				vms[c.Generation], base = vm.state(), c
			}
			if base.Generation != tc.oldGen {
				t.Fatalf("prior saves end at generation %d", base.Generation)
			}
			before := bytes.Clone(dev.Data)
			vm.mutate(30)
			rec := &recordingDevice{MemDevice: &MemDevice{Sector: sector, Data: bytes.Clone(before)}}
			c, err := vm.save(newTestStore(t, rec, 4096), base, SaveOptions{TrustCommit: tc.trust})
			if err != nil {
				t.Fatal(err)
			}
			vms[c.Generation] = vm.state()
			ops := rec.ops
			commitOp := len(ops) - 2
			if ops[commitOp].flush || ops[commitOp].off != recordAt(base.Slot, 1-base.Position) || !ops[len(ops)-1].flush {
				t.Fatalf("unexpected op sequence ending %+v", ops[len(ops)-2:])
			}
			for _, op := range ops {
				if !op.flush && op.off >= DataStart && op.off < base.Offset+base.Length {
					t.Fatalf("the increment wrote at %d, inside the committed chain (ends at %d)", op.off, base.Offset+base.Length)
				}
			}
			if len(ops) < 10 {
				t.Fatalf("only %d ops: the test does not exercise much", len(ops))
			}
			cases := 0
			for k := 0; k <= len(ops); k++ {
				for _, kp := range keepPolicies {
					for _, ts := range tornCases(ops, k, sector) {
						cases++
						img := crashImage(before, ops, k, sector, kp.keep, ts)
						name := fmt.Sprintf("op %d/%d %s torn=%d", k, len(ops), kp.name, ts)
						checkCrash(t, name, img, sector, reg, vms, tc.oldGen, c.Generation, k, commitOp, len(ops))
					}
				}
			}
			t.Logf("%d ops, %d crash cases", len(ops), cases)
		})
	}
}
