package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Store layout constants. See docs/snapshot-format.md, "Store".
const (
	// RecordMagic starts a commit record.
	RecordMagic = "TVSNPCMT"
	// RecordVersion is the commit record version.
	RecordVersion = 1
	// RecordSize is the size of a commit record; it is stored at the start
	// of its own 4 KiB area (the rest of the area is zero).
	RecordSize = 128
	// RecordArea is the space reserved for the commit records of each
	// slot: two positions, at 0 and RecordAltOffset.
	RecordArea = 4096
	// RecordPositions is the number of commit record positions per slot.
	RecordPositions = 2
	// RecordAltOffset is the offset of a slot's second commit record
	// position in its area. An increment is committed at the position
	// that does not name its base, so a torn record write never loses the
	// base's record; that needs sectors of at most this size.
	RecordAltOffset = RecordArea / 2
	// DataStart is the device offset of slot 0.
	DataStart = 2 * RecordArea
	// SlotAlign is the alignment of slot offsets and sizes.
	SlotAlign = 4096
	// MinSlotSize is the smallest slot a store accepts.
	MinSlotSize = 64 << 10
	// DefaultBlockSize is the size of device requests made by Save and Load.
	DefaultBlockSize = 1 << 20
)

// Commit is a commit record: it makes a snapshot stream in one slot
// current, a full snapshot at the slot's start or an increment on the
// chain before it (docs/snapshot-format.md, 5).
type Commit struct {
	Slot       int      `json:"slot"`
	Generation uint64   `json:"generation"`
	Offset     int64    `json:"offset"` // device offset of the snapshot stream
	Length     int64    `json:"length"` // stream length in bytes
	Digest     [32]byte `json:"-"`      // the stream's SHA-256 digest (end record)
	// Position is where in the slot's record area the record is (0 or
	// 1); it is not part of the record.
	Position int `json:"position"`
}

// Incremental reports whether c names an increment (a stream after the
// start of its slot).
func (c *Commit) Incremental(s *Store) bool { return c.Offset != s.slotOffset(c.Slot) }

// Room is the space in bytes an increment on c may take: what is left of
// c's slot after its stream (0 if c lies outside the store's slots).
func (s *Store) Room(c *Commit) int64 {
	if c.Slot < 0 || c.Slot > 1 {
		return 0
	}
	next := (c.Offset + c.Length + SlotAlign - 1) / SlotAlign * SlotAlign
	return max(0, s.slotOffset(c.Slot)+s.slotSize-next)
}

// sameStream reports whether a and b name the same stream.
func sameStream(a, b *Commit) bool {
	return a.Slot == b.Slot && a.Generation == b.Generation && a.Offset == b.Offset && a.Length == b.Length && a.Digest == b.Digest
}

func (c *Commit) marshal() []byte {
	b := make([]byte, RecordSize)
	copy(b[0:8], RecordMagic)
	binary.LittleEndian.PutUint16(b[8:], RecordVersion)
	binary.LittleEndian.PutUint16(b[10:], uint16(c.Slot))
	binary.LittleEndian.PutUint64(b[16:], c.Generation)
	binary.LittleEndian.PutUint64(b[24:], uint64(c.Offset))
	binary.LittleEndian.PutUint64(b[32:], uint64(c.Length))
	copy(b[40:72], c.Digest[:])
	binary.LittleEndian.PutUint32(b[124:], crc32c(b[:124]))
	return b
}

// StoreOptions configures a Store.
type StoreOptions struct {
	// BlockSize is the size of device reads and writes; a multiple of the
	// sector size. 0 means DefaultBlockSize.
	BlockSize int
	// Clock, if set, is read at the phases of each save (any monotonic
	// tick, e.g. the TSC), for SaveProfile.
	Clock func() uint64
}

