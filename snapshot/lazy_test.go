package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"testing"
)

// lazyVMSize gives the test VM several blocks of page data, one of them
// spanning both RAM ranges (about half the pages are stored).
const lazyVMSize = 7 << 20

// lazyStore saves a test VM into a fresh store and returns the store,
// the commit and the VM.
func lazyStore(t *testing.T, seed int64, key []byte, sector int) (*MemDevice, *Store, *Commit, *testVM) {
	t.Helper()
	dev := NewMemDevice(DataStart+2*(lazyVMSize+(1<<20)), sector)
	s := newTestStore(t, dev, 0)
	vm := newTestVM(seed, lazyVMSize)
	c, err := s.Save(SaveOptions{Key: key}, vm.fill)
	if err != nil {
		t.Fatal(err)
	}
	return dev, s, c, vm
}

// eagerRAM decodes c eagerly and returns guest memory as it restores.
func eagerRAM(t *testing.T, s *Store, c *Commit, key []byte) []byte {
	t.Helper()
	sink := garbageMem(lazyVMSize)
	if _, err := s.Decode(c, DecodeOptions{Registry: testRegistry(t), Key: key, Memory: sink}); err != nil {
		t.Fatal(err)
	}
	clear(sink.b[testLowEnd:testHighGPA]) // the MMIO hole is not RAM
	return sink.b
}

// TestLazyFill: every block filled in random order, into a sink that is
// written and one that is viewed, gives what an eager decode gives; pages
// are located in the right block, zero pages are the runs the lazy open
// reports; a block filled twice is read once.
func TestLazyFill(t *testing.T) {
	for _, sector := range []int{512, 4096} {
		for _, key := range [][]byte{nil, []byte("lazy key")} {
			t.Run(fmt.Sprintf("sector=%d/keyed=%v", sector, key != nil), func(t *testing.T) {
				_, s, c, vm := lazyStore(t, int64(sector), key, sector)
				want := eagerRAM(t, s, c, key)
				if !bytes.Equal(want, vm.mem.b) {
					t.Fatal("eager decode differs from the VM")
				}
				for _, viewed := range []bool{false, true} {
					l, snap, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
					if err != nil {
						t.Fatal(err)
					}
					if snap.Authenticated != (key != nil) || snap.Find(TypeVCPU, 1) == nil || snap.RAM == nil {
						t.Fatalf("snapshot: %+v", snap)
					}
					if l.Blocks() < 3 || l.Remaining() != l.Blocks() {
						t.Fatalf("%d blocks, %d remaining", l.Blocks(), l.Remaining())
					}
					mem := &guestMem{b: make([]byte, lazyVMSize)}
					var sink MemorySink = mem
					if viewed {
						sink = viewMem{mem}
					}
					checkLocate(t, l, vm)
					zero := 0
					if err := l.ZeroRuns(func(gpa, n uint64) error {
						if !IsZeroPage(want[gpa : gpa+n]) {
							t.Fatalf("zero run %#x+%#x is not zero", gpa, n)
						}
						zero += int(n / PageSize)
						return nil
					}); err != nil {
						t.Fatal(err)
					}
					var stored uint64
					for _, r := range snap.RAM.Ranges {
						stored += r.Data
					}
					if uint64(zero)+stored != (lazyVMSize-(testHighGPA-testLowEnd))/PageSize {
						t.Fatalf("%d zero + %d stored pages", zero, stored)
					}
					rng := rand.New(rand.NewSource(int64(sector)))
					for _, i := range rng.Perm(l.Blocks()) {
						if err := l.Fill(i, sink); err != nil {
							t.Fatal(err)
						}
						if !l.Filled(i) {
							t.Fatalf("block %d not marked filled", i)
						}
					}
					if l.Remaining() != 0 {
						t.Fatalf("%d blocks remain", l.Remaining())
					}
					if !bytes.Equal(mem.b, want) {
						t.Fatal("lazily filled RAM differs from the eager decode")
					}
					// Filled blocks are not read again: a wrecked device
					// does not matter any more.
					for _, st := range l.streams {
						st.dev = NewMemDevice(int64(len(s.dev.(*MemDevice).Data)), sector)
					}
					if err := l.Fill(0, sink); err != nil {
						t.Fatalf("second fill: %v", err)
					}
				}
			})
		}
	}
}

// checkLocate checks that every stored page is in the block that fills it
// and every other page is zero.
func checkLocate(t *testing.T, l *Lazy, vm *testVM) {
	t.Helper()
	owner := map[uint64]int{}
	for i := 0; i < l.Blocks(); i++ {
		l.BlockRuns(i, func(gpa, n uint64) {
			for p := gpa; p < gpa+n; p += PageSize {
				owner[p] = i
			}
		})
	}
	for gpa := uint64(0); gpa < lazyVMSize; gpa += PageSize {
		block, stored, ok := l.Locate(gpa)
		inHole := gpa >= testLowEnd && gpa < testHighGPA
		if ok == inHole {
			t.Fatalf("page %#x: in a range %v", gpa, ok)
		}
		if !ok {
			continue
		}
		o, has := owner[gpa]
		if stored != !IsZeroPage(vm.mem.b[gpa:gpa+PageSize]) || stored != has || stored && o != block {
			t.Fatalf("page %#x: stored %v block %d; runs say %v block %d", gpa, stored, block, has, o)
		}
	}
}

