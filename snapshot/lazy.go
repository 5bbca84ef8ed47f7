package snapshot

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"sort"

	"github.com/cespare/xxhash/v2"
)

// Lazy restore (docs/snapshot-format.md, 3.3): a committed snapshot is
// opened with every chunk of every stream of its chain decoded and
// checked except the RAM chunks' page data, which is skipped on the
// device: in a version 2 RAM chunk the page data is outside the digest,
// the HMAC and the chunk CRC, so those and the end record are checked
// without it. The bitmaps and block tables are kept; each 1 MiB block of
// page data is read when it is filled (Lazy.Fill), checked against its
// table entry, and only then are the pages of it that its stream owns
// given to the memory sink. A page's owner is the newest stream of the
// chain whose RAM chunk carries it (the full snapshot carries every
// page); the page is zero if its owner stores no data for it.

// pagesPerBlock is the number of stored pages in one block of page data.
const pagesPerBlock = RAMBlockSize / PageSize

// Lazy is a snapshot opened without its page data (Store.OpenLazy): a
// full snapshot, or an increment with the streams of its chain. It says
// where each guest page's contents are, and fills blocks of page data on
// demand. Blocks are numbered across the chain: the full snapshot's
// first, then each increment's, oldest first. A Lazy is not safe for
// concurrent use.
type Lazy struct {
	streams []*lazyStream // oldest (the full snapshot) first
	first   []int         // the number of each stream's first block
	// owned holds, per stream and RAM range, a bitmap of the pages the
	// stream defines: those it carries that no newer stream carries.
	// nil for a single stream (it owns every page).
	owned [][][]byte
	// data is, per RAM range, the data bitmap of the result: the pages
	// whose owner stores them.
	data   [][]byte
	filled []bool // blocks with no page to place are filled at the open
	fills  int    // blocks to fill at the open
	left   int

	rd   blockReader
	rbuf []byte   // the block reader's buffer
	edge []byte   // the partial sectors of a scattered read (read)
	segs [][]byte // a scattered read's buffers
	// A read of block ahead laid out as aheadPieces, started by prefetch
	// (aheadOn), to be waited for with aheadDev's Sync.
	// clock (the store's) times the fills (Profile).
	clock       func() uint64
	prof        LazyProfile
	aheadOn     bool
	ahead       int
	aheadPieces []piece
	aheadDev    AsyncWriter
	bufAhead    []byte // the scratch of the block read ahead
	edgeAhead   []byte
	buf         []byte // a block, for sinks that cannot be viewed
}

// lazyStream is one stream of a lazy open: its RAM chunk's ranges and
// block table, its page data on the device.
type lazyStream struct {
	dev     BlockDevice
	base    int64 // device offset of the stream
	keyed   bool
	key     []byte // the snapshot key; nil: tags not checked (SkipAuth)
	nonce   [ramNonceSize]byte
	gen     uint64
	ranges  []lazyRange
	data    uint64 // bytes of page data
	table   []byte // the block table's entries
	sumSize int
	blocks  int
	ram     *RAMInfo // the RAM chunk as decoded (carried bitmaps)
}

// lazyRange is one range of a RAM chunk.
type lazyRange struct {
	gpa, pages uint64
	data       []byte   // the data bitmap
	first      uint64   // stored pages of the chunk before this range
	n          uint64   // stored pages of this range
	rank       []uint64 // stored pages of the chunk before each 64-page word
	off        int64    // stream offset of the range's page data
}

// lazyRun is a run of stored pages of one range contiguous in guest
// memory and in the stream.
type lazyRun struct {
	ri  int // the range
	gpa uint64
	off int64 // stream offset
	n   uint64
}

// BlockError is a block of page data that failed its check, or could not
// be read; nothing of it was given to the sink.
type BlockError struct {
	// Generation is the stream's generation, Index the block's number
	// in that stream's page data.
	Generation uint64
	Index      int
	// GPA and End bound the guest-physical range the block's pages lie
	// in: the first page's address and the end of the last.
	GPA, End uint64
	Err      error
}