// SaveProfile is how a store's last save went: the times of its phases,
// in Clock ticks (all zero without a clock), and how its page data
// reached the device.
type SaveProfile struct {
	// Prepare: from the call to the RAM chunk (the commit records read,
	// the chunks before RAM written).
	Prepare uint64
	Records uint64 // of Prepare: the commit records read
	Scan    uint64 // the zero-page scan of RAM
	Data    uint64 // page data summed, copied and written (device waits inside)
	Drain   uint64 // from the end of the page data to the last write complete
	Flush   uint64 // the data flush
	Commit  uint64 // the commit record written and flushed
	// InPlace bytes of page data were written from guest memory in place
	// (VectorWriter); Copied bytes were copied into the store's buffer
	// because the device could not take them in place.
	InPlace, Copied uint64
}

// Store keeps snapshots on a block device: two slots, each with two
// commit record positions. A full save writes the new snapshot into the
// slot that does not hold the newest valid snapshot, flushes, then writes
// and flushes that slot's commit record. An incremental save (SaveOptions
// .Base) appends an increment to the newest snapshot's chain in its slot,
// after the chain's last byte, and commits it at the slot's other record
// position. Load returns the newest snapshot whose commit record and data
// (its whole chain) are fully valid. A Store is not safe for concurrent
// use.
type Store struct {
	dev       BlockDevice
	blockSize int
	slotSize  int64
	clock     func() uint64
	last      SaveProfile
	started   uint64 // clock at the start of the save in progress
	records   uint64 // clock ticks the save in progress took to read the commit records
	// bufs are the save's write buffers and its scratch buffer, kept
	// from one save to the next: allocating 3 MiB per save cost 35 ms
	// under QEMU TCG (fresh heap, a collection).
	bufs [3][]byte
}

// Reserve allocates the buffers a save uses now, so that the first save
// does not pay for them (tens of milliseconds under QEMU TCG).
func (s *Store) Reserve() { s.buffers() }

// buffers returns the save buffers, allocated on the first save.
func (s *Store) buffers() (write [2][]byte, scratch []byte) {
	if s.bufs[0] == nil {
		s.bufs = [3][]byte{make([]byte, s.blockSize), make([]byte, s.blockSize), make([]byte, scanBlock)}
	}
	return [2][]byte{s.bufs[0], s.bufs[1]}, s.bufs[2]
}

// LastSaveProfile returns the phases of the last save (StoreOptions.Clock).
func (s *Store) LastSaveProfile() SaveProfile { return s.last }

// tick reads the clock (0 without one).
func (s *Store) tick() uint64 {
	if s.clock == nil {
		return 0
	}
	return s.clock()
}

// Open returns a Store on dev. It only checks the geometry; records are read
// by each Load and Save.
func Open(dev BlockDevice, opts StoreOptions) (*Store, error) {
	ss := dev.SectorSize()
	if ss < 512 || ss > RecordArea || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("snapshot: store: sector size %d not a power of two in 512..%d", ss, RecordArea)
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if opts.BlockSize < ss || opts.BlockSize%ss != 0 {
		return nil, fmt.Errorf("snapshot: store: block size %d not a multiple of the sector size %d", opts.BlockSize, ss)
	}
	size := dev.Size()
	slot := (size - DataStart) / 2 / SlotAlign * SlotAlign
	if size < DataStart || slot < MinSlotSize {
		return nil, fmt.Errorf("snapshot: store: device of %d bytes too small (need %d)", size, DataStart+2*MinSlotSize)
	}
	return &Store{dev: dev, blockSize: opts.BlockSize, slotSize: slot, clock: opts.Clock}, nil
}

// SlotSize returns the capacity of each slot in bytes.
func (s *Store) SlotSize() int64 { return s.slotSize }

// ChainsSupported reports whether the store can hold increments: the
// second commit record position of each slot needs sectors of at most
// RecordAltOffset bytes. Without it, incremental saves fail with
// ErrChainFull.
func (s *Store) ChainsSupported() bool { return s.dev.SectorSize() <= RecordAltOffset }

func (s *Store) slotOffset(i int) int64 { return DataStart + int64(i)*s.slotSize }

