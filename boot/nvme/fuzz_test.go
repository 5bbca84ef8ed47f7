package nvme

import (
	"bytes"
	"testing"
	"time"
)

const (
	fuzzDisk     = 256 << 10
	fuzzArena    = 1 << 20
	fuzzStep     = 100 * time.Millisecond // per clock read: CAP.TO of 500 ms is 5 reads
	fuzzTimeout  = 10 * fuzzStep
	fuzzMaxOps   = 24
	fuzzMaxSecs  = 8
	fuzzNormalLo = 160       // fault bytes below this leave the command alone
	fuzzHeadroom = 128 << 10 // arena left for a WriteAsync buffer, its copied segment and the bounce buffer
	fuzzVector   = 0x80      // in the offset's high byte (beyond the disk): WriteVAsync
	fuzzStartFl  = 0x80      // in the operation byte of a flush: FlushAsync
)

// stream hands out fuzz bytes, then zeros.
type stream struct{ b []byte }

func (s *stream) next() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

// FuzzCompletions drives the driver against a controller whose behaviour
// comes from the fuzz bytes: geometry, MDTS, queue size and doorbell
// stride, then per command a fault (dropped, hung, duplicated, corrupted
// or failed completions, fatal status) interleaved with reads, writes,
// flushes (Flush, or FlushAsync: the batch goes on while it runs) and
// batches of asynchronous writes (WriteAsync, or WriteVAsync of the buffer
// cut into segments, some copied elsewhere, ended by Sync), with an idle
// hook that checks the device's lock is released. The driver must return
// or fail, never hang or panic; it must leave no command in the
// controller when a synchronous call returns, and none but flushes after
// Sync; successful reads must match the disk; failed writes may change
// only their own range; a batch whose WriteAsync, FlushAsync and Sync
// calls all succeeded must be on the disk. The fake clock advances on
// every read, so timeouts fire after a few polls.
func FuzzCompletions(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 3})
	f.Add([]byte{0x4b, 2, 5, 0, 7, 200, 1, 9, 1, 2, 0, 0, 0, 0, 250})
	f.Add([]byte{0x92, 1, 0, 0, 5, 161, 0, 2, 3, 7, 163, 167, 1, 4, 4, 4, 0, 168})
	f.Add([]byte{0x2c, 1, 16, 0, 7, 0, 0, 0, 0, 0, 164, 1, 16, 0, 7, 165, 166, 169})
	f.Add([]byte{0x81, 3, 0, 0, 7, 3, 8, 0, 7, 0, 4, 0, 3, 3, 16, 0, 7, 4, 0, 0, 0})
	f.Add([]byte{0x08, 3, 0, 0, 7, 162, 3, 8, 0, 7, 1, 4, 0, 1, 4, 0, 0, 0})
	// WriteVAsync: two extents in one command; four commands of 8 KiB
	// across two extents and an empty segment; joined segments; refused
	// (a second extent that starts mid-page).
	f.Add([]byte{0x00, 0, 0, 0, 0, 0, 3, 0, 0x88, 15, 0, 4, 0, 0, 0})
	f.Add([]byte{0x1b, 0, 0, 0, 0, 0, 3, 0, 0xa8, 7, 0, 0, 0, 0, 4, 0, 0, 0})
	f.Add([]byte{0x1b, 0, 0, 0, 0, 0, 3, 0, 0x86, 7, 0, 0, 0, 0, 4, 0, 0, 0})
	f.Add([]byte{0x00, 0, 0, 0, 0, 0, 3, 0, 0x98, 15, 0, 4, 0, 0, 0})
	// FlushAsync (0x84) between asynchronous writes, ended by Sync and
	// Flush (volatile write cache, 32-entry queue): in order; its Flush
	// failed; its Flush hung (Sync returns, Flush times out); lazily.
	f.Add([]byte{0x58, 0, 0, 0, 0, 0, 3, 0, 0, 7, 0, 4, 0, 0, 0, 0x84, 0, 0, 0, 0, 3, 16, 0, 7, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0})
	f.Add([]byte{0x58, 0, 0, 0, 0, 0, 3, 0, 0, 7, 0, 4, 0, 0, 0, 0x84, 0, 0, 0, 163, 3, 16, 0, 7, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0})
	f.Add([]byte{0x58, 0, 0, 0, 0, 0, 3, 0, 0, 7, 0, 4, 0, 0, 0, 0x84, 0, 0, 0, 162, 3, 16, 0, 7, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0})
	f.Add([]byte{0xd8, 0, 0, 0, 0, 0, 3, 0, 0, 7, 4, 0, 0, 0, 0, 0x84, 0, 0, 0, 3, 16, 0, 7, 4, 0, 0, 0, 0, 0, 0x84, 0, 0, 0, 1, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &stream{data}
		cfg := in.next()
		a := newArena(fuzzArena)
		fk := newFake(t, a, fuzzDisk)
		fk.to = 1
		if cfg&1 != 0 {
			fk.lbads = maxLBAShift
		}
		fk.mdts = cfg >> 1 & 3
		fk.mqes = []uint16{1, 3, 7, 31}[cfg>>3&3]
		fk.dstrd = cfg >> 5 & 1
		fk.vwc = cfg&0x40 != 0
		if cfg&0x80 != 0 {
			fk.mode = modeLazy
		}
		fk.fault = func(q int, op byte) action {
			b := in.next()
			if b < fuzzNormalLo {
				return actNormal
			}
			fk.status = uint16(b)<<3 | uint16(b&7) // any SCT, SC, and sometimes DNR
			fk.badSQHD = int(b) % 64
			return action(b % byte(numActions))
		}
		opt := Options{Phys: a.phys, Timeout: fuzzTimeout, Now: fk.clock(fuzzStep), MaxRequest: 16 << 10, BounceSize: 16 << 10}
		d, err := New(fk, a, opt)
		if n := fk.outstanding(); n != 0 {
			t.Fatalf("New (%v) left %d commands in the controller", err, n)
		}
		if err != nil {
			return
		}
		d.SetIdle(func() {
			if !d.mu.TryLock() {
				t.Fatal("idle hook called with the device's lock held")
			}
			d.mu.Unlock()
		})
		b := &batch{t: t, d: d, fk: fk, model: bytes.Clone(fk.disk), base: a.next}
		sector := d.SectorSize()
		for range fuzzMaxOps {
			if len(in.b) < 4 {
				break
			}
			op, lo, hi, ln := in.next(), in.next(), in.next(), in.next()
			off := (int(lo) | int(hi)<<8) % (fuzzDisk / sector) * sector
			n := min((int(ln)%fuzzMaxSecs+1)*sector, fuzzDisk-off)
			if op%fuzzOps == opWriteAsync && (len(a.mem)-a.next < fuzzHeadroom || b.overlaps(off, n)) {
				b.end(a) // its buffers stay until Sync; its writes do not overlap
			}
			mark := a.next
			var p []byte
			if op&4 != 0 {
				p = make([]byte, n) // Go heap: bounced
			} else {
				p = a.buf(n, int(ln)/fuzzMaxSecs%2*sector%pageSize)
			}
			switch op % fuzzOps {
			case opRead:
				if _, err := d.ReadAt(p, int64(off)); err == nil && !bytes.Equal(p, fk.disk[off:off+n]) {
					t.Fatalf("read %d@%d succeeded with wrong data", n, off)
				}
				if len(b.pending) == 0 && !bytes.Equal(fk.disk, b.model) {
					t.Fatalf("read %d@%d: disk differs from model", n, off)
				}
			case opWrite:
				for i := range p {
					p[i] = byte(i) ^ op ^ lo
				}
				_, err := d.WriteAt(p, int64(off))
				b.written(off, n)
				if err == nil {
					copy(b.model[off:], p)
				} else {
					copy(b.model[off:off+n], fk.disk[off:])
				}
				if len(b.pending) == 0 && !bytes.Equal(fk.disk, b.model) || !bytes.Equal(fk.disk[off:off+n], b.model[off:off+n]) {
					t.Fatalf("write %d@%d (%v): disk differs from model", n, off, err)
				}
			case opFlush:
				if op&fuzzStartFl == 0 {
					d.Flush()
				} else if d.FlushAsync() != nil {
					b.failed = true // a reset on the way may have dropped the batch's writes
				}
			case opWriteAsync:
				for i := range p {
					p[i] = byte(i) ^ op ^ hi
				}
				started, err := false, error(nil)
				if hi&fuzzVector != 0 {
					stats := d.Stats()
					started, err = d.WriteVAsync(segments(a, p, hi, sector), int64(off))
					if !started && (err != nil || d.Stats() != stats) {
						t.Fatalf("a refused WriteVAsync %d@%d started something (%v)", n, off, err)
					}
				}
				if !started { // as the snapshot store does
					err = d.WriteAsync(p, int64(off))
				}
				if err != nil {
					b.failed = true
				}
				b.pending = append(b.pending, pendingWrite{off: off, data: bytes.Clone(p)})
				if op&4 == 0 || started {
					mark = a.next // the controller may still read p and the segments
				}
			case opSync:
				b.end(a)
				mark = a.next
			}
			b.release(a, mark)
			started := op%fuzzOps == opWriteAsync || op%fuzzOps == opFlush && op&fuzzStartFl != 0
			if flushes, others := fk.outstandingOps(); !started && others != 0 || op%fuzzOps != opSync && !started && flushes != 0 {
				t.Fatalf("op %d (%#x): controller holds %d flushes and %d other commands after the call returned", op%fuzzOps, op, flushes, others)
			}
		}
		b.end(a)
		// Without faults the device works again, at the latest after the
		// next request found leftovers (a duplicate completion) and reset.
		fk.fault = nil
		p := a.buf(sector, 0)
		for i := range p {
			p[i] = byte(i)
		}
		if err := d.WriteAsync(p, 0); err != nil || d.Sync() != nil {
			if err := d.WriteAsync(p, 0); err != nil {
				t.Fatalf("WriteAsync after the faults: %v", err)
			}
			if err := d.Sync(); err != nil {
				t.Fatalf("Sync after the faults: %v", err)
			}
		}
		q := a.buf(sector, 0)
		if _, err := d.ReadAt(q, 0); err != nil || !bytes.Equal(p, q) {
			t.Fatalf("read after the faults: %v", err)
		}
	})
}

