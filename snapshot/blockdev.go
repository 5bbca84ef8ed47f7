package snapshot

import (
	"errors"
	"fmt"
	"io"
)

// BlockDevice is a raw block device. Offsets and lengths of ReadAt and
// WriteAt are multiples of SectorSize. A write is durable only after a
// successful Flush; until then it may be lost, or (on power loss in the
// middle) partly written, in whole sectors or with one torn sector.
type BlockDevice interface {
	// SectorSize is the size of a sector in bytes: a power of two from
	// 512 to 4096.
	SectorSize() int
	// Size is the device size in bytes, a multiple of SectorSize.
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every completed write durable.
	Flush() error
}

// checkIO validates a request against the device geometry.
func checkIO(sector int, size int64, n int, off int64) error {
	if off < 0 || off%int64(sector) != 0 || n%sector != 0 {
		return fmt.Errorf("blockdev: unaligned request (offset %d, length %d, sector %d)", off, n, sector)
	}
	if off > size || int64(n) > size-off {
		return fmt.Errorf("blockdev: request past the end (offset %d, length %d, size %d)", off, n, size)
	}
	return nil
}

// CheckRequest returns an error unless off and n are sector aligned and
// inside a device of the given size. BlockDevice implementations use it.
func CheckRequest(sectorSize int, size int64, n int, off int64) error {
	return checkIO(sectorSize, size, n, off)
}

// MemDevice is a BlockDevice in memory, for tests and for RAM-backed stores.
type MemDevice struct {
	Sector int
	Data   []byte
}

// NewMemDevice returns a zeroed MemDevice of size bytes.
func NewMemDevice(size int64, sector int) *MemDevice {
	return &MemDevice{Sector: sector, Data: make([]byte, size)}
}

func (m *MemDevice) SectorSize() int { return m.Sector }
func (m *MemDevice) Size() int64     { return int64(len(m.Data)) }
func (m *MemDevice) Flush() error    { return nil }

func (m *MemDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := checkIO(m.Sector, m.Size(), len(p), off); err != nil {
		return 0, err
	}
	return copy(p, m.Data[off:]), nil
}

func (m *MemDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := checkIO(m.Sector, m.Size(), len(p), off); err != nil {
		return 0, err
	}
	return copy(m.Data[off:], p), nil
}

// AsyncWriter may be implemented by a BlockDevice whose writes can run
// while the caller works. The store's writer then fills one buffer while
// the device writes the other, so that a save takes about the longer of
// the device's time and the hashing and copying, not their sum.
type AsyncWriter interface {
	// WriteAsync starts writing p at off (aligned as for WriteAt) and may
	// return before the device has it; p must not change until Sync.
	// An error may belong to an earlier write.
	WriteAsync(p []byte, off int64) error
	// Sync waits for every write WriteAsync started and returns the first
	// error among them.
	Sync() error
}

// AsyncFlusher may be implemented by an AsyncWriter that can start a flush
// and go on: a save flushes what it wrote so far while it writes the rest,
// so that the device's write-back overlaps the save instead of following it.
type AsyncFlusher interface {
	// FlushAsync starts making every write completed before it durable
	// and returns without waiting. Sync does not wait for it; Flush (and
	// anything else that waits for the device to be idle) does. Its error
	// is reported once, by a later Sync, FlushAsync or Flush.
	FlushAsync() error
}

// VectorWriter may be implemented by an AsyncWriter that gathers one
// write from several buffers (virtio descriptors, NVMe PRP entries): the
// store then writes guest pages from guest RAM in place, without copying
// them into its buffer.
type VectorWriter interface {
	// WriteVAsync starts writing the concatenation of segs at off, as
	// WriteAsync does (off and the total length aligned as for WriteAt;
	// no segment may change until Sync). started false with a nil error:
	// the device cannot describe these segments in one transfer (their
	// alignment or number); nothing was started, and the caller writes a
	// copy instead.
	WriteVAsync(segs [][]byte, off int64) (started bool, err error)
}

// VectorReader may be implemented by a BlockDevice that scatters one read
// into several buffers: a restore reads a block's partial sectors into
// small buffers and its guest pages in place, in one request.
type VectorReader interface {
	// ReadV reads the bytes at off into the concatenation of segs (off
	// and the total length aligned as for ReadAt). done false with a nil
	// error: the device cannot describe these segments in one transfer;
	// nothing was read.
	ReadV(segs [][]byte, off int64) (done bool, err error)
}

// AsyncReader may be implemented by an AsyncWriter whose scattered reads
// can run while the caller works: a lazy restore reads the next block
// while it checks this one.
type AsyncReader interface {
	// ReadVAsync starts reading the bytes at off into the concatenation
	// of segs, as ReadV, and may return before they are there: they are
	// after Sync returns nil. started false with a nil error: nothing
	// was started (the segments cannot be described). started true with
	// an error: the caller still calls Sync before it reuses the memory.
	// The segs slice itself (not its memory) is not kept.
	ReadVAsync(segs [][]byte, off int64) (started bool, err error)
}

