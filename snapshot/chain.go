package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Incremental-snapshot chains in a store slot: docs/snapshot-format.md,
// section 5.2. A slot holds a full snapshot stream at its start, then
// increment streams, each at the next SlotAlign boundary after the one
// before; the slot's newest commit record names the newest stream. Each
// increment carries a chain chunk listing every earlier stream of its
// chain, which the store writes (Save with SaveOptions.Base) and checks
// (Store.Decode, Load).
const (
	// ChainVersion is the version of the chain chunk body.
	ChainVersion = 1
	// MaxChain is the most streams a chain holds, the full one included.
	// A save that would make a longer chain fails with ErrChainFull.
	MaxChain = 32

	chainHeaderSize = 8  // u32 count, u32 reserved
	chainEntrySize  = 56 // u64 generation, u64 offset, u64 length, digest
	digestSize      = 32
	// maxChainBody is the longest chain chunk body: the earlier streams
	// of a chain of MaxChain.
	maxChainBody = chainHeaderSize + (MaxChain-1)*chainEntrySize
	// endChunkSize is the size of the end chunk with its framing: the last
	// bytes of every stream.
	endChunkSize = ChunkHeaderSize + endBodySize + ChunkTrailerSize
	// endDigestedOffset is the offset of digested_length in the end body.
	endDigestedOffset = 8
)

// ChainLink names one earlier stream of a chain as the chain chunk lists
// it. The chunk's Value is a []ChainLink, oldest (the full snapshot) first.
type ChainLink struct {
	Generation uint64
	Offset     int64 // device offset of the stream
	Length     int64 // stream length in bytes
	Digest     [32]byte
}

// ChainStream describes one stream of a snapshot read from a store
// (Snapshot.Chain): the full snapshot, or an increment on the stream
// before it.
type ChainStream struct {
	Generation  uint64   `json:"generation"`
	Offset      int64    `json:"offset"`
	Length      int64    `json:"length"`
	Digest      [32]byte `json:"-"`
	Incremental bool     `json:"incremental"`
	// Carried is the number of pages the stream defines (every page for
	// the full one), Stored how many of them it stores (the others are
	// zero).
	Carried uint64 `json:"carried_pages"`
	Stored  uint64 `json:"stored_pages"`
}

var chainCodec = Codec{
	Type:     TypeChain,
	Current:  ChainVersion,
	Decoders: map[uint16]DecodeFunc{ChainVersion: decodeChainV1},
}

func encodeChain(links []ChainLink) []byte {
	e := NewEncoder(chainHeaderSize + len(links)*chainEntrySize)
	e.PutU32(uint32(len(links)))
	e.PutU32(0)
	for _, l := range links {
		e.PutU64(l.Generation)
		e.PutI64(l.Offset)
		e.PutI64(l.Length)
		e.PutRaw(l.Digest[:])
	}
	return e.Bytes()
}

// decodeChainV1 decodes a chain chunk body. It checks what the body alone
// can tell (1..MaxChain-1 entries in ascending generation and offset, each
// long enough to be a stream); Store.Decode checks the entries against the
// slot and the streams.
func decodeChainV1(d *Decoder) (any, error) {
	n := d.U32()
	if d.U32() != 0 {
		d.Failf("reserved field not zero")
	}
	if d.Err() == nil && (n == 0 || n >= MaxChain) {
		d.Failf("%d earlier streams (want 1..%d)", n, MaxChain-1)
	}
	if d.Err() == nil && uint64(n)*chainEntrySize != uint64(d.Remaining()) {
		d.Failf("%d entries need %d bytes, the body has %d", n, uint64(n)*chainEntrySize, d.Remaining())
	}
	if err := d.Err(); err != nil {
		return nil, err
	}
	links := make([]ChainLink, n)
	for i := range links {
		l := &links[i]
		l.Generation, l.Offset, l.Length = d.U64(), d.I64(), d.I64()
		copy(l.Digest[:], d.Raw(digestSize))
		switch {
		case l.Generation == 0:
			d.Failf("entry %d: generation 0", i)
		case l.Offset < 0 || l.Length < HeaderSize+endChunkSize:
			d.Failf("entry %d: offset %d, length %d", i, l.Offset, l.Length)
		case i > 0 && (l.Generation <= links[i-1].Generation || l.Offset <= links[i-1].Offset):
			d.Failf("entry %d: generation %d at %d after generation %d at %d", i, l.Generation, l.Offset, links[i-1].Generation, links[i-1].Offset)
		}
		if d.Err() != nil {
			break
		}
	}
	return links, d.Finish()
}

