package snapshot

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strings"
)

// DefaultMaxChunkSize caps the body of a chunk that is held in memory
// (everything except RAM, which is streamed).
const DefaultMaxChunkSize = 64 << 20

// DecodeOptions controls Decode.
type DecodeOptions struct {
	// Registry gives the codecs of known chunk types; nil means
	// NewRegistry() (core types only).
	Registry *Registry
	// Key is the HMAC key. A keyed snapshot without a Key, a wrong Key, or
	// an unkeyed snapshot with a Key fail with ErrAuth.
	Key []byte
	// SkipAuth lets a keyed snapshot be read without a Key (its HMAC is not
	// checked; Snapshot.Authenticated is false). For inspection tools.
	SkipAuth bool
	// Inspect keeps chunks of unknown types, required or not, instead of
	// refusing the snapshot: their bodies are checksummed and kept raw.
	// For tools that show what a snapshot holds.
	Inspect bool
	// Memory receives guest RAM pages. If nil, RAM is checked and
	// discarded. Pages are written as they are read, before the digest and
	// HMAC at the end are checked: to restore, verify first (Store.Load
	// does), then decode again with Memory.
	Memory MemorySink
	// Notice, if set, is told about chunks that are skipped.
	Notice func(msg string)
	// Progress, if set, is told the bytes of the stream read so far and
	// its size, as reading goes and once at the end (for a chain read by
	// Store.Decode: of all its streams).
	Progress func(read, total uint64)
	// MaxChunkSize caps an in-memory chunk body; 0 means
	// DefaultMaxChunkSize.
	MaxChunkSize uint64
	// MaxRetained caps the sum of the chunk bodies held in memory; 0
	// means DefaultMaxRetained.
	MaxRetained uint64
	// MaxRAM caps the guest RAM a RAM chunk may describe (its bitmaps are
	// allocated before the checksums can be checked); 0 means no cap
	// beyond the stream size. A hypervisor passes its largest guest.
	MaxRAM uint64
}

// DefaultMaxRetained is the default of DecodeOptions.MaxRetained.
const DefaultMaxRetained = 2 * DefaultMaxChunkSize

// Chunk is one chunk of a decoded snapshot.
type Chunk struct {
	Index    int        `json:"index"`
	Type     string     `json:"type"`
	Instance uint32     `json:"instance"`
	Version  uint16     `json:"version"`
	Flags    ChunkFlags `json:"flags"`
	Offset   int64      `json:"offset"` // of the chunk header in the stream
	Length   uint64     `json:"length"` // of the body
	CRC      uint32     `json:"crc32c"`
	// Known says the registry knows the type (or it is a core type).
	Known bool `json:"known"`
	// Skipped says the chunk was checked but its body was not kept.
	Skipped bool `json:"skipped"`
	// Body is the raw body (nil for RAM and skipped chunks).
	Body []byte `json:"-"`
	// Value is the decoded body upgraded to the current version, for a
	// type with decoders; for a raw codec it is the body.
	Value any `json:"-"`
}

// Required reports whether the chunk has the Required flag.
func (c *Chunk) Required() bool { return c.Flags&Required != 0 }

// Snapshot is a decoded snapshot.
type Snapshot struct {
	Header   Header
	Manifest *Manifest
	Chunks   []*Chunk // in stream order, end chunk excluded
	RAM      *RAMInfo // nil if the snapshot has no RAM chunk
	Size     int64    // stream length in bytes
	Digest   [32]byte
	// Chain lists the streams a snapshot read from a Store was built from,
	// oldest (the full snapshot) first, the newest (this one's header,
	// chunks and digest) last: one entry for a full snapshot, more for an
	// increment, whose RAM above is then the merged result, a full RAM
	// chunk. Nil from Decode of a bare stream.
	Chain []ChainStream
	// Authenticated says the HMAC was present and checked.
	Authenticated bool
}

// Find returns the chunk of type typ and instance, or nil.
func (s *Snapshot) Find(typ string, instance uint32) *Chunk {
	for _, c := range s.Chunks {
		if c.Type == typ && c.Instance == instance {
			return c
		}
	}
	return nil
}

// streamReader reads a stream of known length, hashing and checksumming
// what it reads as told.
type streamReader struct {
	r       io.Reader
	off     int64
	left    int64
	digest  hash.Hash
	mac     hash.Hash
	hashing bool
	inChunk bool
	crc     uint32
	// blocks, while set, takes the page data of a version 2 RAM chunk
	// instead of the digest, HMAC and chunk CRC.
	blocks *blockSums
}

