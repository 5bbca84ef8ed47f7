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
	// RecordArea is the space reserved for each of the two commit records.
	RecordArea = 4096
	// DataStart is the device offset of slot 0.
	DataStart = 2 * RecordArea
	// SlotAlign is the alignment of slot offsets and sizes.
	SlotAlign = 4096
	// MinSlotSize is the smallest slot a store accepts.
	MinSlotSize = 64 << 10
	// DefaultBlockSize is the size of device requests made by Save and Load.
	DefaultBlockSize = 1 << 20
)

// Commit is a commit record: it makes the snapshot in one slot current.
type Commit struct {
	Slot       int      `json:"slot"`
	Generation uint64   `json:"generation"`
	Offset     int64    `json:"offset"` // device offset of the snapshot stream
	Length     int64    `json:"length"` // stream length in bytes
	Digest     [32]byte `json:"-"`      // the stream's SHA-256 digest (end record)
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
}

// Store keeps up to two snapshots on a block device: two slots, each with a
// commit record. Save writes the new snapshot into the slot that does not
// hold the newest valid snapshot, flushes, then writes and flushes that
// slot's commit record. Load returns the newest snapshot whose commit record
// and data are fully valid. A Store is not safe for concurrent use.
type Store struct {
	dev       BlockDevice
	blockSize int
	slotSize  int64
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
	return &Store{dev: dev, blockSize: opts.BlockSize, slotSize: slot}, nil
}

// SlotSize returns the capacity of each slot in bytes.
func (s *Store) SlotSize() int64 { return s.slotSize }

func (s *Store) slotOffset(i int) int64 { return DataStart + int64(i)*s.slotSize }

// RecordStatus is the state of one commit record as read from the device.
type RecordStatus struct {
	Slot   int
	Blank  bool    // the record is all zero: never written
	Commit *Commit // the record, if its checksum and fields are valid
	Err    error   // why the record is invalid (not blank, no Commit)
}