// writeChain writes the chain chunk (required) listing links. The store
// calls it after fill, before Close.
func (w *Writer) writeChain(links []ChainLink) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.manifest == nil {
		return errors.New("snapshot: write the manifest first")
	}
	body := encodeChain(links)
	if err := w.begin(TypeChain, 0, ChainVersion, Required, uint64(len(body))); err != nil {
		return err
	}
	w.emit(body)
	return w.end()
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// next is where the stream after l starts.
func (l ChainLink) next() int64 { return alignUp(l.Offset+l.Length, SlotAlign) }

// checkLinks checks that links are the earlier streams of an increment
// committed as c: the full one at the start of c's slot, each next one at
// the SlotAlign boundary after the one before, c's stream after the last,
// generations ascending, at most MaxChain streams in all.
func (s *Store) checkLinks(links []ChainLink, c *Commit) error {
	start, end := s.slotOffset(c.Slot), s.slotOffset(c.Slot)+s.slotSize
	if len(links) == 0 || len(links) >= MaxChain {
		return corruptf("chain of %d earlier streams (want 1..%d)", len(links), MaxChain-1)
	}
	at := start
	for i, l := range links {
		if l.Offset != at || l.Length <= 0 || l.Length > end-l.Offset {
			return corruptf("chain entry %d (generation %d): stream at %d+%d, want it at %d inside slot %d (%d..%d)",
				i, l.Generation, l.Offset, l.Length, at, c.Slot, start, end)
		}
		if i > 0 && l.Generation <= links[i-1].Generation {
			return corruptf("chain entry %d: generation %d after %d", i, l.Generation, links[i-1].Generation)
		}
		at = l.next()
	}
	last := links[len(links)-1]
	if c.Offset != at || c.Generation <= last.Generation {
		return corruptf("generation %d at %d does not follow the chain's last stream (generation %d at %d, next at %d)",
			c.Generation, c.Offset, last.Generation, last.Offset, at)
	}
	return nil
}

// chainLinks returns the chain chunk of snap, nil if it has none.
func chainLinks(snap *Snapshot) ([]ChainLink, error) {
	ch := snap.Find(TypeChain, 0)
	if ch == nil {
		return nil, nil
	}
	links, ok := ch.Value.([]ChainLink)
	if !ok || ch.Version != ChainVersion || !ch.Required() {
		return nil, corruptf("chain chunk version %d, flags %#x not understood", ch.Version, ch.Flags)
	}
	return links, nil
}

// decodeStream decodes the stream at off and checks that it is the one
// the commit record or chain chunk names (generation and digest).
func (s *Store) decodeStream(off, length int64, gen uint64, digest [32]byte, opts DecodeOptions) (*Snapshot, error) {
	r := newBlockReader(s.dev, off, length, s.blockSize)
	snap, err := Decode(r, length, opts)
	if err != nil {
		return nil, err
	}
	if err := checkStream(snap, gen, digest); err != nil {
		return nil, err
	}
	return snap, nil
}

// checkStream checks that a stream read is the one the commit record or
// chain chunk names: generation and digest.
func checkStream(snap *Snapshot, gen uint64, digest [32]byte) error {
	if snap.Header.Generation != gen {
		return fmt.Errorf("snapshot: %w: stream generation %d, commit record says %d", ErrCorrupt, snap.Header.Generation, gen)
	}
	if snap.Digest != digest {
		return fmt.Errorf("snapshot: %w: stream digest differs from the commit record", ErrDigest)
	}
	return nil
}

// streamInfo describes a decoded stream of a chain.
func streamInfo(snap *Snapshot, off int64) ChainStream {
	cs := ChainStream{Generation: snap.Header.Generation, Offset: off, Length: snap.Size, Digest: snap.Digest}
	if r := snap.RAM; r != nil {
		cs.Incremental = r.Incremental
		for _, x := range r.Ranges {
			cs.Carried += x.Carried
			cs.Stored += x.Data
		}
	}
	return cs
}

