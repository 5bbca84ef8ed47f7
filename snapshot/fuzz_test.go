package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fuzzDeviceSize is the device size FuzzStoreLoad uses: the smallest store.
const fuzzDeviceSize = DataStart + 2*MinSlotSize

// tinyVM is a VM with one non-zero page, for small fuzz seeds.
func tinyVM(seed int64) *testVM {
	vm := newTestVM(seed, testHighGPA+2*PageSize)
	clear(vm.mem.b)
	for i := 0; i < PageSize; i++ {
		vm.mem.b[PageSize+i] = byte(i * int(seed))
	}
	return vm
}

// zeroVM is a VM whose RAM is all zero: its snapshot is about 1 KiB, which
// keeps fuzz seeds small (the fuzzer minimizes interesting inputs, and large
// ones take long).
func zeroVM(seed int64) *testVM {
	vm := tinyVM(seed)
	clear(vm.mem.b)
	return vm
}

// minVM is the smallest useful VM: one vCPU, 16 KiB of zero RAM, no
// devices. Its snapshot is about 400 bytes.
func minVM(seed byte) *testVM {
	vm := &testVM{
		mem:      &guestMem{b: make([]byte, 4*PageSize)},
		manifest: &Manifest{VCPUs: 1, Memory: []MemRegion{{GPA: 0, Size: 4 * PageSize, Kind: MemRAM}}},
		ranges:   []MemRange{{0, 4 * PageSize}},
	}
	vm.manifest.Properties = []Property{{Key: "seed", Value: string('0' + seed)}}
	return vm
}

// Fuzz store images are compact: bytes [0,128) are commit record A,
// [128,256) record B, and the rest is split in two halves that start slot 0
// and slot 1.
func fuzzImage(b []byte) *MemDevice {
	dev := NewMemDevice(fuzzDeviceSize, 512)
	copy(dev.Data[0:RecordSize], b)
	if len(b) > RecordSize {
		copy(dev.Data[RecordArea:RecordArea+RecordSize], b[RecordSize:])
	}
	if len(b) > 2*RecordSize {
		rest := b[2*RecordSize:]
		h := len(rest) / 2
		copy(dev.Data[DataStart:DataStart+MinSlotSize], rest[:h])
		copy(dev.Data[DataStart+MinSlotSize:], rest[h:])
	}
	return dev
}

// compactImage is the inverse of fuzzImage for a store whose two streams
// are each at most n bytes long.
func compactImage(dev *MemDevice, n int) []byte {
	b := append([]byte(nil), dev.Data[0:RecordSize]...)
	b = append(b, dev.Data[RecordArea:RecordArea+RecordSize]...)
	b = append(b, dev.Data[DataStart:DataStart+n]...)
	return append(b, dev.Data[DataStart+MinSlotSize:DataStart+MinSlotSize+n]...)
}

