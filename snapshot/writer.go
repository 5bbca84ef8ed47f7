package snapshot

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strings"
)

// endBodySize is the size of the end chunk body.
const endBodySize = 80

// EndVersion is the version of the end chunk.
const EndVersion = 1

// Summary describes a finished snapshot stream.
type Summary struct {
	Length int64    // bytes in the stream, end record included
	Digest [32]byte // SHA-256 of the stream before the end chunk
	Chunks int      // chunks before the end chunk
}

// Writer streams one snapshot to an io.Writer in a single sequential pass:
// header, manifest, then any chunks, and an end chunk written by Close.
// Memory use is bounded (one 1 MiB scratch buffer plus RAM bitmaps) whatever
// the guest size. After an error every method returns that error.
type Writer struct {
	out    io.Writer
	digest hash.Hash
	mac    hash.Hash
	n      int64
	chunks int
	err    error
	closed bool

	inChunk   bool
	chunkCRC  uint32
	chunkLeft uint64

	manifest *Manifest
	seen     map[string]bool
	devices  map[string]bool // "name/instance" written
	ram      bool
	scratch  []byte
	// blocks, while set, takes the page data of a version 2 RAM chunk.
	blocks *blockSums
	// ramVersion1 writes version 1 RAM chunks (the fixtures of version 1
	// streams).
	ramVersion1 bool
	key         []byte // the HMAC key, for the RAM blocks' keys
	ramInstance uint32 // always 0; tests set it to write a second RAM chunk
	gen         uint64 // the header's generation, for the RAM blocks' keys
	// clock and times, set by the store, time the RAM chunk's phases.
	clock   func() uint64
	times   *SaveProfile
	started uint64 // clock at the save's start
	// ramBase is the RAM chunk's incremental flag and base, which the
	// store checks against SaveOptions.Base.
	ramBase RAMInfo
	// released and inFlight: RAMOptions.Released, and the runs of pages
	// passed but not released yet, in order.
	released func(gpa uint64)
	inFlight []flightRun
}

// NewWriter writes the header h to out and returns a Writer. If key is not
// empty the snapshot is keyed: the end record carries HMAC-SHA256(key) over
// the same bytes as the digest, and h.Flags gets HeaderKeyed. h.Version is
// set to FormatVersion.
func NewWriter(out io.Writer, h Header, key []byte) (*Writer, error) {
	w := &Writer{out: out, digest: sha256.New(), seen: make(map[string]bool), devices: make(map[string]bool)}
	h.Version = FormatVersion
	h.Flags &^= HeaderKeyed
	w.gen = h.Generation
	if len(key) > 0 {
		h.Flags |= HeaderKeyed
		w.mac = hmac.New(sha256.New, key)
		w.key = bytes.Clone(key)
	}
	hb, err := h.marshal()
	if err != nil {
		return nil, err
	}
	if err := w.emit(hb); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) emit(p []byte) error { return w.emitData(p, false) }

// refWriter is an output that can write bytes from the caller's memory in
// place (blockWriter on a VectorWriter).
type refWriter interface {
	writeRef(p []byte) error
	// onDone sets f, told after each wait for the device the stream
	// length whose writes are all complete.
	onDone(f func(n int64))
	// refers reports whether writeRef keeps references (else it copies).
	refers() bool
}

// flightRun is a run of pages written in place during a save with
// RAMOptions.Released: the device is done with the pages below gpa once
// the stream's first end bytes are written.
type flightRun struct {
	end int64
	gpa uint64
}

// passed records that the writer is done reading the pages below gpa:
// with RAMOptions.Released, they are released once the stream written so
// far is on the device (at once on an output that copies).
func (w *Writer) passed(gpa uint64) {
	if w.released == nil {
		return
	}
	w.inFlight = append(w.inFlight, flightRun{w.n, gpa})
	if r, ok := w.out.(refWriter); !ok || !r.refers() {
		w.complete(w.n)
	}
}

