package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// garbageFill is what test sinks hold before a restore, so that a page the
// restore does not write (a zero page left out) shows.
const garbageFill = 0x5a

// garbageMem is guest memory of n bytes holding garbage.
func garbageMem(n int) *guestMem {
	return &guestMem{b: bytes.Repeat([]byte{garbageFill}, n)}
}

// zeroViewMem is viewMem that also clears memory itself (Zeroer).
type zeroViewMem struct{ viewMem }

func (z zeroViewMem) ZeroAt(gpa, n uint64) error {
	b, ok := z.View(gpa, n)
	if !ok {
		return fmt.Errorf("zero %#x+%#x out of range", gpa, n)
	}
	clear(b)
	return nil
}

// sinkKinds are the MemorySinks a restore is tried with: plain WriteAt,
// in place (Viewer), and in place with ZeroAt.
var sinkKinds = []struct {
	name string
	make func(m *guestMem) MemorySink
}{
	{"writeat", func(m *guestMem) MemorySink { return m }},
	{"viewer", func(m *guestMem) MemorySink { return viewMem{m} }},
	{"viewer-zeroer", func(m *guestMem) MemorySink { return zeroViewMem{viewMem{m}} }},
}

// chainVM is a test VM whose RAM and vCPUs change between saves; it keeps
// the pages changed since the last save (what NPT dirty tracking gives).
type chainVM struct {
	*testVM
	rng    *rand.Rand
	dirty  map[uint64]bool // GPAs of pages changed since the last save
	zeroed []uint64        // pages made zero, to be made non-zero again
	step   uint64
}

func newChainVM(vm *testVM, seed int64) *chainVM {
	return &chainVM{testVM: vm, rng: rand.New(rand.NewSource(seed)), dirty: map[uint64]bool{}}
}

// mutate changes n random pages: new contents, zero, a zeroed page
// non-zero again, or one byte; and the vCPU state.
func (c *chainVM) mutate(n int) {
	c.step++
	for range n {
		r := c.ranges[c.rng.Intn(len(c.ranges))]
		gpa := r.GPA + uint64(c.rng.Intn(int(r.Size/PageSize)))*PageSize
		const kinds = 4
		switch c.rng.Intn(kinds) {
		case 0:
			clear(c.mem.b[gpa : gpa+PageSize])
			c.zeroed = append(c.zeroed, gpa)
		case 1:
			c.rng.Read(c.mem.b[gpa : gpa+PageSize])
		case 2:
			if len(c.zeroed) > 0 {
				gpa = c.zeroed[0]
				c.zeroed = c.zeroed[1:]
			}
			c.rng.Read(c.mem.b[gpa : gpa+PageSize])
		default:
			c.mem.b[gpa+uint64(c.rng.Intn(PageSize))]++
		}
		c.dirty[gpa] = true
	}
	for i := range c.vcpus {
		e := NewEncoder(64)
		e.PutU64(0xfff0 + c.step)
		e.PutU64(c.step)
		e.PutU64(uint64(i))
		e.PutString("fpu")
		c.vcpus[i] = e.Bytes()
	}
}

// carried is RAMOptions.Carried: the dirty pages of range i.
func (c *chainVM) carried(i int) []byte {
	r := c.ranges[i]
	bm := make([]byte, bitmapLen(r.Size/PageSize))
	for gpa := range c.dirty {
		if gpa >= r.GPA && gpa < r.GPA+r.Size {
			p := (gpa - r.GPA) / PageSize
			bm[p/8] |= 1 << (p % 8)
		}
	}
	return bm
}

// save saves the VM: a full snapshot (base nil) or an increment on base.
func (c *chainVM) save(s *Store, base *Commit, opts SaveOptions) (*Commit, error) {
	opts.Base = base
	c.ramOpts = RAMOptions{}
	if base != nil {
		c.ramOpts = RAMOptions{Carried: c.carried, BaseGeneration: base.Generation, BaseDigest: base.Digest}
	}
	cm, err := s.Save(opts, c.fill)
	if err == nil {
		clear(c.dirty)
	}
	return cm, err
}

