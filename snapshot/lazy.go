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

// Lazy restore (docs/snapshot-format.md, 3.3): a committed full snapshot
// is opened with every chunk decoded and checked except the RAM chunk's
// page data, which is skipped on the device: in a version 2 RAM chunk
// the page data is outside the digest, the HMAC and the chunk CRC, so
// those and the end record are checked without it. Its bitmaps and block
// table are kept; each 1 MiB block of page data is read when it is
// filled (Lazy.Fill), checked against its table entry, and only then
// given to the memory sink.

// pagesPerBlock is the number of stored pages in one block of page data.
const pagesPerBlock = RAMBlockSize / PageSize

// Lazy is a snapshot opened without its page data (Store.OpenLazy). It
// says where each guest page's contents are, and fills blocks of page
// data on demand. A Lazy is not safe for concurrent use.
type Lazy struct {
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
	filled  []bool
	left    int

	rd   blockReader
	rbuf []byte // the block reader's buffer
	buf  []byte // a block, for sinks that cannot be viewed
}

// lazyRange is one range of the RAM chunk.
type lazyRange struct {
	gpa, pages uint64
	data       []byte   // the data bitmap
	first      uint64   // stored pages of the chunk before this range
	n          uint64   // stored pages of this range
	rank       []uint64 // stored pages of the chunk before each 64-page word
	off        int64    // stream offset of the range's page data
}

// lazyRun is a run of stored pages contiguous in guest memory and in the
// stream.
type lazyRun struct {
	gpa uint64
	off int64 // stream offset
	n   uint64
}

// BlockError is a block of page data that failed its check, or could not
// be read; nothing of it was given to the sink.
type BlockError struct {
	Index int
	// GPA and End bound the guest-physical range the block's pages lie
	// in: the first page's address and the end of the last.
	GPA, End uint64
	Err      error
}

func (e *BlockError) Error() string {
	return fmt.Sprintf("snapshot: RAM block %d (guest-physical %#x-%#x): %v", e.Index, e.GPA, e.End, e.Err)
}

func (e *BlockError) Unwrap() error { return e.Err }

// wordPages is the number of pages a rank entry covers.
const wordPages = 64

// addRange records a range of the RAM chunk during the open: its data
// bitmap, the stored pages before it, and where its page data starts.
func (l *Lazy) addRange(gpa, pages uint64, data []byte, first uint64, off int64) {
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
	l.ranges = append(l.ranges, r)
}

// setTable records the block table read at the end of the RAM chunk.
func (l *Lazy) setTable(blocks *blockSums, table []byte, dataBytes uint64) {
	l.keyed, l.key, l.nonce, l.gen = blocks.keyed, blocks.key, blocks.nonce, blocks.gen
	l.sumSize = blocks.sumSize()
	l.table = table
	l.data = dataBytes
	l.filled = make([]bool, ramBlocks(dataBytes))
	l.left = len(l.filled)
}

// OpenLazy opens the full snapshot committed as c without reading its
// page data: every check of Decode that does not need the page data is
// made (CRCs, digest and HMAC, the end record, known chunks, generation
// and digest equal to c's, the RAM chunk's bitmaps and block table
// against the stream), and the snapshot is returned with a Lazy that
// fills its blocks of page data on demand, each checked before the sink
// sees it. opts.Memory and opts.Progress are not used. An increment (a
// chain) or a snapshot whose RAM chunk is version 1 fails with
// ErrLazyUnsupported: decode it with Decode.
func (s *Store) OpenLazy(c *Commit, opts DecodeOptions) (*Lazy, *Snapshot, error) {
	if c.Incremental(s) {
		return nil, nil, fmt.Errorf("snapshot: %w: generation %d is an increment on a chain", ErrLazyUnsupported, c.Generation)
	}
	l, snap, err := openLazy(s.dev, c.Offset, c.Length, opts, s.blockSize)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case snap.Header.Generation != c.Generation:
		return nil, nil, fmt.Errorf("snapshot: %w: stream generation %d, commit record says %d", ErrCorrupt, snap.Header.Generation, c.Generation)
	case snap.Digest != c.Digest:
		return nil, nil, fmt.Errorf("snapshot: %w: stream digest differs from the commit record", ErrDigest)
	case snap.Find(TypeChain, 0) != nil:
		return nil, nil, fmt.Errorf("snapshot: %w: the stream at the start of slot %d has a chain chunk", ErrCorrupt, c.Slot)
	}
	snap.Chain = []ChainStream{streamInfo(snap, c.Offset)}
	return l, snap, nil
}