// RecordStatus is the state of one slot's commit records as read from the
// device.
type RecordStatus struct {
	Slot  int
	Blank bool // the records are all zero: never written
	// Commit is the slot's newest valid record: its newest stream.
	Commit *Commit
	// Previous is the slot's other valid record, older: the stream before
	// Commit's in its chain (a fallback), or nil.
	Previous *Commit
	// Err says why the slot has no valid record (not blank, no Commit).
	Err error
	// OtherErr says why a record position of a slot that has a Commit is
	// invalid (typically torn by an interrupted increment save); the
	// slot's Commit is not affected.
	OtherErr error

	used [RecordPositions]bool // the position is not all zero
}

// recordAt is the device offset of a slot's record position.
func recordAt(slot, pos int) int64 { return int64(slot)*RecordArea + int64(pos)*RecordAltOffset }

// Records reads and checks the commit records of both slots.
func (s *Store) Records() ([2]RecordStatus, error) {
	var st [2]RecordStatus
	buf := make([]byte, DataStart)
	if _, err := s.dev.ReadAt(buf, 0); err != nil {
		return st, fmt.Errorf("snapshot: store: read commit records: %w", err)
	}
	for i := range st {
		r := &st[i]
		r.Slot = i
		var valid []*Commit
		var errs []error
		for pos := range RecordPositions {
			at := recordAt(i, pos)
			area := buf[at : at+RecordSize]
			if isZero(area) {
				continue
			}
			r.used[pos] = true
			c, err := s.parseRecord(i, area)
			if err != nil {
				name := fmt.Sprint(i)
				if pos > 0 {
					name += " (second position)"
				}
				errs = append(errs, fmt.Errorf("commit record %s: %w", name, err))
				continue
			}
			c.Position = pos
			valid = append(valid, c)
		}
		if len(valid) == RecordPositions && valid[1].Generation > valid[0].Generation {
			valid[0], valid[1] = valid[1], valid[0]
		}
		if len(valid) == RecordPositions && valid[1].Generation == valid[0].Generation {
			errs = append(errs, fmt.Errorf("commit record %d (second position): %w: same generation %d as the first", i, ErrCorrupt, valid[1].Generation))
			valid = valid[:1]
		}
		switch {
		case len(valid) > 0:
			r.Commit = valid[0]
			if len(valid) > 1 {
				r.Previous = valid[1]
			}
			if len(errs) > 0 {
				r.OtherErr = errs[0]
			}
		case len(errs) > 0:
			r.Err = errs[0]
			if len(errs) > 1 {
				r.OtherErr = errs[1]
			}
		default:
			r.Blank = true
		}
	}
	return st, nil
}