// state is a copy of the VM as it is now, what a restore must give.
func (c *chainVM) state() *testVM {
	vm := *c.testVM
	vm.mem = &guestMem{b: bytes.Clone(c.mem.b)}
	vm.vcpus = nil
	for _, b := range c.vcpus {
		vm.vcpus = append(vm.vcpus, bytes.Clone(b))
	}
	return &vm
}

// dataPages counts the non-zero pages of vm's RAM ranges.
func dataPages(vm *testVM) uint64 {
	var n uint64
	for _, r := range vm.ranges {
		for gpa := r.GPA; gpa < r.GPA+r.Size; gpa += PageSize {
			if !IsZeroPage(vm.mem.b[gpa : gpa+PageSize]) {
				n++
			}
		}
	}
	return n
}

// checkRestored checks a restored snapshot against want: RAM byte for
// byte (sink started as garbage), the vCPU chunks, and a RAM info that
// reads as a full snapshot's.
func checkRestored(t *testing.T, what string, snap *Snapshot, sink *guestMem, want *testVM, streams int) {
	t.Helper()
	if !ramEqual(want, sink) {
		t.Fatalf("%s: restored RAM differs", what)
	}
	for i, b := range want.vcpus {
		if ch := snap.Find(TypeVCPU, uint32(i)); ch == nil || !bytes.Equal(ch.Body, b) {
			t.Fatalf("%s: vcpu %d differs", what, i)
		}
	}
	r := snap.RAM
	if r == nil || r.Incremental || r.BaseGeneration != 0 || len(r.Ranges) != len(want.ranges) {
		t.Fatalf("%s: RAM info %+v is not a full RAM chunk's", what, r)
	}
	var data uint64
	for i, x := range r.Ranges {
		if x.GPA != want.ranges[i].GPA || x.Pages*PageSize != want.ranges[i].Size || x.Carried != x.Pages {
			t.Fatalf("%s: RAM range %d = %+v", what, i, x)
		}
		data += x.Data
	}
	if data != dataPages(want) {
		t.Fatalf("%s: RAM info says %d stored pages, the memory has %d non-zero", what, data, dataPages(want))
	}
	if len(snap.Chain) != streams {
		t.Fatalf("%s: chain of %d streams, want %d", what, len(snap.Chain), streams)
	}
	for i, cs := range snap.Chain {
		if cs.Incremental != (i > 0) || (i == 0 && cs.Carried != want.pages()) || cs.Stored > cs.Carried {
			t.Fatalf("%s: chain stream %d = %+v", what, i, cs)
		}
	}
	if last := snap.Chain[len(snap.Chain)-1]; last.Generation != snap.Header.Generation || last.Digest != snap.Digest {
		t.Fatalf("%s: last chain stream %+v is not the snapshot's", what, last)
	}
}

// pages is the number of pages of vm's RAM ranges.
func (vm *testVM) pages() uint64 {
	var n uint64
	for _, r := range vm.ranges {
		n += r.Size / PageSize
	}
	return n
}