// decodeFull decodes a commit at the start of its slot: a full snapshot,
// with neither a chain chunk nor an incremental RAM chunk.
func (s *Store) decodeFull(c *Commit, opts DecodeOptions) (*Snapshot, error) {
	snap, err := s.decodeStream(c.Offset, c.Length, c.Generation, c.Digest, opts)
	if err != nil {
		return nil, err
	}
	if err := checkFull(snap, c); err != nil {
		return nil, err
	}
	snap.Chain = []ChainStream{streamInfo(snap, c.Offset)}
	return snap, nil
}

// checkFull checks the stream at the start of c's slot: neither a chain
// chunk nor an incremental RAM chunk.
func checkFull(snap *Snapshot, c *Commit) error {
	if snap.Find(TypeChain, 0) != nil {
		return fmt.Errorf("snapshot: %w: the stream at the start of slot %d has a chain chunk", ErrCorrupt, c.Slot)
	}
	if snap.RAM != nil && snap.RAM.Incremental {
		return fmt.Errorf("snapshot: %w: the stream at the start of slot %d has an incremental RAM chunk", ErrCorrupt, c.Slot)
	}
	return nil
}

// chainProgress adds up the progress of the streams of a chain.
type chainProgress struct {
	fn    func(read, total uint64)
	done  uint64 // bytes of the streams read completely
	total uint64
}

// stream returns the progress function of the next stream.
func (p *chainProgress) stream(length int64) func(read, total uint64) {
	if p.fn == nil {
		return nil
	}
	base := p.done
	p.done += uint64(length)
	return func(read, _ uint64) { p.fn(base+read, max(p.total, base+read)) }
}

// decodeChain decodes the increment committed as c with its whole chain,
// oldest stream first: the chain is read from the tail of the newest
// stream (readLinks), then each stream's pages go to opts.Memory over the
// older ones', the full snapshot's straight into place (a Viewer sink
// reads them from the device into their final place, no copy), and the
// newest last. A page written by several streams is written several
// times, only the increments' pages. Once the newest stream is decoded,
// its authenticated chain chunk must list the streams read (readChain).
func (s *Store) decodeChain(c *Commit, opts DecodeOptions) (*Snapshot, error) {
	links, err := s.readLinks(c)
	if err != nil {
		return nil, chainFail(c, err)
	}
	prog := &chainProgress{fn: opts.Progress, total: uint64(c.Length)}
	for _, l := range links {
		prog.total += uint64(l.Length)
	}
	return s.readChain(c, links, func(l ChainLink) (*Snapshot, error) {
		o := opts
		o.Progress = prog.stream(l.Length)
		return s.decodeStream(l.Offset, l.Length, l.Generation, l.Digest, o)
	})
}

// chainFail names the increment committed as c in err.
func chainFail(c *Commit, err error) error {
	return fmt.Errorf("snapshot: increment generation %d (slot %d, offset %d): %w", c.Generation, c.Slot, c.Offset, err)
}

// readChain reads the increment committed as c with the chain links read
// from its tail: read reads the stream a link names and checks it is
// that stream (generation and digest); it is called for each of links,
// oldest first, then for c's stream. Then every check of a chain is made
// (5.2): the newest stream's chain chunk against the slot and equal to
// links, its RAM chunk incremental on the last link, each older stream's
// own chain chunk and RAM chunk (checkLink). It returns the newest
// stream's snapshot with the merged RAM info and the chain.
func (s *Store) readChain(c *Commit, links []ChainLink, read func(ChainLink) (*Snapshot, error)) (*Snapshot, error) {
	olds := make([]*Snapshot, len(links))
	var err error
	for i, l := range links {
		if olds[i], err = read(l); err != nil {
			return nil, chainError(c, links, i, err)
		}
	}
	snap, err := read(ChainLink{Generation: c.Generation, Offset: c.Offset, Length: c.Length, Digest: c.Digest})
	if err == nil {
		err = s.checkNewest(snap, c)
	}
	if err != nil {
		return nil, chainFail(c, err)
	}
	if got, _ := chainLinks(snap); !slices.Equal(got, links) {
		return nil, chainFail(c, corruptf("its chain chunk differs from the one read before the chain"))
	}
	cov := newCover(snap.RAM)
	chain := make([]ChainStream, len(links)+1)
	chain[len(links)] = streamInfo(snap, c.Offset)
	for i := len(links) - 1; i >= 0; i-- {
		if err := checkLink(olds[i], links[:i], cov); err != nil {
			return nil, chainError(c, links, i, err)
		}
		cov.add(olds[i].RAM)
		chain[i] = streamInfo(olds[i], links[i].Offset)
		snap.Authenticated = snap.Authenticated && olds[i].Authenticated
	}
	snap.RAM = cov.merged()
	snap.Chain = chain
	return snap, nil
}

