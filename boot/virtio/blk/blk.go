// Package blk is a polling virtio-blk driver (VIRTIO 1.2 section 5.2) for
// tamavisor's snapshot store. It implements snapshot.BlockDevice over any
// virtio.Transport, keeps several requests in flight, passes caller
// buffers to the device by physical address when possible (zero copy) and
// otherwise bounces through DMA memory.
//
// Flush requires VIRTIO_BLK_F_FLUSH: a device without it gives no way to
// make writes durable, so Flush then returns ErrNoFlush rather than
// pretending to succeed (and so does FlushAsync).
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"tamavisor/boot/blkio"
	"tamavisor/boot/virtio"
	"tamavisor/snapshot"
)

// DeviceID is the virtio device type of a block device.
const DeviceID = 2

// Feature bits (section 5.2.3).
const (
	FeatureSizeMax = 1 // VIRTIO_BLK_F_SIZE_MAX: config size_max is valid
	FeatureSegMax  = 2 // VIRTIO_BLK_F_SEG_MAX: config seg_max is valid
	FeatureRO      = 5 // VIRTIO_BLK_F_RO: device is read-only
	FeatureBlkSize = 6 // VIRTIO_BLK_F_BLK_SIZE: config blk_size is valid
	FeatureFlush   = 9 // VIRTIO_BLK_F_FLUSH: flush command supported
)

// Configuration layout offsets (struct virtio_blk_config, section 5.2.4).
const (
	ConfigCapacity = 0  // le64, in 512-byte sectors
	ConfigSizeMax  = 8  // le32, max bytes of one segment
	ConfigSegMax   = 12 // le32, max data segments of one request
	ConfigBlkSize  = 20 // le32, block size
	configLen      = 24
)

// Request types (section 5.2.6).
const (
	TypeIn    = 0
	TypeOut   = 1
	TypeFlush = 4
	TypeGetID = 8
)