// TestChainRestore saves a full snapshot then increments with random page
// changes (pages made zero and non-zero again) between saves, in both
// slots, with and without a key, and after each save restores it three
// ways (Load, one Decode pass as kernel.Restore does, the older slot
// through SlotView) into sinks of every kind holding garbage: the result
// is the VM's memory at that save, byte for byte.
func TestChainRestore(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("chain key")} {
		t.Run(fmt.Sprintf("keyed=%v", key != nil), func(t *testing.T) {
			reg := testRegistry(t)
			dev := NewMemDevice(DataStart+2*(4<<20), 512)
			s := newTestStore(t, dev, 0)
			vm := newChainVM(newTestVM(7, 1<<20+256<<10), 8)
			states := map[uint64]*testVM{}
			var last *Commit
			streams := 0
			const increments = 4
			for round := range 2 {
				for i := 0; i <= increments; i++ {
					var base *Commit
					if i > 0 {
						base = last
						vm.mutate(12)
					}
					// Alternate reading the chain back and trusting
					// the record (the chain's tail is read instead).
					c, err := vm.save(s, base, SaveOptions{Key: key, TrustCommit: i%2 == 1})
					if err != nil {
						t.Fatalf("round %d save %d: %v", round, i, err)
					}
					streams++
					if i == 0 {
						streams = 1
					}
					if c.Incremental(s) != (i > 0) || (base != nil && (c.Slot != base.Slot || c.Position == base.Position)) {
						t.Fatalf("round %d save %d: commit %+v on base %+v", round, i, c, base)
					}
					states[c.Generation] = vm.state()
					last = c
					checkChainLoads(t, s, reg, key, c, states[c.Generation], streams)
					recs, err := s.Records()
					if err != nil {
						t.Fatal(err)
					}
					r := recs[c.Slot]
					if !sameStream(r.Commit, c) || (base == nil) != (r.Previous == nil) || (base != nil && !sameStream(r.Previous, base)) {
						t.Fatalf("records of slot %d: %+v, %+v", c.Slot, r.Commit, r.Previous)
					}
				}
			}
			// The other slot still holds the first round's chain.
			view, err := s.SlotView(1 - last.Slot)
			if err != nil {
				t.Fatal(err)
			}
			sink := garbageMem(len(vm.mem.b))
			snap, c, err := view.Load(DecodeOptions{Registry: reg, Key: key, Memory: sink})
			if err != nil || c.Generation != increments+1 {
				t.Fatalf("older slot: %+v, %v", c, err)
			}
			checkRestored(t, "older slot", snap, sink, states[c.Generation], increments+1)
		})
	}
}

// checkChainLoads restores the newest snapshot of s, which must be c, with
// Load and with a single Decode into each kind of sink.
func checkChainLoads(t *testing.T, s *Store, reg *Registry, key []byte, c *Commit, want *testVM, streams int) {
	t.Helper()
	fresh := newTestStore(t, s.Device(), 0)
	for _, k := range sinkKinds {
		what := fmt.Sprintf("generation %d, %s sink", c.Generation, k.name)
		mem := garbageMem(len(want.mem.b))
		snap, lc, err := fresh.Load(DecodeOptions{Registry: reg, Key: key, Memory: k.make(mem)})
		if err != nil || !sameStream(lc, c) {
			t.Fatalf("%s: load %+v, %v", what, lc, err)
		}
		checkRestored(t, what+" (Load)", snap, mem, want, streams)
		if key != nil && !snap.Authenticated {
			t.Fatalf("%s: not authenticated", what)
		}
		mem = garbageMem(len(want.mem.b))
		var read, total uint64
		snap, err = fresh.Decode(c, DecodeOptions{Registry: reg, Key: key, Memory: k.make(mem),
			Progress: func(r, tot uint64) {
				if r < read || r > tot {
					t.Fatalf("%s: progress %d/%d after %d", what, r, tot, read)
				}
				read, total = r, tot
			}})
		if err != nil {
			t.Fatalf("%s: decode: %v", what, err)
		}
		checkRestored(t, what+" (Decode)", snap, mem, want, streams)
		var sum int64
		for _, cs := range snap.Chain {
			sum += cs.Length
		}
		if read != total || total != uint64(sum) {
			t.Fatalf("%s: progress ended at %d/%d, the chain has %d bytes", what, read, total, sum)
		}
	}
}

// chainStore returns a store on a 512-byte-sector device of slot bytes
// per slot with a full snapshot of vm (tinyVM) and n increments on it,
// and the states saved, by generation.
func chainStore(t *testing.T, slot int64, vm *chainVM, n, dirty int) (*MemDevice, *Store, []*Commit, map[uint64]*testVM) {
	t.Helper()
	dev := NewMemDevice(DataStart+2*slot, 512)
	s := newTestStore(t, dev, 4096)
	states := map[uint64]*testVM{}
	var cs []*Commit
	var base *Commit
	for i := 0; i <= n; i++ {
		if i > 0 {
			vm.mutate(dirty)
		}
		c, err := vm.save(s, base, SaveOptions{})
		if err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		states[c.Generation] = vm.state()
		cs = append(cs, c)
		base = c
	}
	return dev, s, cs, states
}