func (e *BlockError) Error() string {
	return fmt.Sprintf("snapshot: generation %d: RAM block %d (guest-physical %#x-%#x): %v", e.Generation, e.Index, e.GPA, e.End, e.Err)
}

func (e *BlockError) Unwrap() error { return e.Err }

// wordPages is the number of pages a rank entry covers.
const wordPages = 64

// addRange records a range of the RAM chunk during the open: its data
// bitmap, the stored pages before it, and where its page data starts.
func (st *lazyStream) addRange(gpa, pages uint64, data []byte, first uint64, off int64) {
	r := lazyRange{gpa: gpa, pages: pages, data: data, first: first, off: off}
	n := first
	for w := uint64(0); w*wordPages < pages; w++ {
		r.rank = append(r.rank, n)
		lo := w * wordPages / 8
		for _, b := range data[lo:min(lo+wordPages/8, uint64(len(data)))] {
			n += uint64(bits.OnesCount8(b))
		}
	}
	r.n = n - first
	st.ranges = append(st.ranges, r)
}

// setTable records the block table read at the end of the RAM chunk.
func (st *lazyStream) setTable(blocks *blockSums, table []byte, dataBytes uint64) {
	st.keyed, st.key, st.nonce, st.gen = blocks.keyed, blocks.key, blocks.nonce, blocks.gen
	st.sumSize = blocks.sumSize()
	st.table = table
	st.data = dataBytes
	st.blocks = int(ramBlocks(dataBytes))
}

// OpenLazy opens the snapshot committed as c without reading its page
// data: every check of Decode that does not need the page data is made
// (CRCs, digest and HMAC, the end record, known chunks, generation and
// digest equal to c's, the RAM chunk's bitmaps and block table against
// the stream), and the snapshot is returned with a Lazy that fills its
// blocks of page data on demand, each checked before the sink sees it.
// An increment is opened with its whole chain, every stream checked as
// Decode checks a chain (docs/snapshot-format.md, 5.2), and the snapshot
// returned is what Decode gives (the newest stream's chunks, the merged
// RAM info, the chain). opts.Memory and opts.Progress are not used. A
// snapshot with a version 1 RAM chunk in any stream fails with
// ErrLazyUnsupported: decode it with Decode.
func (s *Store) OpenLazy(c *Commit, opts DecodeOptions) (*Lazy, *Snapshot, error) {
	l, snap, err := s.openLazy(c, opts)
	if l != nil {
		l.clock = s.clock
	}
	return l, snap, err
}

func (s *Store) openLazy(c *Commit, opts DecodeOptions) (*Lazy, *Snapshot, error) {
	if c.Incremental(s) {
		return s.openLazyChain(c, opts)
	}
	st, snap, err := s.openLazyStream(ChainLink{Generation: c.Generation, Offset: c.Offset, Length: c.Length, Digest: c.Digest}, opts)
	if err != nil {
		return nil, nil, err
	}
	if err := checkFull(snap, c); err != nil {
		return nil, nil, err
	}
	snap.Chain = []ChainStream{streamInfo(snap, c.Offset)}
	return newLazy([]*lazyStream{st}), snap, nil
}

// openLazyChain opens the increment committed as c with its chain, as
// decodeChain reads it.
func (s *Store) openLazyChain(c *Commit, opts DecodeOptions) (*Lazy, *Snapshot, error) {
	links, err := s.readLinks(c)
	if err != nil {
		return nil, nil, chainFail(c, err)
	}
	var streams []*lazyStream
	snap, err := s.readChain(c, links, func(l ChainLink) (*Snapshot, error) {
		st, snap, err := s.openLazyStream(l, opts)
		streams = append(streams, st)
		return snap, err
	})
	if err != nil {
		return nil, nil, err
	}
	return newLazy(streams), snap, nil
}