// Request status values (section 5.2.6).
const (
	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

const (
	// SectorShift: the request header's sector is in 512-byte units.
	SectorShift = 9
	hdrSize     = 16 // struct virtio_blk_req header: type le32, reserved le32, sector le64
	idLen       = 20 // GET_ID response length
	maxDescLen  = 1 << 30
)

// Defaults for Options.
const (
	DefaultQueueSize  = 256
	DefaultMaxRequest = 256 << 10
	DefaultBounceSize = 1 << 20
	DefaultTimeout    = 30 * time.Second
)

var (
	// ErrNoFlush is returned by Flush if the device lacks VIRTIO_BLK_F_FLUSH.
	ErrNoFlush = errors.New("virtio-blk: device does not support flush (no VIRTIO_BLK_F_FLUSH); writes cannot be made durable")
	// ErrReadOnly is returned by WriteAt on a VIRTIO_BLK_F_RO device.
	ErrReadOnly = errors.New("virtio-blk: device is read-only (VIRTIO_BLK_F_RO)")
	// ErrTimeout wraps requests the device did not complete in time.
	ErrTimeout = errors.New("virtio-blk: request timed out")
)

// Options tunes a Device. Zero values select the defaults.
type Options struct {
	// Phys returns the physical address of b[0] if the device may access
	// all of b directly; nil or false means bounce through DMA memory.
	Phys func(b []byte) (uint64, bool)
	// Timeout bounds the wait for any completion while requests are in
	// flight. After a timeout the device is reset and reinitialised.
	Timeout time.Duration
	// Now is a monotonic clock (default: time since New).
	Now func() time.Duration
	// QueueSize caps the virtqueue size (rounded down to a power of two).
	QueueSize int
	// MaxRequest caps the data bytes of one request.
	MaxRequest int
	// BounceSize is the size of the bounce buffer, allocated on first use.
	BounceSize int
}

var (
	_ snapshot.BlockDevice  = (*Device)(nil)
	_ snapshot.AsyncWriter  = (*Device)(nil)
	_ snapshot.VectorWriter = (*Device)(nil)
	_ snapshot.VectorReader = (*Device)(nil)
	_ snapshot.AsyncReader  = (*Device)(nil)
	_ snapshot.AsyncFlusher = (*Device)(nil)
	_ snapshot.Idler        = (*Device)(nil)
)

// Stats counts driver activity.
type Stats struct {
	Requests, Flushes, Errors, Timeouts, Resets uint64
	BytesRead, BytesWritten, BytesBounced       uint64
}

// Device is a virtio-blk device. Its methods are safe for concurrent use,
// except while an idle hook is set (SetIdle): the hook runs with the lock
// released in the middle of a request, and the device must then be used
// from one goroutine only.
type Device struct {
	mu       sync.Mutex
	t        virtio.Transport
	dma      virtio.DMA
	opt      Options
	features uint64
	q        *virtio.Queue
	sector   int
	size     int64
	segLen   int      // max bytes per data descriptor
	segMax   int      // max data descriptors per request
	reqLen   int      // max data bytes per request
	ext      []extent // scratch: the extents of a vectored write
	part     []extent // scratch: the extents of one request of a transfer
	slots    int
	hdrPA    uint64 // slot i: header at 16*i, status at 16*slots+i, ID after
	hdr      []byte
	freeSlot []int
	headSlot []int // by head descriptor: slot index
	slotSec  []uint64
	slotLen  []int
	slotTyp  []uint32
	slotBusy []bool
	slotBg   []bool            // a flush FlushAsync started: Sync does not wait for it
	inflight int               // requests submitted and not completed
	flushing int               // of them, flushes FlushAsync started
	ioErr    error             // the first failed status of the requests of the current operation
	errs     blkio.AsyncErrors // failures of requests started asynchronously, each reported once
	bufs     []virtio.Buf
	bounce   []byte
	bouncePA uint64
	broken   error  // reinitialisation failed; retried on the next request
	idle     func() // called while waiting for a completion (SetIdle)
	stats    Stats
}

var _ snapshot.BlockDevice = (*Device)(nil)

// New initialises the block device behind t.
func New(t virtio.Transport, dma virtio.DMA, opt Options) (*Device, error) {
	if id := t.DeviceID(); id != DeviceID {
		return nil, fmt.Errorf("virtio-blk: device ID is %d, not a block device (%d)", id, DeviceID)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Now == nil {
		start := time.Now()
		opt.Now = func() time.Duration { return time.Since(start) }
	}
	if opt.QueueSize <= 0 {
		opt.QueueSize = DefaultQueueSize
	}
	if opt.MaxRequest <= 0 {
		opt.MaxRequest = DefaultMaxRequest
	}
	if opt.BounceSize <= 0 {
		opt.BounceSize = DefaultBounceSize
	}
	d := &Device{t: t, dma: dma, opt: opt}
	if err := d.start(); err != nil {
		return nil, err
	}
	var cfg [configLen]byte
	if err := t.ReadConfig(0, cfg[:]); err != nil {
		return nil, d.fail(err)
	}
	if err := d.geometry(cfg[:]); err != nil {
		return nil, d.fail(err)
	}
	return d, nil
}

func (d *Device) fail(err error) error {
	d.t.SetStatus(virtio.StatusFailed)
	return err
}

// start negotiates features, sets up queue 0 (allocating it and the request
// headers on the first call) and sets DRIVER_OK.
func (d *Device) start() error {
	opt := uint64(1<<FeatureSizeMax | 1<<FeatureSegMax | 1<<FeatureRO | 1<<FeatureBlkSize | 1<<FeatureFlush)
	f, err := virtio.Negotiate(d.t, 1<<virtio.FeatureVersion1, opt)
	if err != nil {
		return err
	}
	if d.q == nil {
		d.features = f // fixed from here on: read without the lock
	} else if f != d.features {
		return d.fail(fmt.Errorf("virtio-blk: features changed across reset (%#x, was %#x)", f, d.features))
	}
	qmax := d.t.QueueMax(0)
	if qmax == 0 {
		return d.fail(errors.New("virtio-blk: request queue 0 not available"))
	}
	if d.q == nil {
		n := 1
		for n*2 <= min(qmax, d.opt.QueueSize, virtio.MaxQueueSize) {
			n *= 2
		}
		if d.q, err = virtio.NewQueue(d.dma, n); err != nil {
			return d.fail(err)
		}
		if err := d.allocSlots(max(n/3, 1)); err != nil {
			return d.fail(err)
		}
	} else {
		d.q.Reset()
		d.forget()
	}
	d.t.SetQueueSize(0, d.q.Size())
	desc, driver, device := d.q.Addrs()
	d.t.SetQueueAddrs(0, desc, driver, device)
	d.t.SetQueueReady(0, true)
	virtio.DriverOK(d.t)
	return nil
}

// forget drops every request in flight: all slots free.
func (d *Device) forget() {
	d.inflight, d.flushing = 0, 0
	d.freeSlot = d.freeSlot[:0]
	clear(d.slotBusy)
	for i := d.slots - 1; i >= 0; i-- {
		d.freeSlot = append(d.freeSlot, i)
	}
}

func (d *Device) allocSlots(n int) error {
	pa, buf, err := d.dma.Alloc(n*(hdrSize+1)+idLen, 16)
	if err != nil {
		return fmt.Errorf("virtio-blk: header memory: %w", err)
	}
	d.slots, d.hdrPA, d.hdr = n, pa, buf
	d.headSlot = make([]int, d.q.Size())
	d.slotSec = make([]uint64, n)
	d.slotLen = make([]int, n)
	d.slotTyp = make([]uint32, n)
	d.slotBusy = make([]bool, n)
	d.slotBg = make([]bool, n)
	for i := n - 1; i >= 0; i-- {
		d.freeSlot = append(d.freeSlot, i)
	}
	return nil
}

func (d *Device) has(bit int) bool { return d.features&(1<<bit) != 0 }

func (d *Device) geometry(cfg []byte) error {
	le := binary.LittleEndian
	d.sector = 512
	if bs := int(le.Uint32(cfg[ConfigBlkSize:])); d.has(FeatureBlkSize) && bs > 512 && bs <= 4096 && bs&(bs-1) == 0 {
		d.sector = bs
	}
	capacity := le.Uint64(cfg[ConfigCapacity:])
	if capacity > 1<<(63-SectorShift) {
		return fmt.Errorf("virtio-blk: capacity %d sectors out of range", capacity)
	}
	d.size = int64(capacity<<SectorShift) / int64(d.sector) * int64(d.sector)
	d.segLen = maxDescLen
	if sm := int(le.Uint32(cfg[ConfigSizeMax:])); d.has(FeatureSizeMax) && sm > 0 {
		d.segLen = min(sm, maxDescLen)
	}
	segs := d.q.Size() - 2
	if sm := int(le.Uint32(cfg[ConfigSegMax:])); d.has(FeatureSegMax) && sm > 0 {
		segs = min(sm, segs)
	}
	if segs < 1 {
		return fmt.Errorf("virtio-blk: queue of %d entries too small", d.q.Size())
	}
	d.segMax = segs
	d.reqLen = min(d.opt.MaxRequest, d.segLen*segs) / d.sector * d.sector
	if d.reqLen == 0 {
		return fmt.Errorf("virtio-blk: size_max %d × seg_max %d is below one sector", d.segLen, segs)
	}
	d.bufs = make([]virtio.Buf, 0, segs+2)
	return nil
}

// SectorSize is blk_size if the device reports a power of two up to 4096,
// else 512.
func (d *Device) SectorSize() int { return d.sector }

// Size is the capacity in bytes.
func (d *Device) Size() int64 { return d.size }

// ReadOnly reports VIRTIO_BLK_F_RO.
func (d *Device) ReadOnly() bool { return d.has(FeatureRO) }

// Features returns the negotiated feature bits.
func (d *Device) Features() uint64 { return d.features }

// Stats returns a copy of the activity counters.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	return d.io(TypeIn, p, off)
}

func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if d.has(FeatureRO) {
		return 0, ErrReadOnly
	}
	return d.io(TypeOut, p, off)
}

