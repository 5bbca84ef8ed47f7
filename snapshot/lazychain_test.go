package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"testing"
)

// Lazy restore of a chain (docs/snapshot-format.md, 3.3 and 5.2).

const (
	// lazyChainIncrements is the number of increments on the full
	// snapshot in the chain tests.
	lazyChainIncrements = 4
	// lazyChainDirty is the number of pages each increment changes:
	// more than one block's worth, so that increments have several
	// blocks.
	lazyChainDirty = 400
	// lazyChainSlot is the slot size of the chain tests' store.
	lazyChainSlot = 8 << 20
)

// lazyChain saves a chain of a full snapshot of a lazyVMSize test VM and
// lazyChainIncrements increments with random page changes (pages made
// zero and non-zero again); before the last save it also rewrites every
// page of the full snapshot's block superseded, so that block has no page
// left to place. It returns the device, the store, the commits and the
// VM's state at each.
func lazyChain(t *testing.T, seed int64, key []byte, superseded int) (*MemDevice, *Store, []*Commit, *testVM) {
	t.Helper()
	dev := NewMemDevice(DataStart+2*lazyChainSlot, 512)
	s := newTestStore(t, dev, 4096)
	vm := newChainVM(newTestVM(seed, lazyVMSize), seed)
	var cs []*Commit
	var base *Commit
	for i := 0; i <= lazyChainIncrements; i++ {
		if i > 0 {
			vm.mutate(lazyChainDirty)
		}
		if i == lazyChainIncrements && superseded >= 0 {
			l, _, err := s.OpenLazy(cs[0], DecodeOptions{Registry: testRegistry(t), Key: key})
			if err != nil {
				t.Fatal(err)
			}
			l.BlockRuns(superseded, func(gpa, n uint64) {
				for p := gpa; p < gpa+n; p += PageSize {
					vm.rng.Read(vm.mem.b[p : p+PageSize])
					vm.dirty[p] = true
				}
			})
		}
		c, err := vm.save(s, base, SaveOptions{Key: key})
		if err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		cs = append(cs, c)
		base = c
	}
	return dev, s, cs, vm.state()
}

// TestLazyChainFill: the newest increment of a chain opens lazily with
// every stream; the zero runs and the blocks' runs cover every page of
// RAM exactly once, as Locate says; every block filled in random order
// (older streams' blocks after newer ones' too), into a written and a
// viewed sink holding garbage, with the zero runs cleared, gives what the
// eager decode of the chain gives, byte for byte; Remaining counts down
// to 0 at the last fill; a block of the full snapshot whose pages newer
// streams all define needs no fill.
func TestLazyChainFill(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("lazy chain key")} {
		t.Run(fmt.Sprintf("keyed=%v", key != nil), func(t *testing.T) {
			const superseded = 1
			_, s, cs, state := lazyChain(t, 11, key, superseded)
			c := cs[len(cs)-1]
			eager := garbageMem(lazyVMSize)
			esnap, err := s.Decode(c, DecodeOptions{Registry: testRegistry(t), Key: key, Memory: eager})
			if err != nil {
				t.Fatal(err)
			}
			if !ramEqual(state, eager) {
				t.Fatal("eager decode differs from the VM")
			}
			for _, k := range sinkKinds[:2] {
				t.Run(k.name, func(t *testing.T) {
					l, snap, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
					if err != nil {
						t.Fatal(err)
					}
					if snap.Authenticated != (key != nil) || len(snap.Chain) != len(cs) || l.Streams() != len(cs) ||
						!slices.Equal(snap.RAM.Ranges, esnap.RAM.Ranges) || snap.RAM.Incremental {
						t.Fatalf("snapshot: RAM %+v, chain %+v", snap.RAM, snap.Chain)
					}
					if !l.Filled(superseded) || l.Fills() >= l.Blocks() || l.Remaining() != l.Fills() {
						t.Fatalf("%d blocks, %d to fill, %d remaining; superseded block %d filled %v",
							l.Blocks(), l.Fills(), l.Remaining(), superseded, l.Filled(superseded))
					}
					checkChainLocate(t, l, state)
					mem := garbageMem(lazyVMSize)
					sink := k.make(mem)
					rng := rand.New(rand.NewSource(int64(len(k.name))))
					for _, i := range rng.Perm(l.Blocks()) {
						before := l.Remaining()
						was := l.Filled(i)
						if err := l.Fill(i, sink); err != nil {
							t.Fatal(err)
						}
						if !l.Filled(i) || (!was && l.Remaining() != before-1) || (was && l.Remaining() != before) {
							t.Fatalf("block %d (filled before %v): remaining %d, then %d", i, was, before, l.Remaining())
						}
					}
					if l.Remaining() != 0 {
						t.Fatalf("%d blocks remain", l.Remaining())
					}
					checkLazyRAM(t, l, mem, eager.b, "lazily filled RAM differs from the eager decode of the chain")
					// Each block is read once: a wrecked device does
					// not matter any more.
					for _, st := range l.streams {
						st.dev = NewMemDevice(int64(len(s.dev.(*MemDevice).Data)), 512)
					}
					for i := range l.Blocks() {
						if err := l.Fill(i, sink); err != nil {
							t.Fatalf("second fill of block %d: %v", i, err)
						}
					}
				})
			}
		})
	}
}