func (s *Store) parseRecord(slot int, b []byte) (*Commit, error) {
	if string(b[0:8]) != RecordMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	if binary.LittleEndian.Uint32(b[124:]) != crc32c(b[:124]) {
		return nil, ErrChecksum
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != RecordVersion {
		return nil, fmt.Errorf("%w: record version %d not supported", ErrVersion, v)
	}
	c := &Commit{
		Slot:       int(binary.LittleEndian.Uint16(b[10:])),
		Generation: binary.LittleEndian.Uint64(b[16:]),
		Offset:     int64(binary.LittleEndian.Uint64(b[24:])),
		Length:     int64(binary.LittleEndian.Uint64(b[32:])),
	}
	copy(c.Digest[:], b[40:72])
	if binary.LittleEndian.Uint32(b[12:]) != 0 || !isZero(b[72:124]) {
		return nil, fmt.Errorf("%w: reserved bytes not zero", ErrCorrupt)
	}
	start, end := s.slotOffset(slot), s.slotOffset(slot)+s.slotSize
	if c.Slot != slot || c.Offset < start || c.Offset >= end || (c.Offset-start)%SlotAlign != 0 {
		return nil, fmt.Errorf("%w: record names slot %d at offset %d, expected slot %d at %d, or a later multiple of %d inside it (device resized?)",
			ErrCorrupt, c.Slot, c.Offset, slot, start, SlotAlign)
	}
	if c.Length < HeaderSize || c.Length > end-c.Offset || c.Generation == 0 {
		return nil, fmt.Errorf("%w: record length %d or generation %d invalid", ErrCorrupt, c.Length, c.Generation)
	}
	return c, nil
}

// Decode decodes the snapshot of commit c (from Records) and checks that it
// is the snapshot the record committed (generation and digest). For an
// increment it decodes and checks the whole chain, newest stream first,
// and gives opts.Memory every page once, with its final contents: the
// result reads as a full snapshot (Snapshot.RAM is a full RAM chunk;
// Snapshot.Chain lists the streams). An error names the stream that
// failed.
func (s *Store) Decode(c *Commit, opts DecodeOptions) (*Snapshot, error) {
	if c.Incremental(s) {
		return s.decodeChain(c, opts)
	}
	return s.decodeFull(c, opts)
}

// candidates returns the valid commit records, newest first.
func candidates(st [2]RecordStatus) []*Commit {
	var cs []*Commit
	for _, r := range st {
		for _, c := range []*Commit{r.Commit, r.Previous} {
			if c != nil {
				cs = append(cs, c)
			}
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Generation > cs[j].Generation })
	return cs
}

// Load returns the newest fully valid snapshot and its commit record. It
// first verifies a candidate completely (checksums, digest, HMAC, known
// chunks) without touching opts.Memory, and only then decodes it again
// into opts.Memory, so guest memory never receives pages of a snapshot that
// turns out invalid. If the newest snapshot is invalid it falls back to the
// other slot. With no valid snapshot it returns an error wrapping
// ErrNoSnapshot and the reasons.
func (s *Store) Load(opts DecodeOptions) (*Snapshot, *Commit, error) {
	st, err := s.Records()
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, r := range st {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
		if r.OtherErr != nil {
			errs = append(errs, r.OtherErr)
		}
	}
	verify := opts
	verify.Memory = nil
	for _, c := range candidates(st) {
		snap, err := s.Decode(c, verify)
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %d generation %d: %w", c.Slot, c.Generation, err))
			continue
		}
		if opts.Memory != nil {
			if snap, err = s.Decode(c, opts); err != nil {
				return nil, nil, fmt.Errorf("slot %d generation %d: changed between verification and restore: %w", c.Slot, c.Generation, err)
			}
		}
		return snap, c, nil
	}
	if len(errs) == 0 {
		return nil, nil, fmt.Errorf("snapshot: %w: the store is empty", ErrNoSnapshot)
	}
	return nil, nil, fmt.Errorf("snapshot: %w: %w", ErrNoSnapshot, errors.Join(errs...))
}

// SaveOptions controls Store.Save.
type SaveOptions struct {
	// Header supplies the VM identity, name and creation time; the store
	// sets Generation and Flags.
	Header Header
	// Key, if not empty, makes the snapshot keyed (HMAC-SHA256).
	Key []byte
	// TrustCommit skips reading the newest snapshot back before the save:
	// its valid commit record alone decides which slot to keep. That
	// saves a full read of the previous snapshot (its whole chain), at a
	// cost: if that snapshot was damaged on the medium since it was
	// committed, the save overwrites the older slot anyway (and a crash
	// during it leaves no loadable snapshot), or appends to a damaged
	// chain.
	TrustCommit bool
	// Base, if set, makes the save incremental: the new stream is appended
	// to Base's chain in Base's slot, after its last byte, and fill must
	// write an incremental RAM chunk on Base (RAMOptions.Carried,
	// BaseGeneration = Base.Generation, BaseDigest = Base.Digest). Base
	// must be the store's newest valid snapshot (ErrStaleBase), and the
	// increment must fit in the rest of the slot and keep the chain at
	// most MaxChain streams long (ErrChainFull). After any error the
	// committed snapshots are as they were: save a full snapshot instead.
	Base *Commit
}