// complete releases the runs of pages the first n bytes of the stream
// hold (refWriter.onDone).
func (w *Writer) complete(n int64) {
	k := 0
	for k < len(w.inFlight) && w.inFlight[k].end <= n {
		k++
	}
	if k == 0 {
		return
	}
	gpa := w.inFlight[k-1].gpa
	w.inFlight = w.inFlight[:copy(w.inFlight, w.inFlight[k:])]
	w.released(gpa)
}

// emitData emits p; inPlace: p is guest memory that stays unchanged until
// the stream is finished, which the output may write in place.
func (w *Writer) emitData(p []byte, inPlace bool) error {
	if w.err != nil {
		return w.err
	}
	if w.blocks != nil {
		// Page data of a version 2 RAM chunk: its block sums, not the
		// digest, HMAC and chunk CRC, cover it.
		w.blocks.write(p)
	} else {
		w.digest.Write(p)
		if w.mac != nil {
			w.mac.Write(p)
		}
	}
	if w.inChunk && w.blocks == nil {
		w.chunkCRC = crc32.Update(w.chunkCRC, castagnoli, p)
	}
	if w.inChunk {
		if uint64(len(p)) > w.chunkLeft {
			w.err = errors.New("snapshot: chunk body longer than declared")
			return w.err
		}
		w.chunkLeft -= uint64(len(p))
	}
	var err error
	if r, ok := w.out.(refWriter); ok && inPlace {
		err = r.writeRef(p)
	} else {
		_, err = w.out.Write(p)
	}
	if err != nil {
		w.err = fmt.Errorf("snapshot: write: %w", err)
		return w.err
	}
	w.n += int64(len(p))
	return nil
}

// tick reads the store's clock (0 without one).
func (w *Writer) tick() uint64 {
	if w.clock == nil {
		return 0
	}
	return w.clock()
}

func (w *Writer) check() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("snapshot: writer closed")
	}
	return nil
}

func (w *Writer) begin(typ string, instance uint32, version uint16, flags ChunkFlags, length uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := checkType(typ); err != nil {
		return fmt.Errorf("snapshot: %v", err)
	}
	if version == 0 {
		return fmt.Errorf("snapshot: chunk %q: version 0", typ)
	}
	if flags&^knownChunkFlags != 0 {
		return fmt.Errorf("snapshot: chunk %q: unknown flags %#x", typ, flags)
	}
	key := fmt.Sprintf("%s/%d", typ, instance)
	if w.seen[key] {
		return fmt.Errorf("snapshot: chunk %q instance %d written twice", typ, instance)
	}
	w.seen[key] = true
	var hb [ChunkHeaderSize]byte
	(&chunkHeader{Type: typ, Version: version, Flags: flags, Instance: instance, Length: length}).marshal(hb[:])
	if err := w.emit(hb[:]); err != nil {
		return err
	}
	w.inChunk, w.chunkCRC, w.chunkLeft = true, 0, length
	return nil
}

func (w *Writer) end() error {
	if w.err != nil {
		return w.err
	}
	if w.chunkLeft != 0 {
		w.err = fmt.Errorf("snapshot: chunk body %d bytes shorter than declared", w.chunkLeft)
		return w.err
	}
	w.inChunk = false
	var t [ChunkTrailerSize]byte
	binary.LittleEndian.PutUint32(t[:], w.chunkCRC)
	if err := w.emit(t[:]); err != nil {
		return err
	}
	w.chunks++
	return nil
}

// WriteManifest writes the manifest chunk (current version, required). It
// must be the first chunk.
func (w *Writer) WriteManifest(m *Manifest) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.manifest != nil || w.chunks != 0 {
		return errors.New("snapshot: the manifest must be the first chunk and written once")
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("snapshot: %v", err)
	}
	return w.writeRawManifest(m, ManifestVersion, m.Encode())
}