// TestChainStaleBase: an increment on anything but the newest valid
// snapshot is refused with ErrStaleBase, before anything is written.
func TestChainStaleBase(t *testing.T) {
	vm := newChainVM(tinyVM(3), 4)
	dev, s, cs, _ := chainStore(t, 1<<20, vm, 2, 3)
	before := bytes.Clone(dev.Data)
	changed := *cs[2]
	changed.Digest[0] ^= 1
	other := &Commit{Slot: 1, Generation: 9, Offset: s.slotOffset(1), Length: 4096}
	for name, base := range map[string]*Commit{"older": cs[1], "first": cs[0], "digest": &changed, "other slot": other} {
		vm.mutate(2)
		if _, err := vm.save(s, base, SaveOptions{}); !errors.Is(err, ErrStaleBase) {
			t.Errorf("%s base: %v, want ErrStaleBase", name, err)
		}
		if !bytes.Equal(dev.Data, before) {
			t.Fatalf("%s base: the refused save wrote to the device", name)
		}
	}
	empty := newTestStore(t, NewMemDevice(DataStart+2<<20, 512), 0)
	if _, err := vm.save(empty, cs[2], SaveOptions{}); !errors.Is(err, ErrStaleBase) {
		t.Errorf("empty store: %v, want ErrStaleBase", err)
	}
	// A damaged newest snapshot is not a base either (the save reads it
	// back): its predecessor is the newest valid one.
	dev.Data[cs[2].Offset+cs[2].Length/2] ^= 1
	if _, err := vm.save(s, cs[2], SaveOptions{}); !errors.Is(err, ErrStaleBase) {
		t.Errorf("damaged base: %v, want ErrStaleBase", err)
	}
	for _, r := range vm.ranges {
		for gpa := r.GPA; gpa < r.GPA+r.Size; gpa += PageSize {
			vm.dirty[gpa] = true // since generation 2: every page
		}
	}
	c, err := vm.save(s, cs[1], SaveOptions{})
	if err != nil || c.Offset != cs[2].Offset || c.Position != cs[2].Position {
		t.Fatalf("increment on the newest valid snapshot: %+v, %v (want it over the damaged one, %+v)", c, err, cs[2])
	}
	sink := garbageMem(len(vm.mem.b))
	snap, lc, err := s.Load(DecodeOptions{Registry: testRegistry(t), Memory: sink})
	if err != nil || lc.Generation != c.Generation {
		t.Fatalf("load: %+v %v", lc, err)
	}
	checkRestored(t, "after the damaged one", snap, sink, vm.state(), 3)
}