// Records reads and checks both commit records.
func (s *Store) Records() ([2]RecordStatus, error) {
	var st [2]RecordStatus
	buf := make([]byte, DataStart)
	if _, err := s.dev.ReadAt(buf, 0); err != nil {
		return st, fmt.Errorf("snapshot: store: read commit records: %w", err)
	}
	for i := range st {
		st[i].Slot = i
		area := buf[i*RecordArea : i*RecordArea+RecordSize]
		if isZero(area) {
			st[i].Blank = true
			continue
		}
		c, err := s.parseRecord(i, area)
		if err != nil {
			st[i].Err = fmt.Errorf("commit record %d: %w", i, err)
			continue
		}
		st[i].Commit = c
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
	if c.Slot != slot || c.Offset != s.slotOffset(slot) {
		return nil, fmt.Errorf("%w: record names slot %d at offset %d, expected slot %d at %d (device resized?)", ErrCorrupt, c.Slot, c.Offset, slot, s.slotOffset(slot))
	}
	if c.Length < HeaderSize || c.Length > s.slotSize || c.Generation == 0 {
		return nil, fmt.Errorf("%w: record length %d or generation %d invalid", ErrCorrupt, c.Length, c.Generation)
	}
	return c, nil
}

// Decode decodes the snapshot of commit c (from Records) and checks that it
// is the snapshot the record committed (generation and digest).
func (s *Store) Decode(c *Commit, opts DecodeOptions) (*Snapshot, error) {
	r := newBlockReader(s.dev, c.Offset, c.Length, s.blockSize)
	snap, err := Decode(r, c.Length, opts)
	if err != nil {
		return nil, err
	}
	if snap.Header.Generation != c.Generation {
		return nil, fmt.Errorf("snapshot: %w: stream generation %d, commit record says %d", ErrCorrupt, snap.Header.Generation, c.Generation)
	}
	if snap.Digest != c.Digest {
		return nil, fmt.Errorf("snapshot: %w: stream digest differs from the commit record", ErrDigest)
	}
	return snap, nil
}

// candidates returns the valid commit records, newest first.
func candidates(st [2]RecordStatus) []*Commit {
	var cs []*Commit
	for _, r := range st {
		if r.Commit != nil {
			cs = append(cs, r.Commit)
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
	// saves a full read of the previous snapshot, at a cost: if that
	// snapshot was damaged on the medium since it was committed, the save
	// overwrites the older slot anyway (and a crash during it leaves no
	// loadable snapshot).
	TrustCommit bool
}

// Save writes a new snapshot: fill writes the chunks (manifest first) to the
// Writer; Save writes the end record, flushes, and commits. The new
// generation is one more than the highest generation of any valid commit
// record. The newest valid snapshot is never overwritten (Save reads and
// checks it first), so a crash at any point leaves either it or the new
// snapshot loadable.
func (s *Store) Save(opts SaveOptions, fill func(w *Writer) error) (*Commit, error) {
	st, err := s.Records()
	if err != nil {
		return nil, err
	}
	var maxGen uint64
	for _, r := range st {
		if r.Commit != nil && r.Commit.Generation > maxGen {
			maxGen = r.Commit.Generation
		}
	}
	// Find the slot of the newest valid snapshot, which must survive this
	// save: check framing and digest (no key or registry needed). This
	// reads that snapshot once; it is not cached, so corruption since the
	// last save is noticed and the older good snapshot is kept instead.
	current := -1
	for _, c := range candidates(st) {
		if opts.TrustCommit {
			current = c.Slot
			break
		}
		if _, err := s.Decode(c, DecodeOptions{Inspect: true, SkipAuth: true}); err == nil {
			current = c.Slot
			break
		}
	}
	target := 0
	if current == 0 {
		target = 1
	}
	h := opts.Header
	h.Generation = maxGen + 1
	bw := newBlockWriter(s.dev, s.slotOffset(target), s.slotSize, s.blockSize)
	w, err := NewWriter(bw, h, opts.Key)
	if err != nil {
		return nil, err
	}
	if err := fill(w); err != nil {
		return nil, err
	}
	sum, err := w.Close()
	if err != nil {
		return nil, err
	}
	if err := bw.finish(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := s.dev.Flush(); err != nil {
		return nil, fmt.Errorf("snapshot: flush data: %w", err)
	}
	c := &Commit{Slot: target, Generation: h.Generation, Offset: s.slotOffset(target), Length: sum.Length, Digest: sum.Digest}
	sec := make([]byte, s.dev.SectorSize())
	copy(sec, c.marshal())
	if _, err := s.dev.WriteAt(sec, int64(target)*RecordArea); err != nil {
		return nil, fmt.Errorf("snapshot: write commit record: %w", err)
	}
	if err := s.dev.Flush(); err != nil {
		return nil, fmt.Errorf("snapshot: flush commit record: %w", err)
	}
	return c, nil
}

// Device returns the block device the store is on.
func (s *Store) Device() BlockDevice { return s.dev }

// SlotView returns a read-only view of the store in which only slot's
// commit record is visible (the other slot's reads as blank), so that a
// reader of the newest snapshot (kernel.Restore) takes that slot's: a
// restore of a chosen generation.
func (s *Store) SlotView(slot int) (*Store, error) {
	if slot != 0 && slot != 1 {
		return nil, fmt.Errorf("snapshot: slot %d (want 0 or 1)", slot)
	}
	view, err := Open(recordMask{s.dev, int64(1-slot) * RecordArea}, StoreOptions{})
	if err == nil && view.SlotSize() != s.SlotSize() {
		err = fmt.Errorf("snapshot: slot size %d in the view, %d on the disk", view.SlotSize(), s.SlotSize())
	}
	return view, err
}

// recordMask is a block device that reads the commit record area at hide
// as zero and takes no writes.
type recordMask struct {
	BlockDevice
	hide int64
}

func (m recordMask) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.BlockDevice.ReadAt(p, off)
	if lo, hi := max(off, m.hide), min(off+int64(n), m.hide+RecordArea); lo < hi {
		clear(p[lo-off : hi-off])
	}
	return n, err
}

func (recordMask) WriteAt([]byte, int64) (int, error) {
	return 0, errors.New("snapshot: a slot view is read-only")
}