// skipper is a reader that can pass over bytes without reading them
// (blockReader: a seek on the device).
type skipper interface {
	skip(n int64) error
}

// skip passes over n bytes of the stream without reading, hashing or
// checksumming them: the page data of a version 2 RAM chunk in a lazy
// open (lazy.go), which the digest, HMAC and chunk CRC do not cover.
func (s *streamReader) skip(n int64) error {
	if n > s.left {
		return fmt.Errorf("%w: truncated at offset %d (need %d bytes, %d left)", ErrCorrupt, s.off, n, s.left)
	}
	sk, ok := s.r.(skipper)
	if !ok {
		return errors.New("snapshot: the stream cannot be skipped")
	}
	if err := sk.skip(n); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated at offset %d", ErrCorrupt, s.off)
		}
		return fmt.Errorf("snapshot: read at offset %d: %w", s.off, err)
	}
	s.off += n
	s.left -= n
	return nil
}

func (s *streamReader) read(p []byte) error {
	if int64(len(p)) > s.left {
		return fmt.Errorf("%w: truncated at offset %d (need %d bytes, %d left)", ErrCorrupt, s.off, len(p), s.left)
	}
	if _, err := io.ReadFull(s.r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated at offset %d", ErrCorrupt, s.off)
		}
		return fmt.Errorf("snapshot: read at offset %d: %w", s.off, err)
	}
	s.off += int64(len(p))
	s.left -= int64(len(p))
	if s.blocks != nil {
		s.blocks.write(p)
		return nil
	}
	if s.hashing {
		s.digest.Write(p)
		if s.mac != nil {
			s.mac.Write(p)
		}
	}
	if s.inChunk {
		s.crc = crc32.Update(s.crc, castagnoli, p)
	}
	return nil
}

// defaults fills in the zero fields that have a default.
func (o *DecodeOptions) defaults() {
	if o.Registry == nil {
		o.Registry = NewRegistry()
	}
	if o.MaxChunkSize == 0 {
		o.MaxChunkSize = DefaultMaxChunkSize
	}
	if o.MaxRetained == 0 {
		o.MaxRetained = DefaultMaxRetained
	}
}

// Decode reads a snapshot stream of size bytes from r, checks every
// checksum, the digest and (see DecodeOptions.Key) the HMAC, decodes known
// chunks and streams RAM to opts.Memory. It returns an error, never panics,
// for any input, and allocates at most about MaxChunkSize plus one bit per
// guest page (bounded by size) beyond a fixed 2 MiB of buffers.
func Decode(r io.Reader, size int64, opts DecodeOptions) (*Snapshot, error) {
	opts.defaults()
	if size < 0 {
		return nil, fmt.Errorf("snapshot: negative size")
	}
	if opts.Progress != nil {
		r = &progressReader{r: r, total: uint64(size), fn: opts.Progress}
	}
	d := &decoder{
		opts: &opts,
		sr:   &streamReader{r: bufio.NewReaderSize(r, int(min(1<<20, size+16))), left: size, digest: sha256.New(), hashing: true},
		snap: &Snapshot{Size: size},
		seen: make(map[string]bool),
	}
	if err := d.run(); err != nil {
		return nil, err
	}
	return d.snap, nil
}

type decoder struct {
	opts *DecodeOptions
	// lazy, when set, is a lazy open (lazy.go): the RAM chunk's page data
	// is skipped, its ranges and block table are recorded in lazy.
	lazy     *lazyStream
	sr       *streamReader
	snap     *Snapshot
	seen     map[string]bool
	scratch  []byte
	retained uint64 // bytes of chunk bodies held
	ramTotal uint64 // pages described by the RAM chunk so far
}

func (d *decoder) notice(format string, args ...any) {
	if d.opts.Notice != nil {
		d.opts.Notice(fmt.Sprintf(format, args...))
	}
}