// chainError names stream i of the chain of c in err.
func chainError(c *Commit, links []ChainLink, i int, err error) error {
	what := "increment"
	if i == 0 {
		what = "full snapshot"
	}
	return fmt.Errorf("snapshot: chain of generation %d: %s generation %d (slot %d, offset %d): %w",
		c.Generation, what, links[i].Generation, c.Slot, links[i].Offset, err)
}

// checkNewest checks the newest stream of an increment: its chain chunk
// against the slot, and its RAM chunk incremental on the chain's last
// stream.
func (s *Store) checkNewest(snap *Snapshot, c *Commit) error {
	links, err := chainLinks(snap)
	if err != nil {
		return err
	}
	if links == nil {
		return corruptf("the stream is not at the start of its slot but has no chain chunk")
	}
	if err := s.checkLinks(links, c); err != nil {
		return err
	}
	return checkBase(snap.RAM, links[len(links)-1])
}

// checkBase checks that ram is an incremental RAM chunk on base.
func checkBase(ram *RAMInfo, base ChainLink) error {
	switch {
	case ram == nil:
		return corruptf("an increment without a RAM chunk")
	case !ram.Incremental:
		return corruptf("an increment whose RAM chunk is not incremental")
	case ram.BaseGeneration != base.Generation || ram.BaseDigest != base.Digest:
		return corruptf("RAM chunk based on generation %d (digest %x), the stream before it is generation %d (digest %x)",
			ram.BaseGeneration, ram.BaseDigest[:8], base.Generation, base.Digest[:8])
	}
	return nil
}

// checkLink checks an older stream of a chain: its own chain chunk lists
// exactly the streams before it (none for the full one), its RAM chunk is
// full or incremental on the stream before it, and covers the same ranges
// as the newest stream's.
func checkLink(snap *Snapshot, before []ChainLink, cov *cover) error {
	links, err := chainLinks(snap)
	if err != nil {
		return err
	}
	if len(links) != len(before) {
		return corruptf("its chain chunk lists %d earlier streams, the newer stream's lists %d before it", len(links), len(before))
	}
	for i := range links {
		if links[i] != before[i] {
			return corruptf("its chain chunk's entry %d (generation %d) differs from the newer stream's", i, links[i].Generation)
		}
	}
	if len(before) > 0 {
		if err := checkBase(snap.RAM, before[len(before)-1]); err != nil {
			return err
		}
	} else if snap.RAM == nil || snap.RAM.Incremental {
		return corruptf("the full snapshot of a chain has no full RAM chunk")
	}
	if len(snap.RAM.Ranges) != len(cov.ranges) {
		return corruptf("RAM chunk of %d ranges, the newest stream's has %d", len(snap.RAM.Ranges), len(cov.ranges))
	}
	for i, r := range snap.RAM.Ranges {
		if r.GPA != cov.ranges[i].GPA || r.Pages != cov.ranges[i].Pages {
			return corruptf("RAM range %d (%#x, %d pages) differs from the newest stream's (%#x, %d pages)",
				i, r.GPA, r.Pages, cov.ranges[i].GPA, cov.ranges[i].Pages)
		}
	}
	return nil
}

// cover tracks, per RAM range of the newest stream, the pages a newer
// stream already defined and the data bitmap of the merged result.
type cover struct {
	ranges  []RAMRange
	covered [][]byte
	data    [][]byte
}

func newCover(newest *RAMInfo) *cover {
	c := &cover{ranges: newest.Ranges}
	for _, r := range newest.Ranges {
		bl := bitmapLen(r.Pages)
		c.covered = append(c.covered, make([]byte, bl))
		c.data = append(c.data, make([]byte, bl))
	}
	c.add(newest)
	return c
}

// add records the pages an older stream (after every newer one) defines:
// its data pages that no newer stream defined are data of the result.
func (c *cover) add(r *RAMInfo) {
	for i, m := range r.maps {
		cov, data := c.covered[i], c.data[i]
		for j := range cov {
			data[j] |= m.data[j] &^ cov[j]
			if m.carried == nil {
				cov[j] = allPages
			} else {
				cov[j] |= m.carried[j]
			}
		}
	}
}