// writeRawManifest writes a manifest chunk with an arbitrary version and
// body; tests use it to produce old-version fixtures.
func (w *Writer) writeRawManifest(m *Manifest, version uint16, body []byte) error {
	if err := w.begin(TypeManifest, 0, version, Required, uint64(len(body))); err != nil {
		return err
	}
	w.emit(body)
	if err := w.end(); err != nil {
		return err
	}
	w.manifest = m
	return nil
}

// WriteChunk writes one chunk with the given body, typically built with an
// Encoder. A device chunk ("dev:"+name) must be listed in the manifest with
// the same instance and version (see WriteDevice).
func (w *Writer) WriteChunk(typ string, instance uint32, version uint16, flags ChunkFlags, body []byte) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.manifest == nil {
		return errors.New("snapshot: write the manifest first")
	}
	switch typ {
	case TypeManifest, TypeRAM, TypeEnd, TypeChain, TypePad:
		return fmt.Errorf("snapshot: chunk type %q is written by its own method (chain: by the store)", typ)
	}
	if name, ok := strings.CutPrefix(typ, DevicePrefix); ok {
		d := w.manifest.device(name, instance)
		if d == nil {
			return fmt.Errorf("snapshot: device %q instance %d is not in the manifest", name, instance)
		}
		if d.StateVersion != version || d.Required != (flags&Required != 0) {
			return fmt.Errorf("snapshot: device %q instance %d: version/required differ from the manifest", name, instance)
		}
		w.devices[fmt.Sprintf("%s/%d", name, instance)] = true
	}
	if err := w.begin(typ, instance, version, flags, uint64(len(body))); err != nil {
		return err
	}
	w.emit(body)
	return w.end()
}

// WriteDevice writes the state of device name/instance as listed in the
// manifest (its chunk version and required flag come from the manifest);
// state is what the device model's MarshalState returned.
func (w *Writer) WriteDevice(name string, instance uint32, state []byte) error {
	if w.manifest == nil {
		return errors.New("snapshot: write the manifest first")
	}
	d := w.manifest.device(name, instance)
	if d == nil {
		return fmt.Errorf("snapshot: device %q instance %d is not in the manifest", name, instance)
	}
	var f ChunkFlags
	if d.Required {
		f = Required
	}
	return w.WriteChunk(d.ChunkType(), instance, d.StateVersion, f, state)
}

func (m *Manifest) device(name string, instance uint32) *DeviceEntry {
	for i := range m.Devices {
		if m.Devices[i].Name == name && m.Devices[i].Instance == instance {
			return &m.Devices[i]
		}
	}
	return nil
}