// openLazy opens the stream of length bytes at device offset off (sector
// aligned) lazily.
func openLazy(dev BlockDevice, off, length int64, opts DecodeOptions, bufSize int) (*Lazy, *Snapshot, error) {
	if opts.Registry == nil {
		opts.Registry = NewRegistry()
	}
	if opts.MaxChunkSize == 0 {
		opts.MaxChunkSize = DefaultMaxChunkSize
	}
	if opts.MaxRetained == 0 {
		opts.MaxRetained = DefaultMaxRetained
	}
	opts.Memory, opts.Progress = nil, nil
	if length < 0 {
		return nil, nil, fmt.Errorf("snapshot: negative size")
	}
	l := &Lazy{dev: dev, base: off}
	d := &decoder{
		opts: &opts,
		lazy: l,
		sr:   &streamReader{r: newBlockReader(dev, off, length, bufSize), left: length, digest: sha256.New(), hashing: true},
		snap: &Snapshot{Size: length},
		seen: make(map[string]bool),
	}
	if err := d.run(); err != nil {
		return nil, nil, err
	}
	return l, d.snap, nil
}

// Blocks returns the number of blocks of page data.
func (l *Lazy) Blocks() int { return len(l.filled) }

// Remaining returns the number of blocks not filled yet.
func (l *Lazy) Remaining() int { return l.left }

// Filled reports whether block i was filled.
func (l *Lazy) Filled(i int) bool { return i >= 0 && i < len(l.filled) && l.filled[i] }

// Locate says where the page at gpa comes from: ok false if no range of
// the RAM chunk holds it; else stored false for a zero page, or the
// block holding its contents.
func (l *Lazy) Locate(gpa uint64) (block int, stored, ok bool) {
	i := sort.Search(len(l.ranges), func(i int) bool {
		r := &l.ranges[i]
		return r.gpa+r.pages*PageSize > gpa
	})
	if i == len(l.ranges) || gpa < l.ranges[i].gpa {
		return 0, false, false
	}
	r := &l.ranges[i]
	p := (gpa - r.gpa) / PageSize
	if !bitSet(r.data, p) {
		return 0, false, true
	}
	ord := r.rank[p/wordPages]
	for b := p / wordPages * wordPages / 8; b < p/8; b++ {
		ord += uint64(bits.OnesCount8(r.data[b]))
	}
	ord += uint64(bits.OnesCount8(r.data[p/8] & (1<<(p%8) - 1)))
	return int(ord / pagesPerBlock), true, true
}

// ZeroRuns calls fn for every run of pages of the RAM chunk that are
// zero (not stored), in GPA order, and stops at its first error.
func (l *Lazy) ZeroRuns(fn func(gpa, n uint64) error) error {
	return l.ZeroRunsIn(0, ^uint64(0), fn)
}