// segments cuts p into segments for WriteVAsync as bits 1-5 of h say: at
// the end of p's first memory page, after a sector, in the middle or at
// an odd byte; the rest in place (joined) or copied to another buffer,
// which starts on a page boundary or not; with an empty segment between
// them or not.
func segments(a *arena, p []byte, h byte, sector int) [][]byte {
	pa, _ := a.phys(p)
	cuts := []int{pageSize - int(pa&pageMask), sector, len(p) / 2 &^ (prpAlign - 1), len(p)/2 + 1}
	cut := min(cuts[h>>1&3], len(p))
	rest := p[cut:]
	if h>>3&1 != 0 {
		rest = a.buf(len(rest), int(h>>4&1)*pageSize/2)
		copy(rest, p[cut:])
	}
	if h>>5&1 != 0 {
		return [][]byte{p[:cut], nil, rest}
	}
	return [][]byte{p[:cut], rest}
}

// Fuzz operations: the operation byte modulo fuzzOps.
const (
	opRead = iota
	opWrite
	opFlush
	opWriteAsync
	opSync
	fuzzOps
)

// pendingWrite is a WriteAsync of a batch: its range and data, and which
// of its bytes a later synchronous write overwrote.
type pendingWrite struct {
	off     int
	data    []byte
	settled []bool
}