// Idler may be implemented by a BlockDevice that can run other work while
// it waits for the device: after SetIdle(f) it calls f between polls for
// a completion, with no lock held (a live save lets the guest run there).
// f must not use the device. SetIdle(nil) stops it.
type Idler interface {
	SetIdle(f func())
}

// blockWriter buffers a stream into large sector-aligned writes to a device
// extent [base, base+limit). On an AsyncWriter it has two buffers: one is
// written while the other fills. On a VectorWriter a write may also refer
// to the caller's memory in place (writeRef): buf then holds the request's
// other bytes at their positions, around the references.
type blockWriter struct {
	dev   BlockDevice
	async AsyncWriter  // dev's, or nil
	vec   VectorWriter // dev's (async too), or nil
	// flusher (dev's, async too, or nil) is told to flush every
	// FlushInterval bytes written, so that the device writes its cache
	// back while the save goes on; unflushed counts the bytes since.
	flusher   AsyncFlusher
	unflushed int64
	base      int64
	limit     int64
	buf       []byte
	spare     []byte // the other buffer (async), possibly still being written
	n         int    // bytes in the request (in buf, or referred to)
	off       int64  // device offset of the request, relative to base
	total     int64
	refs      []ref    // the request's references, in order
	segs      [][]byte // the request gathered, for WriteVAsync
	// inPlace counts the bytes of references written in place, copied
	// those copied because the device could not take them in place.
	inPlace, copied int64
	// done, if set, is told the stream bytes whose writes are all
	// complete, after each wait for the device (refWriter.onDone).
	done func(n int64)
}

func (b *blockWriter) onDone(f func(n int64)) { b.done = f }

func (b *blockWriter) refers() bool { return b.vec != nil }

// completed tells done that the writes of the first n bytes are complete.
func (b *blockWriter) completed(n int64) {
	if b.done != nil {
		b.done(n)
	}
}

// ref is memory a request refers to in place: len(p) bytes at position at.
type ref struct {
	p  []byte
	at int
}

// newBlockWriter returns a blockWriter whose buffers are bufs[0] and, on
// an AsyncWriter, bufs[1] (both of the same size).
func newBlockWriter(dev BlockDevice, base, limit int64, bufs [2][]byte) *blockWriter {
	b := &blockWriter{dev: dev, base: base, limit: limit, buf: bufs[0]}
	if a, ok := dev.(AsyncWriter); ok {
		b.async, b.spare = a, bufs[1]
		b.vec, _ = dev.(VectorWriter)
		b.flusher, _ = dev.(AsyncFlusher)
	}
	return b
}

// FlushInterval is how many bytes a save writes between the flushes it
// starts and goes on (AsyncFlusher): the device's write-back of them then
// overlaps the rest of the save, and the save's final flush has less left.
const FlushInterval = 16 << 20

// flushInterval is FlushInterval; tests lower it.
var flushInterval int64 = FlushInterval