// openLazyStream opens the stream l names lazily and checks that it is
// that stream (generation and digest).
func (s *Store) openLazyStream(l ChainLink, opts DecodeOptions) (*lazyStream, *Snapshot, error) {
	st, snap, err := openLazy(s.dev, l.Offset, l.Length, opts, s.blockSize)
	if err == nil {
		err = checkStream(snap, l.Generation, l.Digest)
	}
	if err != nil {
		return nil, nil, err
	}
	return st, snap, nil
}

// openLazy opens the stream of length bytes at device offset off (sector
// aligned) lazily.
func openLazy(dev BlockDevice, off, length int64, opts DecodeOptions, bufSize int) (*lazyStream, *Snapshot, error) {
	opts.defaults()
	opts.Memory, opts.Progress = nil, nil
	if length < 0 {
		return nil, nil, fmt.Errorf("snapshot: negative size")
	}
	st := &lazyStream{dev: dev, base: off}
	d := &decoder{
		opts: &opts,
		lazy: st,
		sr:   &streamReader{r: newBlockReader(dev, off, length, bufSize), left: length, digest: sha256.New(), hashing: true},
		snap: &Snapshot{Size: length},
		seen: make(map[string]bool),
	}
	if err := d.run(); err != nil {
		return nil, nil, err
	}
	st.ram = d.snap.RAM
	return st, d.snap, nil
}

// newLazy makes the Lazy of a chain's streams, oldest first, opened and
// checked (every RAM chunk covers the same ranges; every increment's RAM
// chunk is incremental): it finds each page's owner and the blocks that
// hold a page to place.
func newLazy(streams []*lazyStream) *Lazy {
	l := &Lazy{streams: streams}
	n := 0
	for _, st := range streams {
		l.first = append(l.first, n)
		n += st.blocks
	}
	l.filled = make([]bool, n)
	newest := streams[len(streams)-1]
	if len(streams) == 1 {
		for _, r := range newest.ranges {
			l.data = append(l.data, r.data)
		}
		l.fills, l.left = n, n
		return l
	}
	l.owned = make([][][]byte, len(streams))
	for ri, r := range newest.ranges {
		covered := make([]byte, len(r.data))
		data := make([]byte, len(r.data))
		// Newest first: a page is the first stream's to carry it; the
		// full snapshot (index 0) carries every page.
		for s := len(streams) - 1; s >= 0; s-- {
			var carried []byte // nil: every page
			if s > 0 {
				carried = streams[s].ram.maps[ri].carried
			}
			sd := streams[s].ranges[ri].data
			own := make([]byte, len(r.data))
			for j := range own {
				c := byte(allPages)
				if carried != nil {
					c = carried[j]
				}
				own[j] = c &^ covered[j]
				covered[j] |= own[j]
				data[j] |= own[j] & sd[j]
			}
			if r.pages%8 != 0 {
				own[len(own)-1] &= 1<<(r.pages%8) - 1
			}
			l.owned[s] = append(l.owned[s], own)
		}
		l.data = append(l.data, data)
	}
	// A block none of whose pages its stream owns has nothing to place.
	// A bitmap byte spans at most two blocks.
	needed := make([]bool, n)
	for s, st := range streams {
		for ri := range st.ranges {
			r := &st.ranges[ri]
			ord := r.first
			for j, d := range r.data {
				if od := d & l.owned[s][ri][j]; od != 0 {
					lo := ord + uint64(bits.OnesCount8(d&(od&-od-1)))
					hi := ord + uint64(bits.OnesCount8(d&(1<<(7-bits.LeadingZeros8(od))-1)))
					needed[l.first[s]+int(lo/pagesPerBlock)] = true
					needed[l.first[s]+int(hi/pagesPerBlock)] = true
				}
				ord += uint64(bits.OnesCount8(d))
			}
		}
	}
	for i, need := range needed {
		l.filled[i] = !need
		if need {
			l.fills++
		}
	}
	l.left = l.fills
	return l
}