// Save writes a new snapshot: fill writes the chunks (manifest first) to the
// Writer; Save writes the end record, flushes, and commits. The new
// generation is one more than the highest generation of any valid commit
// record. The newest valid snapshot is never overwritten (Save reads and
// checks it first, its whole chain), so a crash at any point leaves either
// it or the new snapshot loadable. Without opts.Base the new snapshot is a
// full one in the other slot; with it, an increment on Base (see
// SaveOptions.Base).
func (s *Store) Save(opts SaveOptions, fill func(w *Writer) error) (*Commit, error) {
	s.started = s.tick()
	st, err := s.Records()
	if err != nil {
		return nil, err
	}
	records := s.tick() - s.started
	var maxGen uint64
	for _, c := range candidates(st) {
		maxGen = max(maxGen, c.Generation)
	}
	// Find the newest valid snapshot, which must survive this save: check
	// framing and digest of its whole chain (no key or registry needed).
	// This reads that snapshot once; it is not cached, so corruption
	// since the last save is noticed and the older good snapshot is kept
	// instead.
	var current *Commit
	var chain []ChainStream // current's streams, when read
	for _, c := range candidates(st) {
		if opts.TrustCommit {
			current = c
			break
		}
		if snap, err := s.Decode(c, DecodeOptions{Inspect: true, SkipAuth: true}); err == nil {
			current, chain = c, snap.Chain
			break
		}
	}
	h := opts.Header
	h.Generation = maxGen + 1
	s.records = records
	if opts.Base != nil {
		return s.saveIncrement(opts, h, current, chain, fill)
	}
	target := 0
	if current != nil && current.Slot == 0 {
		target = 1
	}
	// The target slot's other record positions name streams of the chain
	// being overwritten: they are zeroed with the data. (With sectors
	// larger than RecordAltOffset the record's sector covers them.)
	var zero []int64
	if s.ChainsSupported() {
		for pos := 1; pos < RecordPositions; pos++ {
			if st[target].used[pos] {
				zero = append(zero, recordAt(target, pos))
			}
		}
	}
	return s.write(opts, h, nil, s.slotOffset(target), &Commit{Slot: target, Position: 0}, zero, fill)
}

// saveIncrement appends an increment on opts.Base to its chain.
func (s *Store) saveIncrement(opts SaveOptions, h Header, current *Commit, chain []ChainStream, fill func(w *Writer) error) (*Commit, error) {
	base := opts.Base
	if current == nil || !sameStream(current, base) {
		newest := "none"
		if current != nil {
			newest = fmt.Sprintf("generation %d in slot %d", current.Generation, current.Slot)
		}
		return nil, fmt.Errorf("snapshot: %w: base generation %d in slot %d, newest valid snapshot: %s", ErrStaleBase, base.Generation, base.Slot, newest)
	}
	if !s.ChainsSupported() {
		return nil, fmt.Errorf("snapshot: %w: %d-byte sectors leave no room for a second commit record per slot: this store keeps full snapshots only",
			ErrChainFull, s.dev.SectorSize())
	}
	var links []ChainLink
	if chain != nil {
		links = asLinks(chain[:len(chain)-1])
	} else {
		var err error
		if links, err = s.readLinks(current); err != nil {
			return nil, err
		}
	}
	links = append(links, ChainLink{Generation: current.Generation, Offset: current.Offset, Length: current.Length, Digest: current.Digest})
	if len(links)+1 > MaxChain {
		return nil, fmt.Errorf("snapshot: %w: the chain of generation %d already has %d streams (at most %d)", ErrChainFull, current.Generation, len(links), MaxChain)
	}
	off := links[len(links)-1].next()
	if off+HeaderSize+endChunkSize > s.slotOffset(current.Slot)+s.slotSize {
		return nil, fmt.Errorf("snapshot: %w: slot %d is full after generation %d", ErrChainFull, current.Slot, current.Generation)
	}
	c := &Commit{Slot: current.Slot, Position: RecordPositions - 1 - current.Position}
	return s.write(opts, h, links, off, c, nil, fill)
}

