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
	fuzzNormalLo = 160 // fault bytes below this leave the command alone
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
// or failed completions, fatal status) interleaved with reads, writes and
// flushes. The driver must return or fail, never hang or panic; it must
// leave no command in the controller when a call returns; successful
// reads must match a model of the disk, and failed writes may change only
// their own range. The fake clock advances on every read, so timeouts
// fire after a few polls.
func FuzzCompletions(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 3})
	f.Add([]byte{0x4b, 2, 5, 0, 7, 200, 1, 9, 1, 2, 0, 0, 0, 0, 250})
	f.Add([]byte{0x92, 1, 0, 0, 5, 161, 0, 2, 3, 7, 163, 167, 1, 4, 4, 4, 0, 168})
	f.Add([]byte{0x2c, 1, 16, 0, 7, 0, 0, 0, 0, 0, 164, 1, 16, 0, 7, 165, 166, 169})
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
		model := bytes.Clone(fk.disk)
		sector := d.SectorSize()
		for range fuzzMaxOps {
			if len(in.b) < 4 {
				break
			}
			op, lo, hi, ln := in.next(), in.next(), in.next(), in.next()
			off := (int(lo) | int(hi)<<8) % (fuzzDisk / sector) * sector
			n := min((int(ln)%fuzzMaxSecs+1)*sector, fuzzDisk-off)
			mark := a.next
			var p []byte
			if op&4 != 0 {
				p = make([]byte, n) // Go heap: bounced
			} else {
				p = a.buf(n, int(ln)/fuzzMaxSecs%2*sector%pageSize)
			}
			switch op % 3 {
			case 0:
				if _, err := d.ReadAt(p, int64(off)); err == nil && !bytes.Equal(p, model[off:off+n]) {
					t.Fatalf("read %d@%d succeeded with wrong data", n, off)
				}
			case 1:
				for i := range p {
					p[i] = byte(i) ^ op ^ lo
				}
				_, err := d.WriteAt(p, int64(off))
				if err == nil {
					copy(model[off:], p)
				} else {
					copy(model[off:off+n], fk.disk[off:])
				}
				if !bytes.Equal(fk.disk, model) {
					t.Fatalf("write %d@%d (%v): disk differs from model", n, off, err)
				}
			case 2:
				d.Flush()
			}
			a.next = mark
			if c := fk.outstanding(); c != 0 {
				t.Fatalf("op %d: controller holds %d commands after the call returned", op%3, c)
			}
		}
		// Without faults the device works again, at the latest after the
		// next request found leftovers (a duplicate completion) and reset.
		fk.fault = nil
		p := a.buf(sector, 0)
		for i := range p {
			p[i] = byte(i)
		}
		if _, err := d.WriteAt(p, 0); err != nil {
			if _, err := d.WriteAt(p, 0); err != nil {
				t.Fatalf("write after the faults: %v", err)
			}
		}
		q := a.buf(sector, 0)
		if _, err := d.ReadAt(q, 0); err != nil || !bytes.Equal(p, q) {
			t.Fatalf("read after the faults: %v", err)
		}
	})
}