// WriteRAM writes the RAM chunk (required): the given ranges of src, which
// must lie in RAM regions of the manifest, with all-zero pages elided. It
// reads src twice and streams; memory use is one bit per page plus a 1 MiB
// buffer.
func (w *Writer) WriteRAM(src MemorySource, ranges []MemRange, opts RAMOptions) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.manifest == nil {
		return errors.New("snapshot: write the manifest first")
	}
	if w.ram {
		return errors.New("snapshot: RAM chunk written twice")
	}
	for i, r := range ranges {
		if !w.manifest.ramRegion(r.GPA, r.Size) {
			return fmt.Errorf("snapshot: RAM range %d (%#x+%#x) is not inside a RAM region of the manifest", i, r.GPA, r.Size)
		}
	}
	if w.scratch == nil {
		w.scratch = make([]byte, scanBlock)
	}
	if opts.Copied != nil && opts.Released != nil {
		w.released = opts.Released
		if r, ok := w.out.(refWriter); ok {
			r.onDone(w.complete)
		}
	}
	t := w.tick()
	if w.times != nil {
		w.times.Prepare = t - w.started
	}
	plan, err := planRAM(src, ranges, &opts, w.scratch)
	if err != nil {
		return err
	}
	if opts.Copied != nil && len(ranges) > 0 {
		opts.Copied(ranges[0].GPA) // the scan holds no page now
	}
	if w.times != nil {
		w.times.Scan, t = w.tick()-t, w.tick()
	}
	version := uint16(RAMVersion)
	var totalData uint64
	for _, n := range plan.nData {
		totalData += n * PageSize
	}
	var blocks *blockSums // version 2: the page data's block sums, across ranges
	var nonce [ramNonceSize]byte
	if w.ramVersion1 {
		version = RAMVersion1
	} else {
		if w.key != nil {
			// A fresh nonce per snapshot: no two blocks of any two
			// snapshots under one key share a Poly1305 key.
			if _, err := rand.Read(nonce[:]); err != nil {
				return fmt.Errorf("snapshot: RAM block nonce: %w", err)
			}
		}
		blocks = newBlockSums(w.key != nil, w.key, nonce, w.gen)
		plan.length += ramNonceSize + ramTableHeader + uint64(blocks.sumSize())*ramBlocks(totalData)
	}
	var progress func(n uint64)
	if opts.Progress != nil {
		var total, written uint64
		for _, n := range plan.nData {
			total += n * PageSize
		}
		progress = func(n uint64) {
			written += n
			opts.Progress(written, total)
		}
		defer func() {
			if w.err == nil {
				opts.Progress(total, total)
			}
		}()
	}
	if version == RAMVersion {
		if err := w.pad(plan, opts.Carried != nil); err != nil {
			return err
		}
	}
	if err := w.begin(TypeRAM, w.ramInstance, version, Required, plan.length); err != nil {
		return err
	}
	w.ram = true
	w.ramBase = RAMInfo{Incremental: opts.Carried != nil, BaseGeneration: opts.BaseGeneration, BaseDigest: opts.BaseDigest}
	e := NewEncoder(ramHeaderSize)
	e.PutU32(PageSize)
	var flags uint32
	if opts.Carried != nil {
		flags |= RAMIncremental
	}
	e.PutU32(flags)
	e.PutU64(opts.BaseGeneration)
	e.PutRaw(opts.BaseDigest[:])
	e.PutU32(uint32(len(ranges)))
	e.PutU32(0)
	if version == RAMVersion {
		e.PutRaw(nonce[:])
	}
	if err := w.emit(e.Bytes()); err != nil {
		return err
	}
	for i, r := range ranges {
		pages := r.Size / PageSize
		e := NewEncoder(ramRangeHdrSize)
		e.PutU64(r.GPA)
		e.PutU64(pages)
		var rf uint32
		if plan.carried[i] != nil {
			rf |= rangeCarriedBitmap
		}
		e.PutU32(rf)
		e.PutU32(0)
		e.PutU64(plan.nData[i])
		if plan.carried[i] != nil {
			e.PutRaw(plan.carried[i])
		}
		e.PutRaw(plan.data[i])
		if err := w.emit(e.Bytes()); err != nil {
			return err
		}
		w.blocks = blocks // nil for version 1
		err := w.writePages(src, r.GPA, pages, plan.data[i], progress, opts.Copied)
		w.blocks = nil
		if err != nil {
			return err
		}
		if opts.Copied != nil {
			opts.Copied(r.GPA + r.Size)
			w.passed(r.GPA + r.Size)
		}
	}
	if w.times != nil {
		w.times.Data = w.tick() - t
	}
	if blocks != nil {
		sums := blocks.finish()
		var flags uint32
		if w.key != nil {
			flags |= ramTableKeyed
		}
		e := NewEncoder(ramTableHeader + len(sums))
		e.PutU32(RAMBlockSize)
		e.PutU32(flags)
		e.PutU64(uint64(len(sums) / blocks.sumSize()))
		e.PutRaw(sums)
		if err := w.emit(e.Bytes()); err != nil {
			return err
		}
	}
	return w.end()
}

// PadVersion is the version of the pad chunk.
const PadVersion = 1