// write writes a stream at off up to the end of c's slot (an increment
// with the chain chunk listing links), zeroes the record positions at
// zero, flushes, then commits the stream in record position c.Position
// of slot c.Slot and flushes again.
func (s *Store) write(opts SaveOptions, h Header, links []ChainLink, off int64, c *Commit, zero []int64, fill func(w *Writer) error) (*Commit, error) {
	limit := s.slotOffset(c.Slot) + s.slotSize - off
	bufs, scratch := s.buffers()
	bw := newBlockWriter(s.dev, off, limit, bufs)
	done := false
	defer func() {
		if !done {
			bw.abandon()
		}
	}()
	full := func(err error) error {
		if links != nil && errors.Is(err, errSlotFull) {
			return fmt.Errorf("snapshot: %w: the increment does not fit in the %d bytes left in slot %d: %w", ErrChainFull, limit, c.Slot, err)
		}
		return err
	}
	w, err := NewWriter(bw, h, opts.Key)
	if err != nil {
		return nil, full(err)
	}
	s.last = SaveProfile{Records: s.records}
	w.clock, w.times, w.started = s.tick, &s.last, s.started
	w.scratch = scratch
	if err := fill(w); err != nil {
		return nil, full(err)
	}
	if err := checkRAMBase(w, opts.Base); err != nil {
		return nil, err
	}
	if links != nil {
		if err := w.writeChain(links); err != nil {
			return nil, full(err)
		}
	}
	t := s.tick()
	sum, err := w.Close()
	if err != nil {
		return nil, full(err)
	}
	err = bw.finish()
	done = err == nil // else abandoned: the last write may be in flight
	s.last.InPlace, s.last.Copied = uint64(bw.inPlace), uint64(bw.copied)
	if err != nil {
		return nil, full(fmt.Errorf("snapshot: %w", err))
	}
	s.last.Drain, t = s.tick()-t, s.tick()
	sec := make([]byte, s.dev.SectorSize())
	for _, at := range zero {
		if _, err := s.dev.WriteAt(sec, at); err != nil {
			return nil, fmt.Errorf("snapshot: clear commit record: %w", err)
		}
	}
	if err := s.dev.Flush(); err != nil {
		return nil, fmt.Errorf("snapshot: flush data: %w", err)
	}
	s.last.Flush, t = s.tick()-t, s.tick()
	c.Generation, c.Offset, c.Length, c.Digest = h.Generation, off, sum.Length, sum.Digest
	copy(sec, c.marshal())
	if _, err := s.dev.WriteAt(sec, recordAt(c.Slot, c.Position)); err != nil {
		return nil, fmt.Errorf("snapshot: write commit record: %w", err)
	}
	if err := s.dev.Flush(); err != nil {
		return nil, fmt.Errorf("snapshot: flush commit record: %w", err)
	}
	s.last.Commit = s.tick() - t
	return c, nil
}

// checkRAMBase checks the RAM chunk fill wrote: incremental on base for an
// increment, full (or none) for a full snapshot.
func checkRAMBase(w *Writer, base *Commit) error {
	r := &w.ramBase
	switch {
	case base == nil && w.ram && r.Incremental:
		return errors.New("snapshot: an incremental RAM chunk in a full save (set SaveOptions.Base)")
	case base == nil:
		return nil
	case !w.ram || !r.Incremental:
		return errors.New("snapshot: an increment needs an incremental RAM chunk (RAMOptions.Carried)")
	case r.BaseGeneration != base.Generation || r.BaseDigest != base.Digest:
		return fmt.Errorf("snapshot: the increment's RAM chunk names base generation %d, SaveOptions.Base is generation %d (or digests differ)",
			r.BaseGeneration, base.Generation)
	}
	return nil
}