// TestLazyCorruptBlock: a byte changed in the page data of one block is
// found when that block is filled, and only then: the open and every
// other block succeed, the bad block names itself and its GPA range, and
// the sink gets nothing of it (a viewed sink's memory is cleared again).
func TestLazyCorruptBlock(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("lazy key")} {
		t.Run(fmt.Sprintf("keyed=%v", key != nil), func(t *testing.T) {
			dev, s, c, _ := lazyStore(t, 3, key, 512)
			want := eagerRAM(t, s, c, key)
			l, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
			if err != nil {
				t.Fatal(err)
			}
			bad := l.Blocks() / 2
			st, runs := blockAt(l, bad)
			flip := runs[len(runs)-1]
			dev.Data[st.base+flip.off+int64(flip.n)-7] ^= 0x10
			if _, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key}); err != nil {
				t.Fatalf("the open reads page data: %v", err)
			}
			if _, err := s.Decode(c, DecodeOptions{Registry: testRegistry(t), Key: key}); !errors.Is(err, ErrChecksum) {
				t.Fatalf("eager decode of the damage: %v", err)
			}
			mem := &guestMem{b: make([]byte, lazyVMSize)}
			for i := 0; i < l.Blocks(); i++ {
				err := l.Fill(i, viewMem{mem})
				if i != bad {
					if err != nil {
						t.Fatalf("block %d: %v", i, err)
					}
					continue
				}
				var be *BlockError
				gpa, end := l.BlockGPA(bad)
				if !errors.As(err, &be) || be.Index != bad || be.GPA != gpa || be.End != end || !errors.Is(err, ErrChecksum) {
					t.Fatalf("bad block %d (%#x-%#x): %v", bad, gpa, end, err)
				}
				msg := fmt.Sprintf("RAM block %d (guest-physical %#x-%#x)", bad, gpa, end)
				if !bytes.Contains([]byte(err.Error()), []byte(msg)) {
					t.Fatalf("error %q does not say %q", err, msg)
				}
				if l.Filled(bad) {
					t.Fatal("bad block marked filled")
				}
			}
			l.BlockRuns(bad, func(gpa, n uint64) {
				if !IsZeroPage(mem.b[gpa : gpa+n]) {
					t.Fatalf("bad block's pages at %#x reached the sink", gpa)
				}
				copy(mem.b[gpa:gpa+n], want[gpa:gpa+n])
			})
			if !bytes.Equal(mem.b, want) {
				t.Fatal("the other blocks differ from the eager decode")
			}
		})
	}
}

// TestLazyTags: in a keyed snapshot each block's Poly1305 tag is
// checked (a reader with another key fails on authentication), and one
// opened without the key (SkipAuth) still checks the XXH64 sums.
func TestLazyTags(t *testing.T) {
	key := []byte("lazy key")
	dev, s, c, _ := lazyStore(t, 5, key, 512)
	l, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	l.streams[0].key = []byte("another key") // as if the table had been forged
	if err := l.Fill(1, nil); !errors.Is(err, ErrAuth) || errors.Is(err, ErrChecksum) {
		t.Fatalf("fill under another key: %v", err)
	}
	if _, _, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t)}); !errors.Is(err, ErrAuth) {
		t.Fatalf("keyed snapshot opened without the key: %v", err)
	}
	l, snap, err := s.OpenLazy(c, DecodeOptions{Registry: testRegistry(t), SkipAuth: true})
	if err != nil || snap.Authenticated {
		t.Fatalf("SkipAuth: %v, authenticated %v", err, snap != nil && snap.Authenticated)
	}
	st, runs := blockAt(l, 0)
	dev.Data[st.base+runs[0].off] ^= 1
	if err := l.Fill(0, nil); !errors.Is(err, ErrChecksum) {
		t.Fatalf("damage without the key: %v", err)
	}
}