// checkChainLocate checks that the zero runs and the blocks' runs cover
// every page of the RAM ranges exactly once, that Locate agrees, and that
// the zero pages are the VM's zero pages.
func checkChainLocate(t *testing.T, l *Lazy, want *testVM) {
	t.Helper()
	const zero = -1
	owner := map[uint64]int{}
	add := func(gpa, n uint64, who int) {
		for p := gpa; p < gpa+n; p += PageSize {
			if o, dup := owner[p]; dup {
				t.Fatalf("page %#x placed by %d and by %d", p, o, who)
			}
			owner[p] = who
		}
	}
	for i := range l.Blocks() {
		runs := 0
		l.BlockRuns(i, func(gpa, n uint64) { add(gpa, n, i); runs++ })
		if (runs == 0) != (l.Filled(i) && l.Remaining() == l.Fills()) {
			t.Fatalf("block %d: %d runs to place, filled at the open %v", i, runs, l.Filled(i))
		}
	}
	if err := l.ZeroRuns(func(gpa, n uint64) error { add(gpa, n, zero); return nil }); err != nil {
		t.Fatal(err)
	}
	if uint64(len(owner)) != want.pages() {
		t.Fatalf("%d pages placed, the VM has %d", len(owner), want.pages())
	}
	for gpa, o := range owner {
		block, stored, ok := l.Locate(gpa)
		isZero := IsZeroPage(want.mem.b[gpa : gpa+PageSize])
		if !ok || stored != (o != zero) || (stored && block != o) || (o == zero && !isZero) {
			t.Fatalf("page %#x: placed by %d; Locate says block %d, stored %v, ok %v; zero %v", gpa, o, block, stored, ok, isZero)
		}
	}
}