// LazyProfile is where the fills of a Lazy spent their time, in ticks of
// the store's clock (StoreOptions.Clock; zero without one).
type LazyProfile struct {
	Read  uint64 // reading page data, or waiting for a read started ahead
	Check uint64 // checking blocks (XXH64, Poly1305) and placing pages
	// Ahead blocks were read ahead, while the block before was checked.
	Ahead int
}

// Profile returns where the fills so far spent their time.
func (l *Lazy) Profile() LazyProfile { return l.prof }

// tick reads the clock (0 without one).
func (l *Lazy) tick() uint64 {
	if l.clock == nil {
		return 0
	}
	return l.clock()
}

// Blocks returns the number of blocks of page data of all streams:
// blocks are numbered 0 to Blocks()-1.
func (l *Lazy) Blocks() int { return len(l.filled) }

// Fills returns the number of blocks that had pages to place at the
// open: Blocks less those whose pages newer streams all define (they
// count as filled).
func (l *Lazy) Fills() int { return l.fills }

// Remaining returns the number of blocks not filled yet.
func (l *Lazy) Remaining() int { return l.left }

// Filled reports whether block i was filled, or has no page to place.
func (l *Lazy) Filled(i int) bool { return i >= 0 && i < len(l.filled) && l.filled[i] }

// Streams returns the number of streams of the chain (1 for a full
// snapshot).
func (l *Lazy) Streams() int { return len(l.streams) }

// Block says which stream block i is in, by generation, and its number
// in that stream's page data.
func (l *Lazy) Block(i int) (gen uint64, index int) {
	s, b := l.blockOf(i)
	return l.streams[s].gen, b
}

// blockOf returns the stream (index in streams) block i is in and its
// number there.
func (l *Lazy) blockOf(i int) (s, b int) {
	s = sort.Search(len(l.first), func(s int) bool { return l.first[s] > i }) - 1
	return s, i - l.first[s]
}

// ownerOf returns the stream that defines page p of range ri.
func (l *Lazy) ownerOf(ri int, p uint64) int {
	for s := len(l.owned) - 1; s > 0; s-- {
		if bitSet(l.owned[s][ri], p) {
			return s
		}
	}
	return 0
}

// ranges are the RAM ranges of the result (every stream's, checked).
func (l *Lazy) ranges() []lazyRange { return l.streams[len(l.streams)-1].ranges }

// Locate says where the page at gpa comes from: ok false if no range of
// the RAM chunk holds it; else stored false for a zero page (its owner
// stores no data for it), or the block holding its contents.
func (l *Lazy) Locate(gpa uint64) (block int, stored, ok bool) {
	rs := l.ranges()
	ri := sort.Search(len(rs), func(i int) bool {
		r := &rs[i]
		return r.gpa+r.pages*PageSize > gpa
	})
	if ri == len(rs) || gpa < rs[ri].gpa {
		return 0, false, false
	}
	p := (gpa - rs[ri].gpa) / PageSize
	if !bitSet(l.data[ri], p) {
		return 0, false, true
	}
	s := l.ownerOf(ri, p)
	r := &l.streams[s].ranges[ri]
	ord := r.rank[p/wordPages]
	for b := p / wordPages * wordPages / 8; b < p/8; b++ {
		ord += uint64(bits.OnesCount8(r.data[b]))
	}
	ord += uint64(bits.OnesCount8(r.data[p/8] & (1<<(p%8) - 1)))
	return l.first[s] + int(ord/pagesPerBlock), true, true
}

// ZeroRuns calls fn for every run of pages of the RAM ranges that are
// zero (their owner stores no data for them), in GPA order, and stops at
// its first error.
func (l *Lazy) ZeroRuns(fn func(gpa, n uint64) error) error {
	return l.ZeroRunsIn(0, ^uint64(0), fn)
}