// pad writes a pad chunk (TypePad) that makes the page data of the RAM
// chunk planned start on a page boundary of the stream, unless it does
// already (docs/snapshot-format.md, 3.4).
func (w *Writer) pad(plan *ramPlan, incremental bool) error {
	if len(plan.ranges) == 0 || plan.nData[0] == 0 || w.seen[TypePad+"/0"] {
		return nil // no page data in the first range, or padded already
	}
	at := w.n + ChunkHeaderSize + ramHeaderSize + ramNonceSize + ramRangeHdrSize + int64(len(plan.data[0]))
	if incremental {
		at += int64(len(plan.data[0])) // the carried bitmap
	}
	if at%PageSize == 0 {
		return nil
	}
	const frame = ChunkHeaderSize + ChunkTrailerSize
	n := ((-(at + frame))%PageSize + PageSize) % PageSize
	if err := w.begin(TypePad, 0, PadVersion, 0, uint64(n)); err != nil {
		return err
	}
	if err := w.emit(make([]byte, n)); err != nil {
		return err
	}
	return w.end()
}

// writePages copies the data pages of one range, reading runs of
// consecutive data pages up to the scratch size at a time.
func (w *Writer) writePages(src MemorySource, gpa, pages uint64, data []byte, progress func(n uint64), copied func(gpa uint64)) error {
	maxRun := uint64(len(w.scratch)) / PageSize
	for p := uint64(0); p < pages; {
		if !bitSet(data, p) {
			p++
			continue
		}
		run := uint64(1)
		for p+run < pages && run < maxRun && bitSet(data, p+run) {
			run++
		}
		b, inPlace, err := readOrView(src, w.scratch[:run*PageSize], gpa+p*PageSize, true)
		if err != nil {
			w.err = err
			return w.err
		}
		run = uint64(len(b)) / PageSize
		// Without Copied the source stays as it is until the stream is
		// finished, with Released until it is told: its pages may be
		// written in place.
		if err := w.emitData(b, inPlace && (copied == nil || w.released != nil)); err != nil {
			return err
		}
		p += run
		if copied != nil {
			copied(gpa + p*PageSize)
			w.passed(gpa + p*PageSize)
		}
		if progress != nil {
			progress(uint64(len(b)))
		}
	}
	return nil
}

// Close checks that every device listed in the manifest was written and
// writes the end chunk with the digest and HMAC. It does not close the
// underlying writer.
func (w *Writer) Close() (Summary, error) {
	if err := w.check(); err != nil {
		return Summary{}, err
	}
	if w.manifest == nil {
		return Summary{}, errors.New("snapshot: no manifest written")
	}
	for _, d := range w.manifest.Devices {
		if !w.devices[fmt.Sprintf("%s/%d", d.Name, d.Instance)] {
			return Summary{}, fmt.Errorf("snapshot: device %q instance %d is in the manifest but its state was not written", d.Name, d.Instance)
		}
	}
	var s Summary
	copy(s.Digest[:], w.digest.Sum(nil))
	s.Chunks = w.chunks
	var mac [32]byte
	if w.mac != nil {
		copy(mac[:], w.mac.Sum(nil))
	}
	e := NewEncoder(endBodySize)
	e.PutU32(uint32(w.chunks))
	e.PutU32(0)
	e.PutU64(uint64(w.n))
	e.PutRaw(s.Digest[:])
	e.PutRaw(mac[:])
	// The end chunk is framed like any chunk but is not itself digested.
	w.mac, w.digest = nil, nopHash{}
	if err := w.begin(TypeEnd, 0, EndVersion, Required, endBodySize); err != nil {
		return Summary{}, err
	}
	w.emit(e.Bytes())
	if err := w.end(); err != nil {
		return Summary{}, err
	}
	w.closed = true
	s.Length = w.n
	return s, nil
}

// nopHash discards what is written to it.
type nopHash struct{}

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }
func (nopHash) Sum(b []byte) []byte         { return b }
func (nopHash) Reset()                      {}
func (nopHash) Size() int                   { return 0 }
func (nopHash) BlockSize() int              { return 1 }