// batch models the asynchronous writes since the last Sync: their
// outcome is known only at Sync (or at a WriteAsync that returns an
// earlier one's error), so until then their ranges are left out of the
// comparison of the disk with the model.
type batch struct {
	t       *testing.T
	d       *Device
	fk      *fakeNVMe
	model   []byte
	base    int // arena mark before any test buffer
	pending []pendingWrite
	failed  bool // a WriteAsync or FlushAsync of the batch returned an error
}

func (b *batch) overlaps(off, n int) bool {
	for _, w := range b.pending {
		if off < w.off+len(w.data) && w.off < off+n {
			return true
		}
	}
	return false
}

// written notes a synchronous write of [off, off+n): it completed the
// batch's writes first, so its bytes are the model's, not theirs.
func (b *batch) written(off, n int) {
	for k := range b.pending {
		w := &b.pending[k]
		lo, hi := max(off, w.off), min(off+n, w.off+len(w.data))
		if lo >= hi {
			continue
		}
		if w.settled == nil {
			w.settled = make([]bool, len(w.data))
		}
		for i := lo; i < hi; i++ {
			w.settled[i-w.off] = true
		}
	}
}

// end syncs the batch: if every WriteAsync, FlushAsync and Sync
// succeeded, each write is on the disk; else their ranges may hold
// anything. Then the disk must equal the model and the test buffers are
// released. Sync may leave flushes FlushAsync started in the controller.
func (b *batch) end(a *arena) {
	err := b.d.Sync()
	if _, c := b.fk.outstandingOps(); c != 0 {
		b.t.Fatalf("Sync (%v) left %d commands other than flushes in the controller", err, c)
	}
	ok := err == nil && !b.failed
	for _, w := range b.pending {
		for i, v := range w.data {
			at := w.off + i
			if w.settled != nil && w.settled[i] {
				continue
			}
			if ok && b.fk.disk[at] != v {
				b.t.Fatalf("batch of %d writes synced, but byte %d of the one at %d is not on the disk", len(b.pending), i, w.off)
			}
			b.model[at] = b.fk.disk[at]
		}
	}
	if !bytes.Equal(b.fk.disk, b.model) {
		b.t.Fatalf("after a batch of %d writes (Sync %v): disk differs from model outside their ranges", len(b.pending), err)
	}
	b.pending, b.failed = b.pending[:0], false
	b.release(a, b.base)
}

// release frees the arena above mark for the next test buffers, but not
// the driver's bounce buffer if an operation allocated it there.
func (b *batch) release(a *arena, mark int) {
	a.next = mark
	if len(b.d.bounce) > 0 {
		a.next = max(mark, int(b.d.bouncePA-a.base)+len(b.d.bounce))
	}
}