// ZeroRunsIn is ZeroRuns for the pages in [from, to) (page aligned).
func (l *Lazy) ZeroRunsIn(from, to uint64, fn func(gpa, n uint64) error) error {
	for i, r := range l.ranges() {
		data := l.data[i]
		end := r.gpa + r.pages*PageSize
		if end <= from || r.gpa >= to {
			continue
		}
		first, last := (max(from, r.gpa)-r.gpa)/PageSize, (min(to, end)-r.gpa)/PageSize
		for p := first; p < last; {
			if bitSet(data, p) {
				p++
				continue
			}
			q := p + 1
			for q < last && !bitSet(data, q) {
				q++
			}
			if err := fn(r.gpa+p*PageSize, (q-p)*PageSize); err != nil {
				return err
			}
			p = q
		}
	}
	return nil
}

// BlockRuns calls fn for each run of guest memory that block i fills (its
// pages that its stream owns), in GPA order.
func (l *Lazy) BlockRuns(i int, fn func(gpa, n uint64)) {
	if i < 0 || i >= len(l.filled) {
		return
	}
	s, b := l.blockOf(i)
	for _, r := range l.streams[s].blockRuns(b) {
		l.ownedRuns(s, r, fn)
	}
}

// ownedRuns calls fn for each run of the pages of r that stream s owns.
func (l *Lazy) ownedRuns(s int, r lazyRun, fn func(gpa, n uint64)) {
	l.splitRun(s, r, func(x lazyRun, owned bool) {
		if owned {
			fn(x.gpa, x.n)
		}
	})
}

// splitRun calls fn for the runs r splits into where the ownership of its
// pages by stream s changes, in order, saying whether s owns each.
func (l *Lazy) splitRun(s int, r lazyRun, fn func(x lazyRun, owned bool)) {
	if l.owned == nil {
		fn(r, true)
		return
	}
	own := l.owned[s][r.ri]
	p0 := (r.gpa - l.ranges()[r.ri].gpa) / PageSize
	n := r.n / PageSize
	for k := uint64(0); k < n; {
		o := bitSet(own, p0+k)
		e := k + 1
		for e < n && bitSet(own, p0+e) == o {
			e++
		}
		fn(lazyRun{ri: r.ri, gpa: r.gpa + k*PageSize, off: r.off + int64(k*PageSize), n: (e - k) * PageSize}, o)
		k = e
	}
}

// blockRuns returns the runs of stored pages block i of the stream holds.
func (st *lazyStream) blockRuns(i int) []lazyRun {
	var runs []lazyRun
	start := uint64(i) * pagesPerBlock
	end := min(start+pagesPerBlock, st.data/PageSize)
	ri := sort.Search(len(st.ranges), func(j int) bool { return st.ranges[j].first+st.ranges[j].n > start })
	for ord := start; ord < end && ri < len(st.ranges); ri++ {
		r := &st.ranges[ri]
		if r.n == 0 {
			continue
		}
		// The first page at or after ord in this range: the word
		// holding it, then its bit.
		w := sort.Search(len(r.rank), func(w int) bool { return r.rank[w] > ord }) - 1
		p, seen := uint64(max(w, 0))*wordPages, r.rank[max(w, 0)]
		for ; p < r.pages && ord < end; p++ {
			if r.data[p/8] == 0 && p%8 == 0 {
				p += 7
				continue
			}
			if !bitSet(r.data, p) {
				continue
			}
			if seen < ord {
				seen++
				continue
			}
			gpa, off := r.gpa+p*PageSize, r.off+int64(ord-r.first)*PageSize
			if n := len(runs); n > 0 && runs[n-1].ri == ri && runs[n-1].gpa+runs[n-1].n == gpa && runs[n-1].off+int64(runs[n-1].n) == off {
				runs[n-1].n += PageSize
			} else {
				runs = append(runs, lazyRun{ri: ri, gpa: gpa, off: off, n: PageSize})
			}
			ord++
			seen++
		}
	}
	return runs
}

// BlockGPA returns the guest-physical range block i's pages lie in (all
// of its stream's pages, owned or not): the first page's address and the
// end of the last.
func (l *Lazy) BlockGPA(i int) (gpa, end uint64) {
	if i < 0 || i >= len(l.filled) {
		return 0, 0
	}
	s, b := l.blockOf(i)
	return runsGPA(l.streams[s].blockRuns(b))
}