// Flush issues VIRTIO_BLK_T_FLUSH; see ErrNoFlush. It first waits for
// every request in flight, the flushes FlushAsync started included, and
// returns the error of a failed one of those flushes (once) rather than
// its own; that of a failed write is kept for Sync.
func (d *Device) Flush() error {
	if !d.has(FeatureFlush) {
		return ErrNoFlush
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.Flushes++
	err := d.run(TypeFlush, 0, 0, 0)
	if f := d.errs.TakeFlush(); f != nil {
		err = f
	}
	return err
}

// FlushAsync starts a VIRTIO_BLK_T_FLUSH and returns without waiting for
// it (snapshot.AsyncFlusher): the caller writes on while the device makes
// the writes completed before it durable. A flush covers only writes that
// completed before it was submitted (the device orders nothing else), so
// the caller Syncs first. Sync does not wait for it; Flush and every
// synchronous request do. Each call starts a flush of its own, even while
// another is in flight (which does not cover the writes completed since
// it was submitted); it waits only while every slot or descriptor is
// taken.
//
// Each error is reported once: a failed earlier flush's is returned here
// (without starting one) or by the next Sync or Flush; a timeout or
// protocol violation is returned by the call that waited for it, which
// reset the device. Without VIRTIO_BLK_F_FLUSH it returns ErrNoFlush, as
// Flush does.
func (d *Device) FlushAsync() error {
	if !d.has(FeatureFlush) {
		return ErrNoFlush
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(true); err != nil {
		return err
	}
	d.stats.Flushes++
	for len(d.freeSlot) == 0 || !d.submit(TypeFlush, 0, nil, true) {
		if d.inflight == 0 {
			return errors.New("virtio-blk: internal error: request does not fit the queue")
		}
		if err := d.reap(); err != nil {
			return err
		}
	}
	d.t.Notify(0)
	return nil
}

// ID returns the device serial (VIRTIO_BLK_T_GET_ID), NUL padding removed.
func (d *Device) ID() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	off := d.slots * (hdrSize + 1)
	if err := d.run(TypeGetID, 0, d.hdrPA+uint64(off), idLen); err != nil {
		return "", err
	}
	id := d.hdr[off : off+idLen]
	for i, c := range id {
		if c == 0 {
			id = id[:i]
			break
		}
	}
	return string(id), nil
}

func (d *Device) io(typ uint32, p []byte, off int64) (int, error) {
	if err := snapshot.CheckRequest(d.sector, d.size, len(p), off); err != nil {
		return 0, fmt.Errorf("virtio-blk: %w", err)
	}
	if len(p) == 0 {
		return 0, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if pa, ok := d.phys(p); ok {
		if err := d.run(typ, uint64(off)>>SectorShift, pa, len(p)); err != nil {
			return 0, err
		}
		d.count(typ, len(p))
		return len(p), nil
	}
	if d.bounce == nil {
		pa, buf, err := d.dma.Alloc(d.opt.BounceSize, 4096)
		if err != nil {
			return 0, fmt.Errorf("virtio-blk: bounce buffer: %w", err)
		}
		if n := len(buf) / d.sector * d.sector; n > 0 {
			d.bouncePA, d.bounce = pa, buf[:n]
		} else {
			return 0, errors.New("virtio-blk: bounce buffer smaller than a sector")
		}
	}
	for done := 0; done < len(p); {
		chunk := p[done:min(len(p), done+len(d.bounce))]
		if typ == TypeOut {
			copy(d.bounce, chunk)
		}
		if err := d.run(typ, uint64(off+int64(done))>>SectorShift, d.bouncePA, len(chunk)); err != nil {
			return done, err
		}
		if typ == TypeIn {
			copy(chunk, d.bounce)
		}
		done += len(chunk)
		d.count(typ, len(chunk))
		d.stats.BytesBounced += uint64(len(chunk))
	}
	return len(p), nil
}

func (d *Device) phys(p []byte) (uint64, bool) {
	if d.opt.Phys == nil {
		return 0, false
	}
	return d.opt.Phys(p)
}

func (d *Device) count(typ uint32, n int) {
	if typ == TypeIn {
		d.stats.BytesRead += uint64(n)
	} else {
		d.stats.BytesWritten += uint64(n)
	}
}

// run performs a transfer of n bytes at physical address pa, starting at
// 512-byte sector sec, as requests of at most reqLen bytes with up to
// d.slots in flight, and waits for them. n = 0 issues one request without
// data. On a device error it stops submitting, waits for the requests in
// flight and returns the first error. On a timeout or a protocol violation
// it resets and reinitialises the device, so that no buffer is accessed
// after return. Writes started by WriteAsync, and flushes FlushAsync
// started, are completed first (their errors are kept for Sync, and for
// Sync, FlushAsync or Flush).
func (d *Device) run(typ uint32, sec uint64, pa uint64, n int) error {
	return d.runV(typ, sec, []extent{{pa, n}}, n)
}

// runV is run of the n bytes of memory ext describes.
func (d *Device) runV(typ uint32, sec uint64, ext []extent, n int) error {
	if err := d.settle(); err != nil {
		return err
	}
	if err := d.transferV(typ, sec, ext, n); err != nil {
		return err
	}
	for d.inflight > 0 {
		if err := d.reap(); err != nil {
			return err
		}
	}
	err := d.ioErr
	d.ioErr = nil
	return err
}

// settle waits for every request started asynchronously, the flushes
// FlushAsync started included (see wait).
func (d *Device) settle() error { return d.wait(true) }

// wait waits for the reads and writes started asynchronously and, if
// flushes, for the flushes FlushAsync started; it moves the first failed
// status of the reads and writes to errs (reap keeps a flush's there
// too) and reinitialises a device a failure left broken. A timeout
// or protocol violation while waiting resets the device, which drops
// every request in flight (see lost).
func (d *Device) wait(flushes bool) error {
	for d.inflight > 0 && (flushes || d.inflight > d.flushing) {
		rw := d.inflight > d.flushing
		if err := d.reap(); err != nil {
			d.errs.Lost(err, rw) // the device was reset: nothing is in flight
		}
	}
	d.errs.Keep(d.ioErr)
	d.ioErr = nil
	if d.broken != nil {
		return d.restart()
	}
	return nil
}

// transfer submits the requests of a transfer (see run) and notifies the
// device, reaping completions while the queue is full. It returns when
// the last request is submitted, or a failed status stopped it (ioErr),
// or with the error of a timeout or protocol violation (the device was
// reset: nothing is in flight).
func (d *Device) transfer(typ uint32, sec uint64, pa uint64, n int) error {
	return d.transferV(typ, sec, []extent{{pa, n}}, n)
}

// extent is n bytes of memory at physical address pa.
type extent struct {
	pa uint64
	n  int
}

// cut returns the extents of bytes [from, from+n) of the memory ext
// describes, appended to out.
func cut(ext []extent, from, n int, out []extent) []extent {
	for _, e := range ext {
		if n == 0 {
			break
		}
		if from >= e.n {
			from -= e.n
			continue
		}
		k := min(e.n-from, n)
		out = append(out, extent{e.pa + uint64(from), k})
		from, n = 0, n-k
	}
	return out
}

// descs is the number of data descriptors that ext takes.
func (d *Device) descs(ext []extent) int {
	k := 0
	for _, e := range ext {
		k += (e.n + d.segLen - 1) / d.segLen
	}
	return k
}

// transferV is transfer of the n bytes of memory ext describes.
func (d *Device) transferV(typ uint32, sec uint64, ext []extent, n int) error {
	submitted := false
	part := d.part[:0]
	for pos, first := 0, true; (pos < n || first) && d.ioErr == nil; {
		k := d.partLen(ext, pos, n)
		if n > 0 && k == 0 {
			return errors.New("virtio-blk: internal error: request segments do not fit a request")
		}
		part = cut(ext, pos, k, part[:0])
		if len(d.freeSlot) > 0 && d.submit(typ, sec+uint64(pos>>SectorShift), part, false) {
			pos += k
			first = false
			submitted = true
			continue
		}
		if submitted {
			d.t.Notify(0)
			submitted = false
		}
		if d.inflight == 0 {
			return errors.New("virtio-blk: internal error: request does not fit the queue")
		}
		if err := d.reap(); err != nil {
			return err
		}
	}
	if submitted {
		d.t.Notify(0)
	}
	d.part = part[:0] // kept: no garbage per transfer
	return nil
}

// reap waits for one completion, frees its slot and records a failed
// status in ioErr, or in errs for a flush FlushAsync started. A
// timeout or a protocol violation resets the device (every request in
// flight is dropped) and is returned.
func (d *Device) reap() error {
	last := d.opt.Now()
	for {
		u, ok, err := d.q.Poll()
		if err != nil {
			return d.abort(err)
		}
		if !ok {
			if d.opt.Now()-last > d.opt.Timeout {
				d.stats.Timeouts++
				s := slices.Index(d.slotBusy, true)
				return d.abort(fmt.Errorf("%w after %v (%s)", ErrTimeout, d.opt.Timeout, d.describe(s)))
			}
			if idle := d.idle; idle != nil {
				d.mu.Unlock()
				idle()
				d.mu.Lock()
			}
			continue
		}
		d.inflight--
		s := d.headSlot[u.Head]
		d.freeSlot = append(d.freeSlot, s)
		d.slotBusy[s] = false
		st := d.hdr[d.slots*hdrSize+s]
		if d.slotBg[s] {
			d.flushing--
			if st != StatusOK {
				d.stats.Errors++
				d.errs.KeepFlush(fmt.Errorf("virtio-blk: %s: %s", d.describe(s), statusText(st)))
			}
			return nil
		}
		if st != StatusOK && d.ioErr == nil {
			d.stats.Errors++
			d.ioErr = fmt.Errorf("virtio-blk: %s: %s", d.describe(s), statusText(st))
		}
		return nil
	}
}

// SetIdle makes waits for the device call f between polls, with the
// device's lock released (snapshot.Idler): a live save runs the guest
// there. f must not use the device. nil stops it.
func (d *Device) SetIdle(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.idle = f
}

// WriteAsync starts writing p at off and returns while the device works:
// the caller hashes or fills another buffer meanwhile (the snapshot
// store's pipelined writes, snapshot.AsyncWriter). p must not change until
// Sync returns. A buffer the device cannot reach directly is written
// synchronously through the bounce buffer instead.
func (d *Device) WriteAsync(p []byte, off int64) error {
	if d.has(FeatureRO) {
		return ErrReadOnly
	}
	if err := snapshot.CheckRequest(d.sector, d.size, len(p), off); err != nil {
		return fmt.Errorf("virtio-blk: %w", err)
	}
	if len(p) == 0 {
		return nil
	}
	pa, ok := d.phys(p)
	if !ok {
		_, err := d.WriteAt(p, off)
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Each error is reported once: an earlier write's here (not again by
	// Sync), this one's own here.
	if err := d.ready(false); err != nil {
		return err
	}
	if err := d.transfer(TypeOut, uint64(off)>>SectorShift, pa, len(p)); err != nil {
		return err
	}
	d.count(TypeOut, len(p))
	return nil
}

// WriteVAsync starts writing the concatenation of segs at off, as
// WriteAsync does (snapshot.VectorWriter): each segment is described by
// its own descriptors, so the memory is written in place. started is
// false, with nothing started, when a segment has no physical address or
// a request would take more descriptors than the device accepts
// (seg_max, the queue size).
func (d *Device) WriteVAsync(segs [][]byte, off int64) (started bool, err error) {
	if d.has(FeatureRO) {
		return false, ErrReadOnly
	}
	return d.startV(TypeOut, segs, off)
}

// ReadVAsync starts reading the bytes at off into the concatenation of
// segs and may return before they are there (snapshot.AsyncReader): they
// are after Sync returns nil. The segments are described as for ReadV
// (started false, nothing started); errors are reported once, as for
// WriteAsync.
func (d *Device) ReadVAsync(segs [][]byte, off int64) (started bool, err error) {
	return d.startV(TypeIn, segs, off)
}

// startV starts the transfer typ of segs at off without waiting for it
// (WriteVAsync, ReadVAsync): Sync waits.
func (d *Device) startV(typ uint32, segs [][]byte, off int64) (started bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ext, n, ok, err := d.gather(segs, off)
	if !ok || err != nil || n == 0 {
		return ok, err
	}
	// Each error is reported once, as by WriteAsync.
	if err := d.ready(false); err != nil {
		return false, err
	}
	if err := d.transferV(typ, uint64(off)>>SectorShift, ext, n); err != nil {
		return true, err
	}
	d.count(typ, n)
	return true, nil
}

// ReadV reads the n bytes at off into the concatenation of segs, in
// place (snapshot.VectorReader): a restore reads a block's partial
// sectors and its guest pages in one request. done is false, with
// nothing read, when the segments cannot be described (as WriteVAsync).
func (d *Device) ReadV(segs [][]byte, off int64) (done bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ext, n, ok, err := d.gather(segs, off)
	if !ok || err != nil || n == 0 {
		return ok, err
	}
	if err := d.runV(TypeIn, uint64(off)>>SectorShift, ext, n); err != nil {
		return true, err
	}
	d.count(TypeIn, n)
	return true, nil
}

// gather returns the physical extents of segs (physically adjacent ones
// joined) and their length n, checked as a request at off; ok is false
// when a segment has no physical address or a request would take more
// descriptors than the device accepts. The extents are d.ext's.
func (d *Device) gather(segs [][]byte, off int64) (ext []extent, n int, ok bool, err error) {
	ext = d.ext[:0]
	for _, p := range segs {
		if len(p) == 0 {
			continue
		}
		pa, ok := d.phys(p)
		if !ok {
			return nil, 0, false, nil
		}
		if k := len(ext) - 1; k >= 0 && ext[k].pa+uint64(ext[k].n) == pa {
			ext[k].n += len(p) // physically adjacent: one extent
		} else {
			ext = append(ext, extent{pa, len(p)})
		}
		n += len(p)
	}
	d.ext = ext
	if err := snapshot.CheckRequest(d.sector, d.size, n, off); err != nil {
		return nil, 0, false, fmt.Errorf("virtio-blk: %w", err)
	}
	for pos := 0; pos < n; {
		k := d.partLen(ext, pos, n)
		if k == 0 {
			return nil, 0, false, nil
		}
		pos += k
	}
	return ext, n, true, nil
}

// partLen is the length of the request that takes the bytes from pos of
// the n bytes ext describes: as many as one request holds (reqLen bytes,
// segMax data descriptors), in whole sectors. Scattered memory (many
// extents) is cut into more, shorter requests. 0: not one sector fits
// (an extent boundary inside the first sector past what fits).
func (d *Device) partLen(ext []extent, pos, n int) int {
	pos0 := pos
	limit := min(n-pos, d.reqLen)
	took, descs := 0, 0
	for _, e := range ext {
		if took == limit {
			break
		}
		if pos >= e.n {
			pos -= e.n
			continue
		}
		k := min(e.n-pos, limit-took)
		if need := (k + d.segLen - 1) / d.segLen; descs+need > d.segMax {
			took += min(k, (d.segMax-descs)*d.segLen)
			break
		} else {
			descs += need
		}
		took += k
		pos = 0
	}
	if took == n-pos0 {
		return took // the rest, whole (a request without sectors: GetID)
	}
	return took / d.sector * d.sector
}

// Sync waits for every read and write started asynchronously (WriteAsync,
// WriteVAsync, ReadVAsync), not for the flushes FlushAsync started, and
// returns the first error among them, else that of a failed flush
// FlushAsync started; each once (a flush's error that comes with a
// write's is dropped: the Sync failed anyway).
func (d *Device) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.wait(false)
	if e := d.errs.TakeAll(); e != nil {
		err = e
	}
	return err
}

// submit queues one request; false if the queue lacks descriptors. bg
// marks a flush FlushAsync started.
func (d *Device) submit(typ uint32, sec uint64, ext []extent, bg bool) bool {
	n := 0
	for _, e := range ext {
		n += e.n
	}
	if d.q.NumFree() < d.descs(ext)+2 {
		return false
	}
	s := d.freeSlot[len(d.freeSlot)-1]
	h := d.hdr[s*hdrSize : (s+1)*hdrSize]
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], 0)
	binary.LittleEndian.PutUint64(h[8:], sec)
	d.hdr[d.slots*hdrSize+s] = 0xff // overwritten by the device
	b := append(d.bufs[:0], virtio.Buf{Addr: d.hdrPA + uint64(s*hdrSize), Len: hdrSize})
	for _, e := range ext {
		for pos := 0; pos < e.n; pos += d.segLen {
			b = append(b, virtio.Buf{Addr: e.pa + uint64(pos), Len: uint32(min(e.n-pos, d.segLen)), Write: typ != TypeOut})
		}
	}
	b = append(b, virtio.Buf{Addr: d.hdrPA + uint64(d.slots*hdrSize+s), Len: 1, Write: true})
	head, err := d.q.Submit(b)
	if err != nil {
		return false
	}
	d.freeSlot = d.freeSlot[:len(d.freeSlot)-1]
	d.headSlot[head] = s
	d.slotSec[s], d.slotLen[s], d.slotTyp[s], d.slotBusy[s], d.slotBg[s] = sec, n, typ, true, bg
	d.inflight++
	if bg {
		d.flushing++
	}
	d.stats.Requests++
	return true
}

