package blk

import (
	"bytes"
	"testing"
)

// FuzzIO runs random reads, writes, flushes (some started by FlushAsync,
// completed by the next request) and Syncs, some failing, some through
// the bounce buffer, against a model of the disk.
func FuzzIO(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{255, 17, 3, 128, 9, 200, 31, 64})
	// A write, FlushAsync (19), Sync with the flush in flight (35), a read
	// that waits for it, a write, FlushAsync and Flush.
	f.Add([]byte{2, 0, 1, 7, 19, 0, 0, 0, 35, 0, 0, 0, 0, 0, 1, 7, 2, 0, 9, 3, 19, 0, 0, 0, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t, func(fk *fakeBlk, o *Options) {
			fk.features |= 1<<FeatureSizeMax | 1<<FeatureSegMax
			fk.sizeMax, fk.segMax, fk.qmax = 3072, 3, 16
			o.Now = fk.lazyClock()
			o.MaxRequest = 8 << 10
			o.BounceSize = 16 << 10
		})
		model := r.diskCopy()
		for len(ops) >= 4 {
			op, sec, n := ops[0], int64(ops[1])<<8|int64(ops[2]), (int(ops[3])%64+1)*512
			ops = ops[4:]
			off := sec * 512 % (diskSize - 64*512)
			bad := op&8 != 0
			r.f.set(func() {
				r.f.errLo, r.f.errHi = 0, 0
				if bad {
					r.f.errLo, r.f.errHi = uint64(off/512), uint64(off/512)+1
				}
			})
			p := make([]byte, n)
			if op&4 != 0 {
				p = r.a.buf(n)
			}
			switch op % 4 {
			case 0, 1:
				_, err := r.d.ReadAt(p, off)
				if (err != nil) != bad || (!bad && !bytes.Equal(p, model[off:off+int64(n)])) {
					t.Fatalf("read %d@%d: %v", n, off, err)
				}
			case 2:
				for i := range p {
					p[i] = byte(i) ^ op
				}
				_, err := r.d.WriteAt(p, off)
				if (err != nil) != bad {
					t.Fatalf("write %d@%d: %v", n, off, err)
				}
				if !bad {
					copy(model[off:], p)
				} else { // partly written: only [off, off+n) may change
					disk := r.diskCopy()
					copy(model[off:off+int64(n)], disk[off:])
					if !bytes.Equal(disk, model) {
						t.Fatalf("failed write %d@%d changed data outside its range", n, off)
					}
				}
			case 3: // a flush, started (op&16: the next request waits for it) or done, or a Sync
				var err error
				switch {
				case op&16 != 0:
					err = r.d.FlushAsync()
				case op&32 != 0:
					err = r.d.Sync() // nothing to wait for but a flush, if that
				default:
					err = r.d.Flush()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			// Only FlushAsync and Sync may leave flushes in flight.
			if in, fl := r.d.inflight, r.d.flushing; in != fl || fl != 0 && (op%4 != 3 || op&48 == 0) {
				t.Fatalf("op %d: %d requests in flight, %d flushes", op, in, fl)
			}
			if op&4 != 0 {
				r.a.next -= n
			}
		}
		if !bytes.Equal(r.diskCopy(), model) {
			t.Fatal("disk differs from model")
		}
	})
}