// runsGPA returns the first page's address and the end of the last of
// runs.
func runsGPA(runs []lazyRun) (gpa, end uint64) {
	if len(runs) == 0 {
		return 0, 0
	}
	last := runs[len(runs)-1]
	return runs[0].gpa, last.gpa + last.n
}

// Fill reads block i of page data from the device, checks its XXH64 sum
// and, in a keyed snapshot opened with the key, its Poly1305 tag, and
// then gives the pages of it that its stream owns to sink (nil: only
// check); pages a newer stream defines are not given. A sink that is a
// Viewer has the pages its stream owns read straight into its memory;
// if the block then fails, that memory is cleared again. On a device
// that reads asynchronously (AsyncReader) the next block is read while
// this one is checked: Close waits for that read. A block that fails is a *BlockError naming its stream,
// the block and its guest-physical range: the sink gets nothing of a
// block that does not verify. A block already filled, or with no page to
// place, is not read.
func (l *Lazy) Fill(i int, sink MemorySink) error {
	if i < 0 || i >= len(l.filled) {
		return fmt.Errorf("snapshot: RAM block %d of %d", i, len(l.filled))
	}
	if l.filled[i] {
		return nil
	}
	s, b := l.blockOf(i)
	st := l.streams[s]
	runs := st.blockRuns(b)
	if len(runs) == 0 {
		return fmt.Errorf("snapshot: generation %d: RAM block %d holds no pages", st.gen, b)
	}
	if l.buf == nil {
		l.buf = make([]byte, RAMBlockSize)
		l.rbuf = make([]byte, readAhead)
	}
	var ps []piece
	fail := func(err error) error {
		for _, p := range ps {
			if p.inPlace {
				clear(p.b)
			}
		}
		gpa, end := runsGPA(runs)
		return &BlockError{Generation: st.gen, Index: b, GPA: gpa, End: end, Err: err}
	}
	xxh := xxhash.New()
	tags := st.keyed && len(st.key) > 0
	var macWrite func([]byte) (int, error)
	var macSum func([]byte) []byte
	if tags {
		m := blockMAC(st.key, st.nonce, st.gen, uint64(b))
		macWrite, macSum = m.Write, m.Sum
	}
	// A read started ahead brought this block if it was this one's, laid
	// out as for this sink (its scratch in bufAhead, which becomes buf);
	// any other is waited for and dropped.
	t := l.tick()
	if l.aheadOn {
		mine := l.ahead == i
		if err := l.wait(); err == nil && mine {
			if alt := l.layout(st, s, runs, sink, l.bufAhead); samePieces(alt, l.aheadPieces) {
				ps = alt
				l.buf, l.bufAhead = l.bufAhead, l.buf
				l.prof.Ahead++
			}
		}
	}
	if ps == nil {
		ps = l.layout(st, s, runs, sink, l.buf)
		if err := l.read(st, ps); err != nil {
			return fail(err)
		}
	}
	// The next block is read while this one is checked.
	l.prefetch(i+1, sink)
	t, l.prof.Read = l.tick(), l.prof.Read+l.tick()-t
	defer func() { l.prof.Check += l.tick() - t }()
	for _, p := range ps {
		xxh.Write(p.b)
		if tags {
			macWrite(p.b)
		}
	}
	e := st.table[uint64(b)*uint64(st.sumSize) : uint64(b+1)*uint64(st.sumSize)]
	if got, want := xxh.Sum64(), binary.LittleEndian.Uint64(e); got != want {
		return fail(fmt.Errorf("%w: XXH64 %016x, the table says %016x", ErrChecksum, got, want))
	}
	if tags {
		if got := macSum(nil); subtle.ConstantTimeCompare(got, e[xxhSumSize:]) != 1 {
			return fail(fmt.Errorf("%w: wrong snapshot key, or the snapshot was forged (Poly1305 tag %x, the table says %x)", ErrAuth, got, e[xxhSumSize:]))
		}
	}
	if sink != nil {
		for _, p := range ps {
			if p.owned && !p.inPlace {
				if _, err := sink.WriteAt(p.b, int64(p.gpa)); err != nil {
					return fail(fmt.Errorf("write guest memory at %#x: %w", p.gpa, err))
				}
			}
		}
	}
	l.filled[i] = true
	l.left--
	return nil
}