func (d *Device) describe(s int) string {
	var typ uint32
	if s >= 0 {
		typ = d.slotTyp[s]
	}
	switch {
	case s < 0:
	case typ == TypeIn || typ == TypeOut:
		op := "read"
		if typ == TypeOut {
			op = "write"
		}
		end := d.slotSec[s] + uint64(d.slotLen[s]>>SectorShift) - 1
		return fmt.Sprintf("%s of sectors %d-%d", op, d.slotSec[s], end)
	case typ == TypeFlush:
		return "flush"
	case typ == TypeGetID:
		return "get ID"
	}
	return fmt.Sprintf("request type %d", typ)
}

func statusText(st byte) string {
	switch st {
	case StatusIOErr:
		return "I/O error (VIRTIO_BLK_S_IOERR)"
	case StatusUnsupp:
		return "unsupported (VIRTIO_BLK_S_UNSUPP)"
	}
	return fmt.Sprintf("bad status %#x", st)
}

// abort resets and reinitialises the device after a timeout or protocol
// violation and returns err (joined with any reinitialisation error).
func (d *Device) abort(err error) error {
	d.stats.Errors++
	if rerr := d.restart(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// ready begins an operation started asynchronously: it returns the error
// kept for this call to report (a flush's for FlushAsync, else a read's
// or write's: blkio.AsyncErrors), else restarts a device a failure left
// broken.
func (d *Device) ready(flush bool) error {
	var err error
	if flush {
		err = d.errs.TakeFlush()
	} else {
		err = d.errs.Take()
	}
	if err == nil && d.broken != nil {
		err = d.restart()
	}
	return err
}

func (d *Device) restart() error {
	d.stats.Resets++
	// Whatever start gets to, no request of before the reset is in flight
	// any more: a failed reinitialisation must not leave them counted
	// (settle would wait for them forever). Nothing is submitted while
	// the device is broken.
	d.forget()
	if err := d.start(); err != nil {
		d.broken = fmt.Errorf("virtio-blk: reinitialisation failed: %w", err)
		return d.broken
	}
	d.broken = nil
	return nil
}