// TestChainFull: ErrChainFull when the chain has MaxChain streams and when
// the increment does not fit in the slot, with nothing committed; the
// previous chain still loads; and on devices whose sectors leave no room
// for a second record position.
func TestChainFull(t *testing.T) {
	reg := testRegistry(t)
	t.Run("length", func(t *testing.T) {
		vm := newChainVM(tinyVM(5), 6)
		dev, s, cs, states := chainStore(t, 1<<20, vm, MaxChain-1, 1)
		before := bytes.Clone(dev.Data)
		vm.mutate(1)
		if _, err := vm.save(s, cs[len(cs)-1], SaveOptions{}); !errors.Is(err, ErrChainFull) {
			t.Fatalf("save %d: %v, want ErrChainFull", MaxChain+1, err)
		}
		if !bytes.Equal(dev.Data, before) {
			t.Fatal("the refused save wrote to the device")
		}
		sink := garbageMem(len(vm.mem.b))
		snap, c, err := s.Load(DecodeOptions{Registry: reg, Memory: sink})
		if err != nil || !sameStream(c, cs[len(cs)-1]) {
			t.Fatalf("load after ErrChainFull: %+v %v", c, err)
		}
		checkRestored(t, "full chain", snap, sink, states[c.Generation], MaxChain)
		if c, err := vm.save(s, nil, SaveOptions{}); err != nil || c.Slot == cs[0].Slot {
			t.Fatalf("full save after ErrChainFull: %+v %v", c, err)
		}
	})
	t.Run("slot", func(t *testing.T) {
		vm := newChainVM(tinyVM(6), 7)
		const slot = 256 << 10
		dev, s, cs, states := chainStore(t, slot, vm, 0, 0)
		var err error
		for err == nil {
			vm.mutate(20)
			before := bytes.Clone(dev.Data[:DataStart])
			var c *Commit
			if c, err = vm.save(s, cs[len(cs)-1], SaveOptions{}); err == nil {
				cs = append(cs, c)
				states[c.Generation] = vm.state()
			} else if !bytes.Equal(dev.Data[:DataStart], before) {
				t.Fatal("the refused save changed a commit record")
			}
		}
		if !errors.Is(err, ErrChainFull) || len(cs) < 2 {
			t.Fatalf("after %d streams: %v, want ErrChainFull", len(cs), err)
		}
		sink := garbageMem(len(vm.mem.b))
		snap, c, err := s.Load(DecodeOptions{Registry: reg, Memory: sink})
		if err != nil || !sameStream(c, cs[len(cs)-1]) {
			t.Fatalf("load after ErrChainFull: %+v %v", c, err)
		}
		checkRestored(t, "full slot", snap, sink, states[c.Generation], len(cs))
	})
	t.Run("sector", func(t *testing.T) {
		dev := NewMemDevice(DataStart+2<<20, RecordArea)
		s := newTestStore(t, dev, 0)
		if s.ChainsSupported() || !newTestStore(t, NewMemDevice(DataStart+2<<20, RecordAltOffset), 0).ChainsSupported() {
			t.Fatal("ChainsSupported does not follow the sector size")
		}
		vm := newChainVM(tinyVM(7), 8)
		c, err := vm.save(s, nil, SaveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before := bytes.Clone(dev.Data)
		vm.mutate(1)
		if _, err := vm.save(s, c, SaveOptions{}); !errors.Is(err, ErrChainFull) || !bytes.Equal(dev.Data, before) {
			t.Fatalf("increment with %d-byte sectors: %v", RecordArea, err)
		}
	})
}

// TestChainRAMMustMatch: an increment's RAM chunk must be incremental on
// Base, and a full save's must not be incremental; nothing is committed
// otherwise.
func TestChainRAMMustMatch(t *testing.T) {
	vm := newChainVM(tinyVM(8), 9)
	dev, s, cs, _ := chainStore(t, 1<<20, vm, 1, 2)
	records := bytes.Clone(dev.Data[:DataStart])
	vm.mutate(2)
	vm.ramOpts = RAMOptions{}
	if _, err := s.Save(SaveOptions{Base: cs[1]}, vm.fill); err == nil {
		t.Error("an increment with a full RAM chunk was committed")
	}
	vm.ramOpts = RAMOptions{Carried: vm.carried, BaseGeneration: cs[0].Generation, BaseDigest: cs[0].Digest}
	if _, err := s.Save(SaveOptions{Base: cs[1]}, vm.fill); err == nil {
		t.Error("an increment on the wrong base was committed")
	}
	vm.ramOpts = RAMOptions{Carried: vm.carried, BaseGeneration: cs[1].Generation, BaseDigest: cs[1].Digest}
	if _, err := s.Save(SaveOptions{}, vm.fill); err == nil {
		t.Error("a full save with an incremental RAM chunk was committed")
	}
	if err := vm.saveWithChainChunk(s); err == nil {
		t.Error("fill wrote a chain chunk itself")
	}
	if !bytes.Equal(dev.Data[:DataStart], records) {
		t.Error("a refused save changed a commit record")
	}
}

// saveWithChainChunk saves a snapshot whose fill writes a chain chunk.
func (c *chainVM) saveWithChainChunk(s *Store) error {
	_, err := s.Save(SaveOptions{}, func(w *Writer) error {
		if err := w.WriteManifest(c.manifest); err != nil {
			return err
		}
		return w.WriteChunk(TypeChain, 0, ChainVersion, Required, encodeChain([]ChainLink{{Generation: 1}}))
	})
	return err
}

// TestChainCorruption damages one byte of one stream of a chain (page
// data, or the stream's framing) and loads: the load falls back to the
// newest snapshot whose chain is intact, in the same slot or the other,
// and without one fails naming the damaged stream's generation.
func TestChainCorruption(t *testing.T) {
	reg := testRegistry(t)
	// Slot 0: full generation 1. Slot 1: full 2, increments 3, 4, 5.
	vm := newChainVM(tinyVM(11), 12)
	dev := NewMemDevice(DataStart+2*(1<<20), 512)
	s := newTestStore(t, dev, 4096)
	states := map[uint64]*testVM{}
	cs := map[uint64]*Commit{}
	var base *Commit
	for gen := uint64(1); gen <= 5; gen++ {
		if gen > 1 {
			vm.mutate(6)
		}
		if gen <= 2 {
			base = nil
		}
		c, err := vm.save(s, base, SaveOptions{})
		if err != nil || c.Generation != gen {
			t.Fatalf("save %d: %+v %v", gen, c, err)
		}
		states[gen], cs[gen], base = vm.state(), c, c
	}
	pristine := bytes.Clone(dev.Data)
	for _, tc := range []struct {
		damaged, loads uint64
	}{{2, 1}, {3, 1}, {4, 1}, {5, 4}} {
		c := cs[tc.damaged]
		for where, at := range map[string]int64{"page data": pageDataByte(t, dev, c, states[tc.damaged]), "manifest": c.Offset + HeaderSize + ChunkHeaderSize + 8} {
			name := fmt.Sprintf("generation %d %s", tc.damaged, where)
			copy(dev.Data, pristine)
			dev.Data[at] ^= 0x10
			sink := garbageMem(len(vm.mem.b))
			snap, lc, err := newTestStore(t, dev, 0).Load(DecodeOptions{Registry: reg, Memory: sink})
			if err != nil || lc.Generation != tc.loads {
				t.Fatalf("%s: loads %+v, %v; want generation %d", name, lc, err, tc.loads)
			}
			streams := 1
			if tc.loads > 2 {
				streams = int(tc.loads) - 1
			}
			checkRestored(t, name, snap, sink, states[tc.loads], streams)
			// One pass of the newest, as kernel.Restore does: the error
			// names the damaged stream.
			_, err = s.Decode(cs[5], DecodeOptions{Registry: reg, Memory: garbageMem(len(vm.mem.b))})
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("generation %d ", tc.damaged)) {
				t.Fatalf("%s: decode of generation 5: %v", name, err)
			}
		}
	}
	// Without the other slot, a damaged chain leaves nothing to load.
	vm = newChainVM(tinyVM(13), 14)
	dev, s2, cs2, states2 := chainStore(t, 1<<20, vm, 2, 4)
	dev.Data[pageDataByte(t, dev, cs2[0], states2[1])] ^= 1
	_, _, err := s2.Load(DecodeOptions{Registry: reg, Memory: garbageMem(len(vm.mem.b))})
	if !errors.Is(err, ErrNoSnapshot) || !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "full snapshot generation 1 ") {
		t.Fatalf("damaged full snapshot, no other slot: %v", err)
	}
}