// piece is part of a block's page data as it is read: the pages at gpa,
// at stream offset off, read into b. b is the sink's memory (inPlace) or
// scratch. owned: the block's stream defines these pages (else a newer
// stream does: they are checked, then dropped).
type piece struct {
	b       []byte
	off     int64
	gpa     uint64
	inPlace bool
	owned   bool
}

// layout returns the pieces of the read of block runs of stream s into
// sink: pages the stream owns go in place when sink can be viewed there
// (no newer stream defines them, so nothing is present there yet); the
// others go into scratch, in order.
func (l *Lazy) layout(st *lazyStream, s int, runs []lazyRun, sink MemorySink, scratch []byte) []piece {
	v, _ := sink.(Viewer)
	ps := l.lay(s, runs, v, scratch)
	if _, scatters := st.dev.(VectorReader); len(ps) > maxPieces && !scatters {
		// Scattered pages (an increment's) on a device that reads
		// into one buffer per request: one read into scratch, and the
		// pages copied into place after the check, costs less than a
		// request per few pages. A VectorReader takes any number of
		// pieces (cut into requests the device holds).
		ps = l.lay(s, runs, nil, scratch)
	}
	return ps
}

// maxPieces is the most pieces a block is read into in place on a device
// that does not scatter reads.
const maxPieces = 64

// lay is layout, in place where v (nil: nowhere) can be viewed.
func (l *Lazy) lay(s int, runs []lazyRun, v Viewer, scratch []byte) []piece {
	var ps []piece
	var pos uint64
	for _, r := range runs {
		l.splitRun(s, r, func(x lazyRun, owned bool) {
			if owned && v != nil {
				if b, ok := v.View(x.gpa, x.n); ok {
					ps = append(ps, piece{b, x.off, x.gpa, true, true})
					return
				}
			}
			ps = append(ps, piece{scratch[pos : pos+x.n], x.off, x.gpa, false, owned})
			pos += x.n
		})
	}
	return ps
}

// samePieces reports whether a and b lay a read out into the same memory.
func samePieces(a, b []piece) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		x, y := a[k], b[k]
		if x.off != y.off || x.owned != y.owned || x.inPlace != y.inPlace || len(x.b) != len(y.b) || len(x.b) > 0 && &x.b[0] != &y.b[0] {
			return false
		}
	}
	return true
}