// TestLazyChainCorruptBlock: a byte changed in a block of an older stream
// of a chain (the full snapshot, an increment before the newest) is not
// seen by the open but when that block is filled, and only then: the
// error names the stream's generation, the block and its guest-physical
// range, the sink gets none of its pages, and every other block fills.
// The changed byte is in a page a newer stream defines where the block
// has one: the block is checked whole.
func TestLazyChainCorruptBlock(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("lazy chain key")} {
		for _, stream := range []int{0, 1} {
			t.Run(fmt.Sprintf("keyed=%v/stream=%d", key != nil, stream), func(t *testing.T) {
				dev, s, cs, _ := lazyChain(t, 13, key, -1)
				c := cs[len(cs)-1]
				l, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
				if err != nil {
					t.Fatal(err)
				}
				// The stream's last block to fill, and a page of it the
				// stream does not own if it has one.
				bad := -1
				for i := l.first[stream]; i < l.first[stream+1]; i++ {
					if !l.Filled(i) {
						bad = i
					}
				}
				if bad < 0 {
					t.Fatalf("stream %d has no block to fill", stream)
				}
				st, runs := blockAt(l, bad)
				at := st.base + runs[0].off
				for _, r := range runs {
					for p := uint64(0); p < r.n; p += PageSize {
						if l.ownerOf(r.ri, (r.gpa+p-st.ranges[r.ri].gpa)/PageSize) != stream {
							at = st.base + r.off + int64(p)
						}
					}
				}
				dev.Data[at+PageSize/2] ^= 0x08
				if _, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key}); err != nil {
					t.Fatalf("the open reads page data: %v", err)
				}
				if _, err := s.Decode(c, DecodeOptions{Registry: testRegistry(t), Key: key}); !errors.Is(err, ErrChecksum) {
					t.Fatalf("eager decode of the damage: %v", err)
				}
				mem := garbageMem(lazyVMSize)
				for i := range l.Blocks() {
					err := l.Fill(i, viewMem{mem})
					if i != bad {
						if err != nil {
							t.Fatalf("block %d: %v", i, err)
						}
						continue
					}
					gen, index := l.Block(bad)
					gpa, end := l.BlockGPA(bad)
					var be *BlockError
					if !errors.As(err, &be) || be.Generation != cs[stream].Generation || gen != be.Generation ||
						be.Index != index || be.GPA != gpa || be.End != end || !errors.Is(err, ErrChecksum) {
						t.Fatalf("bad block %d (generation %d block %d, %#x-%#x): %v", bad, gen, index, gpa, end, err)
					}
					msg := fmt.Sprintf("generation %d: RAM block %d (guest-physical %#x-%#x)", cs[stream].Generation, index, gpa, end)
					if !bytes.Contains([]byte(err.Error()), []byte(msg)) {
						t.Fatalf("error %q does not say %q", err, msg)
					}
					if l.Filled(bad) || l.Remaining() == 0 {
						t.Fatal("bad block marked filled")
					}
				}
				// Its pages are as they were, or cleared again where they
				// were read in place: none of its bytes reached the sink.
				l.BlockRuns(bad, func(gpa, n uint64) {
					if !bytes.Equal(mem.b[gpa:gpa+n], bytes.Repeat([]byte{garbageFill}, int(n))) && !IsZeroPage(mem.b[gpa:gpa+n]) {
						t.Fatalf("bad block's pages at %#x reached the sink", gpa)
					}
				})
			})
		}
	}
}

// TestLazyChainRefuses: the open of a chain makes the chain's checks: a
// changed byte in an older stream's checked part, or an older stream's
// record in the chain list that does not match, refuses the open naming
// that stream; the block sums of older streams' RAM chunks are checked
// under the key.
func TestLazyChainRefuses(t *testing.T) {
	dev, s, cs, _ := lazyChain(t, 17, []byte("k"), -1)
	c := cs[len(cs)-1]
	l, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	// The block table of the second stream: the end of its RAM chunk.
	st := l.streams[1]
	ram := st.ranges[len(st.ranges)-1]
	at := st.base + ram.off + int64(ram.n)*PageSize + ramTableHeader + 2
	dev.Data[at] ^= 0x20
	_, _, err = s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: []byte("k")})
	name := fmt.Sprintf("increment generation %d", cs[1].Generation)
	if !errors.Is(err, ErrChecksum) || !bytes.Contains([]byte(err.Error()), []byte(name)) {
		t.Fatalf("changed block table of generation %d: %v", cs[1].Generation, err)
	}
	dev.Data[at] ^= 0x20
	if _, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: []byte("other")}); !errors.Is(err, ErrAuth) {
		t.Fatalf("another key: %v", err)
	}
	// A commit record naming a changed digest.
	other := *c
	other.Digest[3] ^= 1
	if _, _, err := s.OpenLazy(&other, DecodeOptions{Registry: testRegistry(t), Key: []byte("k")}); !errors.Is(err, ErrDigest) {
		t.Fatalf("changed digest: %v", err)
	}
}