// Device returns the block device the store is on.
func (s *Store) Device() BlockDevice { return s.dev }

// SlotView returns a read-only view of the store in which only slot's
// commit records are visible (the other slot's read as blank), so that a
// reader of the newest snapshot (kernel.Restore) takes that slot's: a
// restore of a chosen generation.
func (s *Store) SlotView(slot int) (*Store, error) {
	if slot != 0 && slot != 1 {
		return nil, fmt.Errorf("snapshot: slot %d (want 0 or 1)", slot)
	}
	return s.view(recordMask{s.dev, []span{{int64(1-slot) * RecordArea, RecordArea}}})
}

// CommitView returns a read-only view of the store in which c's is the
// only commit record (every other record position reads as blank): a
// restore of c, also when c is the older record of its slot (a snapshot
// inside a chain, with the streams before it).
func (s *Store) CommitView(c *Commit) (*Store, error) {
	if c.Slot != 0 && c.Slot != 1 || c.Position < 0 || c.Position >= RecordPositions {
		return nil, fmt.Errorf("snapshot: record slot %d position %d does not exist", c.Slot, c.Position)
	}
	hide := []span{{int64(1-c.Slot) * RecordArea, RecordArea}}
	for pos := 0; pos < RecordPositions; pos++ {
		if pos != c.Position {
			hide = append(hide, span{recordAt(c.Slot, pos), RecordAltOffset})
		}
	}
	return s.view(recordMask{s.dev, hide})
}

func (s *Store) view(m recordMask) (*Store, error) {
	view, err := Open(m, StoreOptions{BlockSize: s.blockSize, Clock: s.clock})
	if err == nil && view.SlotSize() != s.SlotSize() {
		err = fmt.Errorf("snapshot: slot size %d in the view, %d on the disk", view.SlotSize(), s.SlotSize())
	}
	return view, err
}

// span is a byte range of a device.
type span struct{ off, n int64 }

// recordMask is a block device that reads the byte ranges in hide as zero
// and takes no writes.
type recordMask struct {
	BlockDevice
	hide []span
}

func (m recordMask) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.BlockDevice.ReadAt(p, off)
	for _, h := range m.hide {
		if lo, hi := max(off, h.off), min(off+int64(n), h.off+h.n); lo < hi {
			clear(p[lo-off : hi-off])
		}
	}
	return n, err
}

func (recordMask) WriteAt([]byte, int64) (int, error) {
	return 0, errors.New("snapshot: a slot view is read-only")
}

// hides reports whether [off, off+n) overlaps a hidden range.
func (m recordMask) hides(off int64, segs [][]byte) bool {
	var n int64
	for _, p := range segs {
		n += int64(len(p))
	}
	for _, h := range m.hide {
		if off < h.off+h.n && h.off < off+n {
			return true
		}
	}
	return false
}

// ReadV and ReadVAsync pass scattered reads to the device where they
// hide nothing (a lazy restore of a chosen generation reads as fast);
// others are refused, to be read through ReadAt.
func (m recordMask) ReadV(segs [][]byte, off int64) (bool, error) {
	if v, ok := m.BlockDevice.(VectorReader); ok && !m.hides(off, segs) {
		return v.ReadV(segs, off)
	}
	return false, nil
}

func (m recordMask) ReadVAsync(segs [][]byte, off int64) (bool, error) {
	_, canSync := m.BlockDevice.(AsyncWriter)
	if v, ok := m.BlockDevice.(AsyncReader); ok && canSync && !m.hides(off, segs) {
		return v.ReadVAsync(segs, off)
	}
	return false, nil
}

func (recordMask) WriteAsync([]byte, int64) error {
	return errors.New("snapshot: a slot view is read-only")
}

// Sync waits for the reads ReadVAsync started.
func (m recordMask) Sync() error {
	if a, ok := m.BlockDevice.(AsyncWriter); ok {
		return a.Sync()
	}
	return nil
}