// tinyStore returns a compact fuzz store image holding n snapshots of
// all-zero VMs (n <= 2 fills both slots).
func tinyStore(t testing.TB, n int, key []byte) []byte {
	dev := NewMemDevice(fuzzDeviceSize, 512)
	s, err := Open(dev, StoreOptions{BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	var longest int64
	for i := 0; i < n; i++ {
		c, err := s.Save(SaveOptions{Header: Header{VMName: "fuzz"}, Key: key}, minVM(byte(i+1)).fill)
		if err != nil {
			t.Fatal(err)
		}
		longest = max(longest, c.Length)
	}
	return compactImage(dev, int(longest))
}

func writeSeed(t testing.TB, target, name string, b []byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeFuzzSeeds writes the seed corpora (called by TestGenerateFixtures
// with -update).
func writeFuzzSeeds(t *testing.T) {
	writeSeed(t, "FuzzDecode", "tiny", zeroVM(1).encode(t, 1, nil))
	writeSeed(t, "FuzzDecode", "tiny-keyed", zeroVM(2).encode(t, 2, []byte("fuzz key")))
	vm := zeroVM(3)
	vm.extra = true
	writeSeed(t, "FuzzDecode", "tiny-unknown-optional", vm.encode(t, 3, nil))
	writeSeed(t, "FuzzDecode", "manifest-v1", encodeV1(t, zeroVM(4)))
	one := tinyVM(5)
	one.manifest.Devices = nil
	one.ranges = one.ranges[1:]
	writeSeed(t, "FuzzDecode", "one-page", one.encode(t, 5, nil))
	writeSeed(t, "FuzzStoreLoad", "intact", nil)
	writeSeed(t, "FuzzStoreLoad", "record-b-generation", []byte{128 + 16, 0, 0, 0x01})
	writeSeed(t, "FuzzStoreLoad", "record-a-length", []byte{32, 0, 0, 0xff, 33, 0, 0, 0x40})
	writeSeed(t, "FuzzStoreLoad", "slot0-manifest", []byte{0x00, 0x01, 0, 0x10})
	writeSeed(t, "FuzzStoreLoad", "both-slots", []byte{0x40, 0x01, 0, 0x80, 0x10, 0x04, 0, 0x80})
	writeSeed(t, "FuzzManifest", "v2", append([]byte{2}, newTestVM(1, 2<<20).manifest.Encode()...))
	writeSeed(t, "FuzzManifest", "v1", append([]byte{1}, encodeManifestV1(newTestVM(1, 2<<20).manifest)...))
}

// checkSnapshot asserts invariants of a successfully decoded snapshot.
func checkSnapshot(t *testing.T, s *Snapshot) {
	if s.Manifest == nil {
		t.Fatal("decoded snapshot without a manifest")
	}
	if err := s.Manifest.Validate(); err != nil {
		t.Fatalf("decoded manifest invalid: %v", err)
	}
}

// FuzzDecode feeds arbitrary bytes to the stream decoder, in restore and in
// inspect mode, with RAM going to a bounded sink.
func FuzzDecode(f *testing.F) {
	reg := testRegistry(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		sink := &boundedSink{limit: 4 << 20}
		if s, err := decodeBytes(b, DecodeOptions{Registry: reg, Memory: sink}); err == nil {
			checkSnapshot(t, s)
		}
		if s, err := decodeBytes(b, DecodeOptions{Inspect: true, SkipAuth: true}); err == nil {
			checkSnapshot(t, s)
		}
		decodeBytes(b, DecodeOptions{Registry: reg, Key: []byte("fuzz key")})
	})
}

// FuzzStoreLoad corrupts a valid two-snapshot store and loads it. The input
// is a list of 4-byte patches: a 24-bit little-endian position in the
// compact image (see fuzzImage; taken modulo its length) and a byte XORed
// into it. Short inputs keep the fuzzer's minimization fast. After the load
// it saves and loads again.
func FuzzStoreLoad(f *testing.F) {
	reg := testRegistry(f)
	next := minVM(9)
	base := tinyStore(f, 2, nil)
	f.Fuzz(func(t *testing.T, patches []byte) {
		img := bytes.Clone(base)
		for ; len(patches) >= 4; patches = patches[4:] {
			pos := int(patches[0]) | int(patches[1])<<8 | int(patches[2])<<16
			img[pos%len(img)] ^= patches[3]
		}
		dev := fuzzImage(img)
		s, err := Open(dev, StoreOptions{BlockSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		snap, c, err := s.Load(DecodeOptions{Registry: reg, Memory: &boundedSink{limit: 4 << 20}})
		if err == nil {
			checkSnapshot(t, snap)
			if snap.Header.Generation != c.Generation {
				t.Fatalf("generation %d, commit %d", snap.Header.Generation, c.Generation)
			}
		}
		// Saving over whatever is there must work and be loadable.
		if _, err := s.Save(SaveOptions{}, next.fill); err != nil {
			t.Fatalf("save after load: %v", err)
		}
		snap2, _, err := s.Load(DecodeOptions{Registry: reg})
		if err != nil {
			t.Fatalf("load after save: %v", err)
		}
		if snap != nil && snap2.Header.Generation <= snap.Header.Generation {
			t.Fatalf("generation went from %d to %d", snap.Header.Generation, snap2.Header.Generation)
		}
	})
}

// FuzzManifest decodes arbitrary manifest bodies; the first byte selects
// the version.
func FuzzManifest(f *testing.F) {
	r := NewRegistry()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		v, err := r.Lookup(TypeManifest).decode(uint16(b[0]), b[1:])
		if err != nil {
			return
		}
		m := v.(*Manifest)
		if b[0] == 2 && m.Validate() == nil {
			// A valid current manifest re-encodes to the same bytes.
			if !bytes.Equal(m.Encode(), b[1:]) {
				t.Fatalf("re-encoding differs")
			}
		}
	})
}

// boundedSink accepts writes below limit and counts them.
type boundedSink struct {
	limit int64
	n     int64
}

func (s *boundedSink) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa+int64(len(p)) > s.limit {
		return 0, fmt.Errorf("write at %#x outside the guest", gpa)
	}
	s.n += int64(len(p))
	return len(p), nil
}

// FuzzChain decodes arbitrary chain chunk bodies; the first byte selects
// the version. A body that decodes re-encodes to the same bytes.
func FuzzChain(f *testing.F) {
	f.Add(append([]byte{ChainVersion}, encodeChain([]ChainLink{{Generation: 1, Offset: DataStart, Length: 400, Digest: [32]byte{1}}})...))
	f.Add(append([]byte{ChainVersion}, encodeChain([]ChainLink{
		{Generation: 2, Offset: DataStart, Length: 9000},
		{Generation: 3, Offset: DataStart + 3*SlotAlign, Length: 500, Digest: [32]byte{3}},
	})...))
	r := NewRegistry()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		v, err := r.Lookup(TypeChain).decode(uint16(b[0]), b[1:])
		if err != nil {
			return
		}
		links := v.([]ChainLink)
		if len(links) == 0 || len(links) >= MaxChain {
			t.Fatalf("%d links accepted", len(links))
		}
		if !bytes.Equal(encodeChain(links), b[1:]) {
			t.Fatal("re-encoding differs")
		}
	})
}