// pageDataByte returns the device offset of a byte of page data of the
// stream committed as c on dev: in the middle of a page of want (the VM
// at that save) that the stream stores.
func pageDataByte(t *testing.T, dev *MemDevice, c *Commit, want *testVM) int64 {
	t.Helper()
	stream := dev.Data[c.Offset : c.Offset+c.Length]
	for _, r := range want.ranges {
		for gpa := r.GPA; gpa < r.GPA+r.Size; gpa += PageSize {
			page := want.mem.b[gpa : gpa+PageSize]
			if i := bytes.Index(stream, page); !IsZeroPage(page) && i >= 0 {
				return c.Offset + int64(i) + PageSize/2
			}
		}
	}
	t.Fatalf("generation %d stores no page", c.Generation)
	return 0
}

// TestChainRecords: the commit record of an increment is refused when it
// does not fit its slot, and a record position torn by a save is
// reported without hiding the slot's valid record.
func TestChainRecords(t *testing.T) {
	vm := newChainVM(tinyVM(15), 16)
	dev, s, cs, _ := chainStore(t, 1<<20, vm, 1, 2)
	inc := cs[1]
	for name, c := range map[string]Commit{
		"unaligned":   {Slot: 0, Generation: 9, Offset: inc.Offset + 512, Length: 4096},
		"past slot":   {Slot: 0, Generation: 9, Offset: s.slotOffset(0) + s.SlotSize(), Length: 4096},
		"long":        {Slot: 0, Generation: 9, Offset: inc.Offset, Length: s.SlotSize()},
		"other slot":  {Slot: 0, Generation: 9, Offset: s.slotOffset(1) + SlotAlign, Length: 4096},
		"before slot": {Slot: 1, Generation: 9, Offset: s.slotOffset(0) + SlotAlign, Length: 4096},
	} {
		if _, err := s.parseRecord(c.Slot, c.marshal()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s record accepted: %v", name, err)
		}
	}
	at := recordAt(0, inc.Position)
	dev.Data[at+20] ^= 1
	recs, err := s.Records()
	if err != nil {
		t.Fatal(err)
	}
	r := recs[0]
	if r.Commit == nil || !sameStream(r.Commit, cs[0]) || r.Previous != nil || r.OtherErr == nil || r.Err != nil {
		t.Fatalf("slot with a torn increment record: %+v", r)
	}
}