// FuzzLazyChain damages a store holding a chain (chainFuzzStore) with
// byte patches as FuzzChainStore does, and restores its newest commit
// record's snapshot lazily (open, every block filled, zero runs cleared)
// and eagerly (Decode) into memory holding garbage: both fail or both
// give the same memory. A lazy restore needs no block whose pages newer
// streams all define, so where only the eager one fails, checking those
// blocks must fail.
func FuzzLazyChain(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x00, 0x50, 0, 0x08})    // slot 1's full stream
	f.Add([]byte{0x00, 0x70, 0x00, 0x02}) // an increment
	reg := testRegistry(f)
	base, used := chainFuzzStore(f)
	f.Fuzz(func(t *testing.T, patches []byte) {
		dev := &MemDevice{Sector: 512, Data: bytes.Clone(base)}
		span := used[0] + used[1]
		for ; len(patches) >= 4; patches = patches[4:] {
			pos := DataStart + (int64(patches[0])|int64(patches[1])<<8|int64(patches[2])<<16)%span
			if pos >= DataStart+used[0] {
				pos += MinSlotSize - used[0] // into slot 1
			}
			dev.Data[pos] ^= patches[3]
		}
		s, err := Open(dev, StoreOptions{BlockSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		recs, err := s.Records()
		if err != nil {
			return
		}
		cands := candidates(recs)
		if len(cands) == 0 {
			return
		}
		c := cands[0]
		const memSize = 4 << 20
		eager := garbageMem(memSize)
		_, eerr := s.Decode(c, DecodeOptions{Registry: reg, Memory: boundedMem{eager}})
		lazy := garbageMem(memSize)
		l, _, lerr := s.OpenLazy(c, DecodeOptions{Registry: reg})
		var pre []bool
		if lerr == nil {
			pre = slices.Clone(l.filled)
			for i := range l.Blocks() {
				if err := l.Fill(i, boundedMem{lazy}); err != nil {
					var be *BlockError
					if !errors.As(err, &be) {
						t.Fatalf("block %d: %v", i, err)
					}
					lerr = err
					break
				}
			}
		}
		if lerr == nil {
			lerr = l.ZeroRuns(func(gpa, n uint64) error {
				if gpa < memSize {
					clear(lazy.b[gpa:min(gpa+n, memSize)])
				}
				return nil
			})
		}
		switch {
		case lerr != nil && eerr == nil:
			t.Fatalf("lazy: %v; eager restores", lerr)
		case lerr == nil && eerr != nil:
			bad := false
			for i, superseded := range pre {
				if superseded {
					l.filled[i] = false
					bad = bad || l.Fill(i, nil) != nil
				}
			}
			if !bad {
				t.Fatalf("lazy restores; eager: %v", eerr)
			}
		case lerr == nil && !bytes.Equal(lazy.b, eager.b):
			t.Fatal("lazy and eager restores differ")
		}
	})
}

// checkLazyRAM clears got's zero runs (the RAM a restore clears) and
// fails unless got then holds want, the RAM outside test VMs' hole.
func checkLazyRAM(t *testing.T, l *Lazy, got *guestMem, want []byte, why string) {
	t.Helper()
	if err := l.ZeroRuns(func(gpa, n uint64) error {
		clear(got.b[gpa : gpa+n])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	clear(got.b[testLowEnd:testHighGPA])
	want = bytes.Clone(want)
	clear(want[testLowEnd:testHighGPA])
	if !bytes.Equal(got.b, want) {
		t.Fatal(why)
	}
}