// TestLazyOpenRefuses: what the open can check without page data it
// refuses: a truncated stream, a changed block table, a commit record
// that names another stream; what it cannot restore lazily (a version 1
// RAM chunk) fails with ErrLazyUnsupported, and an increment opens.
func TestLazyOpenRefuses(t *testing.T) {
	reg := testRegistry(t)
	dev, s, c, vm := lazyStore(t, 9, nil, 512)
	l, _, err := s.OpenLazy(c, DecodeOptions{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	// The block table is the end of the RAM chunk body, before its CRC.
	st := l.streams[0]
	ram := st.ranges[len(st.ranges)-1]
	tableAt := st.base + ram.off + int64(ram.n)*PageSize + ramTableHeader
	short := *c
	short.Length -= endChunkSize
	other := *c
	other.Digest[0] ^= 1
	cases := []struct {
		name  string
		c     *Commit
		patch int64 // device offset to change, or -1
		want  []error
	}{
		{"truncated", &short, -1, []error{ErrCorrupt}},
		{"digest", &other, -1, []error{ErrDigest}},
		{"block table", c, tableAt + 3, []error{ErrChecksum}},
		// A structural check may see the damage before the CRC.
		{"table header", c, tableAt - 5, []error{ErrChecksum, ErrCorrupt}},
		{"bitmap", c, st.base + st.ranges[0].off - 1, []error{ErrChecksum, ErrCorrupt}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.patch >= 0 {
				dev.Data[tc.patch] ^= 0x40
				defer func() { dev.Data[tc.patch] ^= 0x40 }()
			}
			_, _, err := s.OpenLazy(tc.c, DecodeOptions{Registry: reg})
			ok := false
			for _, w := range tc.want {
				ok = ok || errors.Is(err, w)
			}
			if !ok {
				t.Fatalf("got %v, want one of %v", err, tc.want)
			}
		})
	}
	t.Run("chain", func(t *testing.T) {
		vm.ramOpts = RAMOptions{Carried: func(i int) []byte { return make([]byte, bitmapLen(vm.ranges[i].Size/PageSize)) },
			BaseGeneration: c.Generation, BaseDigest: c.Digest}
		inc, err := s.Save(SaveOptions{Base: c}, vm.fill)
		vm.ramOpts = RAMOptions{}
		if err != nil {
			t.Fatal(err)
		}
		l, snap, err := s.OpenLazy(inc, DecodeOptions{Registry: reg})
		if err != nil || l.Streams() != 2 || len(snap.Chain) != 2 {
			t.Fatalf("increment: %v", err)
		}
		// It carries no page: every block is the full snapshot's.
		if l.Fills() != l.Blocks() || l.Blocks() != l.first[1] {
			t.Fatalf("increment carrying nothing: %d blocks, %d to fill, the full snapshot has %d", l.Blocks(), l.Fills(), l.first[1])
		}
	})
	t.Run("RAM version 1", func(t *testing.T) {
		b := encodeV1(t, fixtureVM())
		d := NewMemDevice(int64(len(b)+511)/512*512, 512)
		copy(d.Data, b)
		if _, _, err := openLazy(d, 0, int64(len(b)), DecodeOptions{Registry: reg}, DefaultBlockSize); !errors.Is(err, ErrLazyUnsupported) {
			t.Fatalf("version 1 RAM chunk: %v", err)
		}
	})
}

// FuzzLazyOpen: any stream gives an error or a Lazy; filling every block
// of one either succeeds or names the block; and a stream restores
// lazily (open and every fill) exactly when Decode takes it, to the same
// memory.
func FuzzLazyOpen(f *testing.F) {
	f.Add(minVM(1).encode(f, 1, nil))
	f.Add(tinyVM(2).encode(f, 1, nil))
	f.Add(tinyVM(3).encode(f, 2, []byte("k")))
	f.Add(encodeV1(f, fixtureVM()))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, key := range [][]byte{nil, []byte("k")} {
			dev := NewMemDevice(int64(len(b)+511)/512*512, 512)
			copy(dev.Data, b)
			opts := DecodeOptions{Key: key, Inspect: true, MaxRAM: 64 << 20}
			lazyMem := &guestMem{b: make([]byte, 1<<20)}
			st, _, lerr := openLazy(dev, 0, int64(len(b)), opts, 4096)
			if errors.Is(lerr, ErrLazyUnsupported) {
				continue
			}
			var l *Lazy
			if lerr == nil {
				l = newLazy([]*lazyStream{st})
			}
			for i := 0; lerr == nil && i < l.Blocks(); i++ {
				if err := l.Fill(i, boundedMem{lazyMem}); err != nil {
					var be *BlockError
					if !errors.As(err, &be) || be.Index != i {
						t.Fatalf("block %d: %v", i, err)
					}
					lerr = err
				}
			}
			eagerMem := &guestMem{b: make([]byte, 1<<20)}
			o := opts
			o.Memory = boundedMem{eagerMem}
			_, eerr := decodeBytes(b, o)
			if (lerr == nil) != (eerr == nil) {
				t.Fatalf("lazy: %v; eager: %v", lerr, eerr)
			}
			if lerr == nil && !bytes.Equal(lazyMem.b, eagerMem.b) {
				t.Fatal("lazy and eager restores differ")
			}
		}
	})
}

// boundedMem is a sink that ignores pages beyond its memory (fuzzed
// streams describe any addresses).
type boundedMem struct{ *guestMem }

func (m boundedMem) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa >= int64(len(m.b)) {
		return len(p), nil
	}
	return copy(m.b[gpa:], p), nil
}

// blockAt returns the stream block i is in and the runs of all its
// stored pages there.
func blockAt(l *Lazy, i int) (*lazyStream, []lazyRun) {
	s, b := l.blockOf(i)
	return l.streams[s], l.streams[s].blockRuns(b)
}