// TestCommitView: a view of the older record of a slot restores that
// snapshot (the chain up to it), not the slot's newest, and takes no saves.
func TestCommitView(t *testing.T) {
	dev := NewMemDevice(DataStart+2*(8<<20), 512)
	s := newTestStore(t, dev, 0)
	reg := testRegistry(t)
	vm := newChainVM(newTestVM(11, 2<<20), 5)
	c1, err := vm.save(s, nil, SaveOptions{Header: Header{VMName: "vm"}})
	if err != nil {
		t.Fatal(err)
	}
	vm.mutate(8)
	want := vm.state()
	c2, err := vm.save(s, c1, SaveOptions{Header: Header{VMName: "vm"}})
	if err != nil {
		t.Fatal(err)
	}
	vm.mutate(8)
	if _, err := vm.save(s, c2, SaveOptions{Header: Header{VMName: "vm"}}); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Records()
	if err != nil {
		t.Fatal(err)
	}
	prev := recs[c2.Slot].Previous
	if prev == nil || prev.Generation != c2.Generation {
		t.Fatalf("slot %d previous record %+v, want generation %d", c2.Slot, prev, c2.Generation)
	}
	view, err := s.CommitView(prev)
	if err != nil {
		t.Fatal(err)
	}
	sink := &guestMem{b: make([]byte, len(want.mem.b))}
	_, lc, err := view.Load(DecodeOptions{Registry: reg, Memory: sink})
	if err != nil {
		t.Fatal(err)
	}
	if lc.Generation != c2.Generation || !ramEqual(want, sink) {
		t.Fatalf("view of generation %d loaded generation %d, RAM equal %v", c2.Generation, lc.Generation, ramEqual(want, sink))
	}
	if _, err := view.Save(SaveOptions{Header: Header{VMName: "vm"}}, vm.fill); err == nil {
		t.Fatal("a save through a commit view was accepted")
	}
}