// chainFuzzStore is the store FuzzChainStore damages: slot 0 holds a full
// snapshot of minVM (generation 1), slot 1 a full one (2) and two
// increments (3, 4). It returns the device image and the bytes used of
// each slot.
func chainFuzzStore(t testing.TB) ([]byte, [2]int64) {
	dev := NewMemDevice(fuzzDeviceSize, 512)
	s, err := Open(dev, StoreOptions{BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	vm := newChainVM(minVM(1), 1)
	var used [2]int64
	var base *Commit
	for gen := 1; gen <= 4; gen++ {
		if gen <= 2 {
			base = nil
		}
		vm.mutate(1)
		c, err := vm.save(s, base, SaveOptions{Header: Header{VMName: "fuzz"}})
		if err != nil {
			t.Fatal(err)
		}
		used[c.Slot] = c.Offset + c.Length - s.slotOffset(c.Slot)
		base = c
	}
	return dev.Data, used
}

// FuzzChainStore damages a store holding a chain (chainFuzzStore) with
// byte patches as FuzzStoreLoad does, here at positions in the commit
// record areas and the used part of the slots, and loads it; then it
// appends an increment to what loaded, and saves a full snapshot: each
// must fail cleanly or be what the next load returns.
func FuzzChainStore(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x14, 0x10, 0, 0x01})    // slot 1's record, position 0
	f.Add([]byte{0x14, 0x18, 0, 0x01})    // slot 1's record, position 1
	f.Add([]byte{0x80, 0x20, 0, 0x40})    // slot 0's stream
	f.Add([]byte{0x00, 0x50, 0, 0x08})    // slot 1's full stream
	f.Add([]byte{0x00, 0x70, 0x00, 0x02}) // an increment
	reg := testRegistry(f)
	base, used := chainFuzzStore(f)
	f.Fuzz(func(t *testing.T, patches []byte) {
		dev := &MemDevice{Sector: 512, Data: bytes.Clone(base)}
		span := DataStart + used[0] + used[1]
		for ; len(patches) >= 4; patches = patches[4:] {
			pos := (int64(patches[0]) | int64(patches[1])<<8 | int64(patches[2])<<16) % span
			if pos >= DataStart+used[0] {
				pos += MinSlotSize - used[0] // into slot 1
			}
			dev.Data[pos] ^= patches[3]
		}
		s, err := Open(dev, StoreOptions{BlockSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		// An increment trusting the newest record reads its chain from
		// the stream's tail (on a copy of the store): it must fail cleanly
		// or leave a store that loads.
		if recs, err := s.Records(); err == nil {
			if cs := candidates(recs); len(cs) > 0 {
				trusting, _ := Open(&MemDevice{Sector: 512, Data: bytes.Clone(dev.Data)}, StoreOptions{BlockSize: 4096})
				vm := newChainVM(minVM(3), 3)
				vm.mutate(1)
				if _, err := vm.save(trusting, cs[0], SaveOptions{TrustCommit: true}); err == nil {
					trusting.Load(DecodeOptions{Registry: reg})
				}
			}
		}
		snap, c, err := s.Load(DecodeOptions{Registry: reg, Memory: &boundedSink{limit: 4 << 20}})
		var gen uint64
		if err == nil {
			checkSnapshot(t, snap)
			if snap.Header.Generation != c.Generation || snap.RAM == nil || snap.RAM.Incremental || len(snap.Chain) == 0 {
				t.Fatalf("loaded generation %d (commit %d), RAM %+v, chain %d", snap.Header.Generation, c.Generation, snap.RAM, len(snap.Chain))
			}
			gen = c.Generation
			vm := newChainVM(minVM(2), 2)
			vm.mutate(1)
			if inc, err := vm.save(s, c, SaveOptions{}); err == nil {
				_, lc, err := s.Load(DecodeOptions{Registry: reg})
				if err != nil || !sameStream(lc, inc) {
					t.Fatalf("load after an increment on generation %d: %+v, %v", gen, lc, err)
				}
				gen = inc.Generation
			} else if !errors.Is(err, ErrChainFull) && !errors.Is(err, ErrStaleBase) {
				t.Logf("increment refused: %v", err)
			}
		}
		if _, err := s.Save(SaveOptions{}, minVM(9).fill); err != nil {
			t.Fatalf("save after load: %v", err)
		}
		snap2, _, err := s.Load(DecodeOptions{Registry: reg})
		if err != nil {
			t.Fatalf("load after save: %v", err)
		}
		if snap2.Header.Generation <= gen {
			t.Fatalf("generation went from %d to %d", gen, snap2.Header.Generation)
		}
	})
}