// read reads the pieces of a block: in one request when they are
// contiguous in the stream and the device scatters reads (VectorReader),
// the partial sectors at either end into l.edge; else through the block
// reader, with a request per group of pieces contiguous in the stream
// and for the partial sectors.
func (l *Lazy) read(st *lazyStream, ps []piece) error {
	if vr, ok := st.dev.(VectorReader); ok {
		if l.edge == nil {
			l.edge = make([]byte, 2*edgeSize)
		}
		if segs, lo, ok := l.scatter(st, ps, l.edge); ok {
			done, err := vr.ReadV(segs, lo)
			clear(l.segs)
			if err != nil {
				return fmt.Errorf("read page data at stream offset %d: %w", ps[0].off, err)
			}
			if done {
				return nil
			}
		}
	}
	next := int64(-1) // stream offset the reader is at
	for k, p := range ps {
		if p.off != next {
			seg := int64(len(p.b))
			for _, q := range ps[k+1:] {
				if q.off != p.off+seg {
					break
				}
				seg += int64(len(q.b))
			}
			if err := l.segment(st, p.off, seg); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(&l.rd, p.b); err != nil {
			return fmt.Errorf("read page data at stream offset %d: %w", p.off, err)
		}
		next = p.off + int64(len(p.b))
	}
	return nil
}

// scatter returns the buffers of one read of pieces ps, contiguous in
// stream st: the partial sectors at either end go to edge (2*edgeSize
// bytes: the head ends, and the tail starts, at a page boundary of it, as
// NVMe PRP entries need), and the device offset lo to read at; ok false
// when the pieces are not contiguous in the stream.
func (l *Lazy) scatter(st *lazyStream, ps []piece, edge []byte) (segs [][]byte, lo int64, ok bool) {
	if len(ps) == 0 {
		return nil, 0, false
	}
	end := ps[0].off
	for _, p := range ps {
		if p.off != end {
			return nil, 0, false
		}
		end += int64(len(p.b))
	}
	at, stop := st.base+ps[0].off, st.base+end
	sec := int64(st.dev.SectorSize())
	lo, hi := at/sec*sec, (stop+sec-1)/sec*sec
	segs = append(l.segs[:0], edge[edgeSize-(at-lo):edgeSize])
	for _, p := range ps {
		segs = append(segs, p.b)
	}
	segs = append(segs, edge[edgeSize:edgeSize+hi-stop])
	l.segs = segs
	return segs, lo, true
}

// prefetch starts reading block j ahead, laid out for sink with its
// scratch in bufAhead, when the device reads asynchronously (AsyncReader)
// and the block is not filled and contiguous in its stream: the next Fill
// of j then waits for that read instead of reading. Pages read in place
// are not the guest's before Fill checks them.
func (l *Lazy) prefetch(j int, sink MemorySink) {
	if l.aheadOn || j >= len(l.filled) || l.filled[j] {
		return
	}
	s, b := l.blockOf(j)
	st := l.streams[s]
	ar, ok1 := st.dev.(AsyncReader)
	aw, ok2 := st.dev.(AsyncWriter)
	runs := st.blockRuns(b)
	if !ok1 || !ok2 || len(runs) == 0 {
		return
	}
	if l.bufAhead == nil {
		l.bufAhead = make([]byte, RAMBlockSize)
		l.edgeAhead = make([]byte, 2*edgeSize)
	}
	ps := l.layout(st, s, runs, sink, l.bufAhead)
	segs, lo, ok := l.scatter(st, ps, l.edgeAhead)
	if !ok {
		return
	}
	// Once started, even with an error, the read is waited for (wait)
	// before its memory is used again; its data only if it succeeded.
	if started, _ := ar.ReadVAsync(segs, lo); started {
		l.aheadOn, l.ahead, l.aheadPieces, l.aheadDev = true, j, ps, aw
	}
	clear(l.segs)
}

// wait waits for the read started ahead, if any, and returns its error.
func (l *Lazy) wait() error {
	if !l.aheadOn {
		return nil
	}
	l.aheadOn = false
	return l.aheadDev.Sync()
}

// Close waits for a read Fill started ahead of the next block: call it
// before the sink's memory is used for anything else. It also lets the
// buffers of the fills go (a later Fill takes new ones).
func (l *Lazy) Close() {
	l.wait()
	l.buf, l.bufAhead, l.rbuf, l.edge, l.edgeAhead, l.aheadPieces = nil, nil, nil, nil, nil, nil
}

// edgeSize is the room for a partial sector at either end of a scattered
// read: the largest sector size, a page.
const edgeSize = 4096

// segment points the block reader at the n bytes of stream st at off.
// A device reads whole sectors: the sector holding off is read into the
// buffer alone (not the usual read-ahead), so that the large runs after
// it go from the device straight into their place.
func (l *Lazy) segment(st *lazyStream, off, n int64) error {
	at := st.base + off
	sec := int64(st.dev.SectorSize())
	lo := at / sec * sec
	l.rd = blockReader{dev: st.dev, base: lo, left: n + at - lo, off: lo, buf: l.rbuf[:min(int64(len(l.rbuf)), sec)]}
	err := l.rd.skip(at - lo)
	// The buffer grows back to its size; r and w index the same memory.
	l.rd.buf = l.rbuf
	return err
}