// ZeroRunsIn is ZeroRuns for the pages in [from, to) (page aligned).
func (l *Lazy) ZeroRunsIn(from, to uint64, fn func(gpa, n uint64) error) error {
	for i := range l.ranges {
		r := &l.ranges[i]
		end := r.gpa + r.pages*PageSize
		if end <= from || r.gpa >= to {
			continue
		}
		first, last := (max(from, r.gpa)-r.gpa)/PageSize, (min(to, end)-r.gpa)/PageSize
		for p := first; p < last; {
			if bitSet(r.data, p) {
				p++
				continue
			}
			q := p + 1
			for q < last && !bitSet(r.data, q) {
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

// BlockRuns calls fn for each run of guest memory that block i fills, in
// GPA order.
func (l *Lazy) BlockRuns(i int, fn func(gpa, n uint64)) {
	for _, r := range l.blockRuns(i) {
		fn(r.gpa, r.n)
	}
}

// blockRuns returns the runs of stored pages block i holds.
func (l *Lazy) blockRuns(i int) []lazyRun {
	var runs []lazyRun
	start := uint64(i) * pagesPerBlock
	end := min(start+pagesPerBlock, l.data/PageSize)
	ri := sort.Search(len(l.ranges), func(j int) bool { return l.ranges[j].first+l.ranges[j].n > start })
	for ord := start; ord < end && ri < len(l.ranges); ri++ {
		r := &l.ranges[ri]
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
			if n := len(runs); n > 0 && runs[n-1].gpa+runs[n-1].n == gpa && runs[n-1].off+int64(runs[n-1].n) == off {
				runs[n-1].n += PageSize
			} else {
				runs = append(runs, lazyRun{gpa: gpa, off: off, n: PageSize})
			}
			ord++
			seen++
		}
	}
	return runs
}

// BlockGPA returns the guest-physical range block i's pages lie in: the
// first page's address and the end of the last.
func (l *Lazy) BlockGPA(i int) (gpa, end uint64) {
	runs := l.blockRuns(i)
	if len(runs) == 0 {
		return 0, 0
	}
	last := runs[len(runs)-1]
	return runs[0].gpa, last.gpa + last.n
}

// Fill reads block i of page data from the device, checks its XXH64 sum
// and, in a keyed snapshot opened with the key, its Poly1305 tag, and
// then gives its pages to sink (nil: only check). A sink that is a Viewer
// has the pages read straight into its memory; if the block then fails,
// that memory is cleared again and the error is a *BlockError naming the
// block and its guest-physical range: the sink gets nothing of a block
// that does not verify. A block already filled is not read again.
func (l *Lazy) Fill(i int, sink MemorySink) error {
	if i < 0 || i >= len(l.filled) {
		return fmt.Errorf("snapshot: RAM block %d of %d", i, len(l.filled))
	}
	if l.filled[i] {
		return nil
	}
	runs := l.blockRuns(i)
	if len(runs) == 0 {
		return fmt.Errorf("snapshot: RAM block %d holds no pages", i)
	}
	dst := make([][]byte, len(runs))
	inPlace := make([]bool, len(runs))
	fail := func(err error) error {
		for k, b := range dst {
			if inPlace[k] {
				clear(b)
			}
		}
		last := runs[len(runs)-1]
		return &BlockError{Index: i, GPA: runs[0].gpa, End: last.gpa + last.n, Err: err}
	}
	if l.buf == nil {
		l.buf = make([]byte, RAMBlockSize)
		l.rbuf = make([]byte, readAhead)
	}
	viewer, _ := sink.(Viewer)
	xxh := xxhash.New()
	tags := l.keyed && len(l.key) > 0
	var macWrite func([]byte) (int, error)
	var macSum func([]byte) []byte
	if tags {
		m := blockMAC(l.key, l.nonce, l.gen, uint64(i))
		macWrite, macSum = m.Write, m.Sum
	}
	var pos uint64
	next := int64(-1) // stream offset the reader is at
	for k, r := range runs {
		if r.off != next {
			seg := r.n
			for _, q := range runs[k+1:] {
				if q.off != r.off+int64(seg) {
					break
				}
				seg += q.n
			}
			if err := l.segment(r.off, int64(seg)); err != nil {
				return fail(err)
			}
		}
		var b []byte
		if viewer != nil {
			if v, ok := viewer.View(r.gpa, r.n); ok {
				b, inPlace[k] = v, true
			}
		}
		if b == nil {
			b = l.buf[pos : pos+r.n]
			pos += r.n
		}
		dst[k] = b
		if _, err := io.ReadFull(&l.rd, b); err != nil {
			return fail(fmt.Errorf("read page data at stream offset %d: %w", r.off, err))
		}
		xxh.Write(b)
		if tags {
			macWrite(b)
		}
		next = r.off + int64(r.n)
	}
	e := l.table[uint64(i)*uint64(l.sumSize) : uint64(i+1)*uint64(l.sumSize)]
	if got, want := xxh.Sum64(), binary.LittleEndian.Uint64(e); got != want {
		return fail(fmt.Errorf("%w: XXH64 %016x, the table says %016x", ErrChecksum, got, want))
	}
	if tags {
		if got := macSum(nil); subtle.ConstantTimeCompare(got, e[xxhSumSize:]) != 1 {
			return fail(fmt.Errorf("%w: wrong snapshot key, or the snapshot was forged (Poly1305 tag %x, the table says %x)", ErrAuth, got, e[xxhSumSize:]))
		}
	}
	if sink != nil {
		for k, r := range runs {
			if inPlace[k] {
				continue
			}
			if _, err := sink.WriteAt(dst[k], int64(r.gpa)); err != nil {
				return fail(fmt.Errorf("write guest memory at %#x: %w", r.gpa, err))
			}
		}
	}
	l.filled[i] = true
	l.left--
	return nil
}

// segment points the block reader at the n bytes of the stream at off.
// A device reads whole sectors: the sector holding off is read into the
// buffer alone (not the usual read-ahead), so that the large runs after
// it go from the device straight into their place.
func (l *Lazy) segment(off, n int64) error {
	at := l.base + off
	s := int64(l.dev.SectorSize())
	lo := at / s * s
	l.rd = blockReader{dev: l.dev, base: lo, left: n + at - lo, off: lo, buf: l.rbuf[:min(int64(len(l.rbuf)), s)]}
	err := l.rd.skip(at - lo)
	// The buffer grows back to its size; r and w index the same memory.
	l.rd.buf = l.rbuf
	return err
}