// writeRef writes p as Write does, but on a VectorWriter refers to p in
// place instead of copying it: p must not change until finish returns.
func (b *blockWriter) writeRef(p []byte) error {
	if b.vec == nil {
		_, err := b.Write(p)
		return err
	}
	for len(p) > 0 {
		k := min(len(p), len(b.buf)-b.n)
		q := p[:k]
		if i := len(b.refs) - 1; i >= 0 && b.refs[i].at+len(b.refs[i].p) == b.n && follows(b.refs[i].p, q) {
			b.refs[i].p = b.refs[i].p[:len(b.refs[i].p)+k]
		} else {
			b.refs = append(b.refs, ref{q, b.n})
		}
		b.n += k
		p = p[k:]
		if b.n == len(b.buf) {
			if err := b.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// follows reports whether q starts in memory where p ends (one slice of
// the same array).
func follows(p, q []byte) bool {
	return len(q) > 0 && cap(p) > len(p) && &p[:len(p)+1][len(p)] == &q[0]
}

var errSlotFull = errors.New("snapshot larger than the store slot")

func (b *blockWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := copy(b.buf[b.n:], p)
		b.n += k
		p = p[k:]
		written += k
		if b.n == len(b.buf) {
			if err := b.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush writes the buffer, padded with zeros to a whole sector: started
// (async), after the write of the other buffer completed, or done.
func (b *blockWriter) flush() error {
	if b.n == 0 {
		return nil
	}
	s := b.dev.SectorSize()
	n := (b.n + s - 1) / s * s
	clear(b.buf[b.n:n])
	if b.off+int64(n) > b.limit {
		return fmt.Errorf("%w (%d bytes)", errSlotFull, b.limit)
	}
	at := b.base + b.off
	if b.async != nil {
		// The spare buffer's write must be complete before it is
		// filled again; then this one goes out while it fills.
		if err := b.async.Sync(); err != nil {
			return fmt.Errorf("device write: %w", err)
		}
		b.completed(b.total)
		// Every write so far is complete: a flush started now covers them.
		if b.flusher != nil && b.unflushed >= flushInterval {
			if err := b.flusher.FlushAsync(); err != nil {
				return fmt.Errorf("device flush: %w", err)
			}
			b.unflushed = 0
		}
		if err := b.start(n, at); err != nil {
			return fmt.Errorf("device write at %d: %w", at, err)
		}
		b.unflushed += int64(n)
		b.buf, b.spare = b.spare, b.buf
	} else if _, err := b.dev.WriteAt(b.buf[:n], at); err != nil {
		return fmt.Errorf("device write at %d: %w", at, err)
	}
	b.off += int64(b.n)
	b.total += int64(b.n)
	b.n = 0
	if b.async == nil {
		b.completed(b.total)
	}
	return nil
}

// start starts the write of the request, n bytes with its padding: in
// place with its references when the device takes them, else from buf
// with the references copied into their places.
func (b *blockWriter) start(n int, at int64) error {
	if len(b.refs) == 0 {
		return b.async.WriteAsync(b.buf[:n], at)
	}
	segs, pos := b.segs[:0], 0
	for _, r := range b.refs {
		if r.at > pos {
			segs = append(segs, b.buf[pos:r.at])
		}
		segs = append(segs, r.p)
		pos = r.at + len(r.p)
	}
	if pos < n {
		segs = append(segs, b.buf[pos:n])
	}
	b.segs = segs
	started, err := b.vec.WriteVAsync(segs, at)
	switch {
	case started:
		for _, r := range b.refs {
			b.inPlace += int64(len(r.p))
		}
	case err == nil:
		for _, r := range b.refs {
			b.copied += int64(copy(b.buf[r.at:], r.p))
		}
		err = b.async.WriteAsync(b.buf[:n], at)
	}
	clear(b.segs)
	b.refs = b.refs[:0]
	return err
}

// abandon waits for the writes in flight after a failed save, so that no
// device still reads a buffer the next save fills (their errors are the
// failed save's).
func (b *blockWriter) abandon() {
	if b.async != nil {
		b.async.Sync()
	}
}

// finish writes what is buffered and waits for every write to complete.
func (b *blockWriter) finish() error {
	if err := b.flush(); err != nil {
		return err
	}
	if b.async != nil {
		if err := b.async.Sync(); err != nil {
			return fmt.Errorf("device write: %w", err)
		}
		b.completed(b.total)
	}
	return nil
}

// blockReader reads n bytes of a device extent starting at base, in large
// sector-aligned reads.
type blockReader struct {
	dev  BlockDevice
	base int64
	left int64 // bytes of the extent not yet returned
	off  int64 // device offset of the next read
	buf  []byte
	r, w int // unread bytes are buf[r:w]
}

func newBlockReader(dev BlockDevice, base, n int64, bufSize int) *blockReader {
	return &blockReader{dev: dev, base: base, left: n, off: base, buf: make([]byte, bufSize)}
}

// Read returns buffered bytes first. A read of at least directMin bytes
// with nothing buffered goes from the device straight into p, in whole
// sectors (no copy: a restore reads guest pages into place); other reads
// refill the buffer with at most readAhead bytes, so that little is
// buffered, and copied, ahead of the next large read.
func (b *blockReader) Read(p []byte) (int, error) {
	if b.r == b.w {
		if b.left <= 0 {
			return 0, io.EOF
		}
		s := int64(b.dev.SectorSize())
		if direct := min(int64(len(p)), b.left) / s * s; direct >= directMin {
			if _, err := b.dev.ReadAt(p[:direct], b.off); err != nil {
				return 0, fmt.Errorf("device read at %d: %w", b.off, err)
			}
			b.off += direct
			b.left -= direct
			return int(direct), nil
		}
		want := max(int64(len(p)), readAhead)
		n := min(int64(len(b.buf)), (min(want, b.left)+s-1)/s*s)
		if _, err := b.dev.ReadAt(b.buf[:n], b.off); err != nil {
			return 0, fmt.Errorf("device read at %d: %w", b.off, err)
		}
		b.off += n
		b.r, b.w = 0, int(min(n, b.left))
		b.left -= int64(b.w)
	}
	k := copy(p, b.buf[b.r:b.w])
	b.r += k
	return k, nil
}

// skip passes over n bytes of the extent: buffered bytes are dropped,
// whole sectors beyond them are not read at all (a seek), and the rest of
// a sector is read into the buffer as usual.
func (b *blockReader) skip(n int64) error {
	k := min(n, int64(b.w-b.r))
	b.r += int(k)
	n -= k
	if n == 0 {
		return nil
	}
	if n > b.left {
		return io.ErrUnexpectedEOF
	}
	// The buffer is empty: b.off is sector aligned and is the position
	// of the next byte.
	s := int64(b.dev.SectorSize())
	whole := n / s * s
	b.off += whole
	b.left -= whole
	n -= whole
	for n > 0 {
		if b.r == b.w {
			if _, err := b.Read(b.buf[:0:0]); err != nil && b.r == b.w {
				return err
			}
			if b.r == b.w {
				return io.ErrUnexpectedEOF
			}
		}
		k := min(n, int64(b.w-b.r))
		b.r += int(k)
		n -= k
	}
	return nil
}

// Reads of directMin bytes and more bypass the reader's buffer; refills
// read readAhead bytes (or what the read asks, up to the buffer).
const (
	directMin = 64 << 10
	readAhead = 64 << 10
)