func (d *decoder) run() error {
	var hb [HeaderSize]byte
	if err := d.sr.read(hb[:]); err != nil {
		return fmt.Errorf("snapshot: header: %w", err)
	}
	h, err := parseHeader(hb[:])
	if err != nil {
		if strings.Contains(err.Error(), "checksum") {
			return fmt.Errorf("snapshot: header: %w", ErrChecksum)
		}
		return fmt.Errorf("%w (%v)", ErrCorrupt, err)
	}
	d.snap.Header = h
	keyed := h.Flags&HeaderKeyed != 0
	switch {
	case keyed && len(d.opts.Key) > 0:
		d.sr.mac = hmac.New(sha256.New, d.opts.Key)
		d.sr.mac.Write(hb[:])
	case keyed && !d.opts.SkipAuth:
		return fmt.Errorf("snapshot: %w: snapshot is keyed (HMAC) but no key is configured", ErrAuth)
	case !keyed && len(d.opts.Key) > 0:
		return fmt.Errorf("snapshot: %w: a key is configured but the snapshot carries no HMAC", ErrAuth)
	}

	for index := 0; ; index++ {
		off := d.sr.off
		var cb [ChunkHeaderSize]byte
		d.sr.hashing = false
		if err := d.sr.read(cb[:]); err != nil {
			return fmt.Errorf("snapshot: chunk header (index %d): %w", index, err)
		}
		ch, err := parseChunkHeader(cb[:])
		if err != nil {
			if strings.Contains(err.Error(), "checksum") {
				err = ErrChecksum
			} else {
				err = fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			return fmt.Errorf("snapshot: chunk header at offset %d (index %d): %w", off, index, err)
		}
		c := &Chunk{Index: index, Type: ch.Type, Instance: ch.Instance, Version: ch.Version, Flags: ch.Flags, Offset: off, Length: ch.Length}
		cerr := func(err error) error {
			return &ChunkError{Type: c.Type, Instance: c.Instance, Index: index, Err: err}
		}
		if ch.Type == TypeEnd {
			return d.finish(c, cerr)
		}
		d.sr.hashing = true
		d.sr.digest.Write(cb[:])
		if d.sr.mac != nil {
			d.sr.mac.Write(cb[:])
		}
		if ch.Length > uint64(d.sr.left) || uint64(d.sr.left)-ch.Length < ChunkTrailerSize {
			return cerr(fmt.Errorf("%w: length %d exceeds the %d bytes left", ErrCorrupt, ch.Length, d.sr.left))
		}
		key := fmt.Sprintf("%s/%d", c.Type, c.Instance)
		if d.seen[key] {
			return cerr(fmt.Errorf("%w: duplicate chunk", ErrCorrupt))
		}
		d.seen[key] = true
		if index == 0 && c.Type != TypeManifest {
			return cerr(fmt.Errorf("%w: the first chunk must be the manifest", ErrCorrupt))
		}
		d.sr.inChunk, d.sr.crc = true, 0
		if err := d.chunk(c); err != nil {
			return cerr(err)
		}
		d.snap.Chunks = append(d.snap.Chunks, c)
	}
}

// readTrailer reads the body CRC and compares it with what was read.
func (d *decoder) readTrailer(c *Chunk) error {
	d.sr.inChunk = false
	var t [ChunkTrailerSize]byte
	if err := d.sr.read(t[:]); err != nil {
		return err
	}
	c.CRC = binary.LittleEndian.Uint32(t[:])
	if c.CRC != d.sr.crc {
		return ErrChecksum
	}
	return nil
}

// skipBody reads and checksums a body without keeping it.
func (d *decoder) skipBody(n uint64) error {
	buf := d.buffer()
	for n > 0 {
		k := min(n, uint64(len(buf)))
		if err := d.sr.read(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (d *decoder) buffer() []byte {
	if d.scratch == nil {
		// Small streams get a small buffer; at least one page.
		n := min(scanBlock, (d.sr.left+PageSize-1)/PageSize*PageSize)
		d.scratch = make([]byte, max(n, PageSize))
	}
	return d.scratch
}

func (d *decoder) chunk(c *Chunk) error {
	if c.Version == 0 {
		return fmt.Errorf("%w: version 0", ErrVersion)
	}
	if c.Index != 0 && c.Type == TypeManifest {
		return fmt.Errorf("%w: second manifest", ErrCorrupt)
	}
	if c.Type == TypeRAM {
		c.Known, c.Skipped = true, true
		if c.Version > RAMVersion {
			return fmt.Errorf("%w: version %d is newer than this reader supports (%d)", ErrVersion, c.Version, RAMVersion)
		}
		if c.Flags&Required == 0 {
			return fmt.Errorf("%w: RAM chunk not marked required", ErrCorrupt)
		}
		// One RAM chunk, instance 0 (section 1.2): a second one (another
		// instance) would describe the same memory twice.
		if c.Instance != 0 || d.snap.RAM != nil {
			return fmt.Errorf("%w: a second RAM chunk (instance %d)", ErrCorrupt, c.Instance)
		}
		info, err := d.ram(c.Length, c.Version)
		if err != nil {
			return err
		}
		if err := d.readTrailer(c); err != nil {
			return err
		}
		d.snap.RAM = info
		return nil
	}
	if c.Type == TypePad && !c.Required() {
		// Alignment (section 3.4): its bytes are checked as any
		// chunk's (CRC, digest), not kept.
		c.Known, c.Skipped = true, true
		if err := d.skipBody(c.Length); err != nil {
			return err
		}
		return d.readTrailer(c)
	}
	codec := d.opts.Registry.Lookup(c.Type)
	c.Known = codec != nil
	if codec == nil && !d.opts.Inspect {
		if c.Required() {
			return fmt.Errorf("%w: type %q version %d is not known to this reader", ErrUnknownChunk, c.Type, c.Version)
		}
		c.Skipped = true
		if err := d.skipBody(c.Length); err != nil {
			return err
		}
		if err := d.readTrailer(c); err != nil {
			return err
		}
		d.notice("snapshot: skipped unknown optional chunk %q instance %d version %d (%d bytes)", c.Type, c.Instance, c.Version, c.Length)
		return nil
	}
	if c.Length > d.opts.MaxChunkSize {
		if codec == nil {
			c.Skipped = true
			if err := d.skipBody(c.Length); err != nil {
				return err
			}
			return d.readTrailer(c)
		}
		return fmt.Errorf("%w: length %d exceeds the limit %d", ErrCorrupt, c.Length, d.opts.MaxChunkSize)
	}
	if d.retained += c.Length; d.retained > d.opts.MaxRetained {
		return fmt.Errorf("%w: chunk bodies exceed %d bytes in all", ErrCorrupt, d.opts.MaxRetained)
	}
	body := make([]byte, c.Length)
	if err := d.sr.read(body); err != nil {
		return err
	}
	if err := d.readTrailer(c); err != nil {
		return err
	}
	c.Body = body
	if name, ok := strings.CutPrefix(c.Type, DevicePrefix); ok {
		if d.snap.Manifest == nil {
			return fmt.Errorf("%w: device chunk before the manifest", ErrCorrupt)
		}
		e := d.snap.Manifest.device(name, c.Instance)
		if e == nil {
			return fmt.Errorf("%w: device is not listed in the manifest", ErrCorrupt)
		}
		if e.StateVersion != c.Version || e.Required != c.Required() {
			return fmt.Errorf("%w: version %d/required %v differ from the manifest (%d/%v)", ErrCorrupt, c.Version, c.Required(), e.StateVersion, e.Required)
		}
	}
	if codec == nil {
		return nil
	}
	v, err := codec.decode(c.Version, body)
	if err != nil {
		return err
	}
	c.Value = v
	if c.Type == TypeManifest {
		m, ok := v.(*Manifest)
		if !ok {
			return fmt.Errorf("manifest codec returned %T", v)
		}
		if err := m.Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		d.snap.Manifest = m
	}
	return nil
}

// finish checks the end chunk: chunk count, length, digest and HMAC, then
// that the manifest's devices are all present and nothing follows.
func (d *decoder) finish(c *Chunk, cerr func(error) error) error {
	if c.Version != EndVersion {
		return cerr(fmt.Errorf("%w: end record version %d, want %d", ErrVersion, c.Version, EndVersion))
	}
	if c.Length != endBodySize {
		return cerr(fmt.Errorf("%w: end record length %d, want %d", ErrCorrupt, c.Length, endBodySize))
	}
	digested := c.Offset
	var digest [32]byte
	copy(digest[:], d.sr.digest.Sum(nil))
	var mac []byte
	if d.sr.mac != nil {
		mac = d.sr.mac.Sum(nil)
	}
	d.sr.inChunk, d.sr.crc = true, 0
	var body [endBodySize]byte
	if err := d.sr.read(body[:]); err != nil {
		return cerr(err)
	}
	if err := d.readTrailer(c); err != nil {
		return cerr(err)
	}
	if d.sr.left != 0 {
		return cerr(fmt.Errorf("%w: %d bytes after the end record", ErrCorrupt, d.sr.left))
	}
	dd := NewDecoder(body[:])
	count := dd.U32()
	_ = dd.U32()
	length := dd.U64()
	stored := dd.Raw(32)
	storedMAC := dd.Raw(32)
	if int(count) != c.Index || int64(length) != digested {
		return cerr(fmt.Errorf("%w: end record says %d chunks/%d bytes, stream has %d/%d", ErrCorrupt, count, length, c.Index, digested))
	}
	if !hmac.Equal(stored, digest[:]) {
		return fmt.Errorf("snapshot: %w: stored %x, computed %x", ErrDigest, stored[:8], digest[:8])
	}
	d.snap.Digest = digest
	if d.snap.Manifest == nil {
		return fmt.Errorf("snapshot: %w: no manifest", ErrCorrupt)
	}
	if mac != nil {
		if !hmac.Equal(storedMAC, mac) {
			return fmt.Errorf("snapshot: %w: HMAC mismatch (wrong key or tampered snapshot)", ErrAuth)
		}
		d.snap.Authenticated = true
	} else if d.snap.Header.Flags&HeaderKeyed == 0 && !isZero(storedMAC) {
		return cerr(fmt.Errorf("%w: HMAC present in an unkeyed snapshot", ErrCorrupt))
	}
	for _, e := range d.snap.Manifest.Devices {
		if d.snap.Find(e.ChunkType(), e.Instance) == nil {
			return fmt.Errorf("snapshot: %w: device %q instance %d is in the manifest but has no state chunk", ErrCorrupt, e.Name, e.Instance)
		}
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ram decodes a RAM chunk body of n bytes, streaming pages to the sink.
func (d *decoder) ram(n uint64, version uint16) (*RAMInfo, error) {
	left := n
	var dataBytes uint64
	take := func(k uint64) ([]byte, error) {
		if k > left {
			return nil, fmt.Errorf("%w: RAM chunk body too short (need %d bytes, %d left)", ErrCorrupt, k, left)
		}
		left -= k
		b := make([]byte, k)
		return b, d.sr.read(b)
	}
	hb, err := take(ramHeaderSize)
	if err != nil {
		return nil, err
	}
	h := NewDecoder(hb)
	pageSize := h.U32()
	flags := h.U32()
	info := &RAMInfo{BaseGeneration: h.U64()}
	copy(info.BaseDigest[:], h.Raw(32))
	nRanges := h.U32()
	reserved := h.U32()
	if pageSize != PageSize {
		return nil, fmt.Errorf("%w: page size %d, want %d", ErrCorrupt, pageSize, PageSize)
	}
	if flags&^RAMIncremental != 0 || reserved != 0 {
		return nil, fmt.Errorf("%w: unknown RAM flags %#x", ErrCorrupt, flags)
	}
	info.Incremental = flags&RAMIncremental != 0
	if !info.Incremental && (info.BaseGeneration != 0 || !isZero(info.BaseDigest[:])) {
		return nil, fmt.Errorf("%w: full RAM chunk names a base snapshot", ErrCorrupt)
	}
	var blocks *blockSums // version 2: the page data's block sums
	keyed := d.snap.Header.Flags&HeaderKeyed != 0
	if d.lazy != nil && version < RAMVersion {
		return nil, fmt.Errorf("%w: RAM chunk version %d: only a version %d chunk has block sums to check page data by",
			ErrLazyUnsupported, version, RAMVersion)
	}
	if version >= RAMVersion {
		nb, err := take(ramNonceSize)
		if err != nil {
			return nil, err
		}
		var nonce [ramNonceSize]byte
		copy(nonce[:], nb)
		if !keyed && !isZero(nonce[:]) {
			return nil, fmt.Errorf("%w: RAM block nonce in an unkeyed snapshot", ErrCorrupt)
		}
		var key []byte
		if keyed {
			key = d.opts.Key // none with SkipAuth: the tags go unchecked
		}
		blocks = newBlockSums(keyed, key, nonce, d.snap.Header.Generation)
	}
	if uint64(nRanges)*ramRangeHdrSize > left {
		return nil, fmt.Errorf("%w: %d RAM ranges cannot fit in %d bytes", ErrCorrupt, nRanges, left)
	}
	var end uint64
	for i := 0; i < int(nRanges); i++ {
		rb, err := take(ramRangeHdrSize)
		if err != nil {
			return nil, err
		}
		rd := NewDecoder(rb)
		gpa, pages, rflags, rres, nData := rd.U64(), rd.U64(), rd.U32(), rd.U32(), rd.U64()
		if gpa%PageSize != 0 || pages == 0 || pages > (^uint64(0)-gpa)/PageSize {
			return nil, fmt.Errorf("%w: RAM range %d (%#x, %d pages) invalid", ErrCorrupt, i, gpa, pages)
		}
		if i > 0 && gpa < end {
			return nil, fmt.Errorf("%w: RAM range %d (%#x) overlaps or is out of order", ErrCorrupt, i, gpa)
		}
		end = gpa + pages*PageSize
		if d.ramTotal += pages; d.opts.MaxRAM != 0 && d.ramTotal > d.opts.MaxRAM/PageSize {
			return nil, fmt.Errorf("%w: RAM chunk describes more than the %d MiB this reader accepts", ErrCorrupt, d.opts.MaxRAM>>20)
		}
		if d.snap.Manifest == nil || !d.snap.Manifest.ramRegion(gpa, pages*PageSize) {
			return nil, fmt.Errorf("%w: RAM range %d (%#x+%#x) is not inside a RAM region of the manifest", ErrCorrupt, i, gpa, pages*PageSize)
		}
		if rflags&^rangeCarriedBitmap != 0 || rres != 0 || (rflags != 0 && !info.Incremental) {
			return nil, fmt.Errorf("%w: RAM range %d: bad flags %#x", ErrCorrupt, i, rflags)
		}
		bl := bitmapLen(pages)
		var carried []byte
		if rflags&rangeCarriedBitmap != 0 {
			if carried, err = take(bl); err != nil {
				return nil, err
			}
		}
		data, err := take(bl)
		if err != nil {
			return nil, err
		}
		if pages%8 != 0 && (data[bl-1]>>(pages%8) != 0 || (carried != nil && carried[bl-1]>>(pages%8) != 0)) {
			return nil, fmt.Errorf("%w: RAM range %d: bitmap bits past the range", ErrCorrupt, i)
		}
		nCarried := pages
		if carried != nil {
			for j := range data {
				if data[j]&^carried[j] != 0 {
					return nil, fmt.Errorf("%w: RAM range %d: data page not carried", ErrCorrupt, i)
				}
			}
			nCarried = popcount(carried)
		}
		if popcount(data) != nData {
			return nil, fmt.Errorf("%w: RAM range %d: data page count %d does not match its bitmap", ErrCorrupt, i, nData)
		}
		if nData > left/PageSize {
			return nil, fmt.Errorf("%w: RAM range %d: %d data pages exceed the %d bytes left", ErrCorrupt, i, nData, left)
		}
		left -= nData * PageSize
		if d.lazy != nil {
			d.lazy.addRange(gpa, pages, data, dataBytes/PageSize, d.sr.off)
			dataBytes += nData * PageSize
			if err := d.sr.skip(int64(nData * PageSize)); err != nil {
				return nil, fmt.Errorf("RAM range %d: %w", i, err)
			}
			info.Ranges = append(info.Ranges, RAMRange{GPA: gpa, Pages: pages, Carried: nCarried, Data: nData})
			info.maps = append(info.maps, rangeMaps{carried: carried, data: data})
			continue
		}
		dataBytes += nData * PageSize
		d.sr.blocks = blocks
		err = d.ramPages(gpa, pages, carried, data)
		d.sr.blocks = nil
		if err != nil {
			return nil, fmt.Errorf("RAM range %d: %w", i, err)
		}
		info.Ranges = append(info.Ranges, RAMRange{GPA: gpa, Pages: pages, Carried: nCarried, Data: nData})
		info.maps = append(info.maps, rangeMaps{carried: carried, data: data})
	}
	if blocks != nil {
		if err := d.ramBlockTable(blocks, keyed, dataBytes, take); err != nil {
			return nil, err
		}
	}
	if left != 0 {
		return nil, fmt.Errorf("%w: %d unused bytes at the end of the RAM chunk", ErrCorrupt, left)
	}
	return info, nil
}

// ramBlockTable reads the block sum table of a version 2 RAM chunk and
// compares it with the sums of the page data read (tags not checked when
// the key is not known: SkipAuth).
func (d *decoder) ramBlockTable(blocks *blockSums, keyed bool, dataBytes uint64, take func(uint64) ([]byte, error)) error {
	want := ramBlocks(dataBytes)
	hb, err := take(ramTableHeader)
	if err != nil {
		return err
	}
	h := NewDecoder(hb)
	size, flags, count := h.U32(), h.U32(), h.U64()
	wantFlags := uint32(0)
	if keyed {
		wantFlags = ramTableKeyed
	}
	if size != RAMBlockSize || flags != wantFlags || count != want {
		return fmt.Errorf("%w: RAM block table: block size %d, flags %#x, %d blocks; want %d, %#x, %d blocks for %d bytes of page data",
			ErrCorrupt, size, flags, count, RAMBlockSize, wantFlags, want, dataBytes)
	}
	sz := uint64(blocks.sumSize())
	tb, err := take(sz * count)
	if err != nil {
		return err
	}
	if d.lazy != nil {
		// Each block is checked when it is filled (Lazy.Fill).
		d.lazy.setTable(blocks, tb, dataBytes)
		return nil
	}
	sums := blocks.finish()
	// Damage first (XXH64, checked with or without the key), then
	// authenticity (the Poly1305 tag, where the key is known).
	for i := uint64(0); i < count; i++ {
		e := tb[i*sz : (i+1)*sz]
		if got, want := binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint64(sums[i*sz:]); got != want {
			return fmt.Errorf("%w: RAM block %d (page data bytes %d to %d of the chunk): XXH64 %016x, the table says %016x",
				ErrChecksum, i, i*RAMBlockSize, min((i+1)*RAMBlockSize, dataBytes), want, got)
		}
	}
	if !blocks.tags() {
		return nil
	}
	for i := uint64(0); i < count; i++ {
		got, want := tb[i*sz+xxhSumSize:(i+1)*sz], sums[i*sz+xxhSumSize:(i+1)*sz]
		if subtle.ConstantTimeCompare(got, want) != 1 {
			return fmt.Errorf("%w: wrong snapshot key, or the snapshot was forged (RAM block %d, page data bytes %d to %d of the chunk: Poly1305 tag %x, the table says %x)",
				ErrAuth, i, i*RAMBlockSize, min((i+1)*RAMBlockSize, dataBytes), want, got)
		}
	}
	return nil
}

var zeroBlock [scanBlock]byte

// ramPages reads the data pages of one range and hands runs of pages to the
// sink: data pages as read, carried zero pages as zeros.
func (d *decoder) ramPages(gpa, pages uint64, carried, data []byte) error {
	buf := d.buffer()
	maxRun := uint64(len(buf)) / PageSize
	sink := d.opts.Memory
	for p := uint64(0); p < pages; {
		isData := bitSet(data, p)
		if !isData && carried != nil && !bitSet(carried, p) {
			p++
			continue
		}
		run := uint64(1)
		for p+run < pages && run < maxRun && bitSet(data, p+run) == isData &&
			(isData || carried == nil || bitSet(carried, p+run)) {
			run++
		}
		at := gpa + p*PageSize
		n := run * PageSize
		if isData {
			// Straight into the sink's memory where it can be viewed;
			// pages are written before the end of the stream is checked
			// either way (see DecodeOptions.Memory).
			if v, ok := sink.(Viewer); ok {
				if b, ok := v.View(at, n); ok {
					if err := d.sr.read(b); err != nil {
						return err
					}
					p += run
					continue
				}
			}
			if err := d.sr.read(buf[:n]); err != nil {
				return err
			}
			if sink != nil {
				if _, err := sink.WriteAt(buf[:n], int64(at)); err != nil {
					return fmt.Errorf("write guest memory at %#x: %w", at, err)
				}
			}
		} else if sink != nil {
			var err error
			if z, ok := sink.(Zeroer); ok {
				err = z.ZeroAt(at, n)
			} else {
				_, err = sink.WriteAt(zeroBlock[:n], int64(at))
			}
			if err != nil {
				return fmt.Errorf("clear guest memory at %#x: %w", at, err)
			}
		}
		p += run
	}
	return nil
}

// progressReader tells fn how much of a stream of total bytes was read.
type progressReader struct {
	r     io.Reader
	read  uint64
	total uint64
	fn    func(read, total uint64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += uint64(n)
	p.fn(p.read, p.total)
	return n, err
}