const allPages = 0xff // a bitmap byte with every page set

// merged returns the RAM info of the result: a full RAM chunk.
func (c *cover) merged() *RAMInfo {
	info := &RAMInfo{}
	for i, r := range c.ranges {
		info.Ranges = append(info.Ranges, RAMRange{GPA: r.GPA, Pages: r.Pages, Carried: r.Pages, Data: popcount(c.data[i])})
	}
	return info
}

// readLinks returns the earlier streams of the stream committed as c from
// its chain chunk, which is right before its end chunk, reading only the
// stream's tail (nil for a full snapshot). Save with TrustCommit uses it
// instead of reading the chain.
func (s *Store) readLinks(c *Commit) ([]ChainLink, error) {
	if c.Offset == s.slotOffset(c.Slot) {
		return nil, nil
	}
	if c.Length < HeaderSize+endChunkSize {
		return nil, fmt.Errorf("snapshot: %w: generation %d: a %d-byte stream has no room for an end chunk", ErrCorrupt, c.Generation, c.Length)
	}
	tail := min(c.Length, ChunkHeaderSize+maxChainBody+ChunkTrailerSize+endChunkSize)
	from, to := c.Offset+c.Length-tail, c.Offset+c.Length
	sec := int64(s.dev.SectorSize())
	buf := make([]byte, alignUp(to, sec)-from/sec*sec)
	if _, err := s.dev.ReadAt(buf, from/sec*sec); err != nil {
		return nil, fmt.Errorf("snapshot: read the chain of generation %d: %w", c.Generation, err)
	}
	b := buf[from%sec : from%sec+tail]
	e := b[len(b)-endChunkSize:]
	h, err := parseChunkHeader(e)
	body := e[ChunkHeaderSize : ChunkHeaderSize+endBodySize]
	switch {
	case err != nil || h.Type != TypeEnd || h.Length != endBodySize:
		return nil, fmt.Errorf("snapshot: %w: generation %d: no end chunk at the end of the stream", ErrCorrupt, c.Generation)
	case binary.LittleEndian.Uint32(e[ChunkHeaderSize+endBodySize:]) != crc32c(body):
		return nil, fmt.Errorf("snapshot: generation %d: end chunk: %w", c.Generation, ErrChecksum)
	case int64(binary.LittleEndian.Uint64(body[endDigestedOffset:])) != c.Length-endChunkSize:
		return nil, fmt.Errorf("snapshot: %w: generation %d: the end chunk is not at the end of the stream", ErrCorrupt, c.Generation)
	}
	for n := 1; n < MaxChain; n++ {
		bodyLen := chainHeaderSize + n*chainEntrySize
		at := len(b) - endChunkSize - ChunkTrailerSize - bodyLen - ChunkHeaderSize
		if at < 0 {
			break
		}
		h, err := parseChunkHeader(b[at:])
		if err != nil || h.Type != TypeChain || h.Length != uint64(bodyLen) || h.Instance != 0 {
			continue
		}
		cb := b[at+ChunkHeaderSize : at+ChunkHeaderSize+bodyLen]
		if binary.LittleEndian.Uint32(b[at+ChunkHeaderSize+bodyLen:]) != crc32c(cb) {
			return nil, fmt.Errorf("snapshot: generation %d: chain chunk: %w", c.Generation, ErrChecksum)
		}
		v, err := chainCodec.decode(h.Version, cb)
		if err != nil {
			return nil, fmt.Errorf("snapshot: generation %d: chain chunk: %w", c.Generation, err)
		}
		links := v.([]ChainLink)
		if err := s.checkLinks(links, c); err != nil {
			return nil, fmt.Errorf("snapshot: generation %d: %w", c.Generation, err)
		}
		return links, nil
	}
	return nil, fmt.Errorf("snapshot: %w: generation %d: no chain chunk before the end chunk", ErrCorrupt, c.Generation)
}

// asLinks returns the streams of a decoded chain as chain chunk entries.
func asLinks(chain []ChainStream) []ChainLink {
	links := make([]ChainLink, len(chain))
	for i, cs := range chain {
		links[i] = ChainLink{Generation: cs.Generation, Offset: cs.Offset, Length: cs.Length, Digest: cs.Digest}
	}
	return links
}
