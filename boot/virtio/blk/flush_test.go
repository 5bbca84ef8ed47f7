package blk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"tamavisor/boot/blkio/blkiotest"
)

// fillRand writes random bytes into p.
func fillRand(rng *rand.Rand, p []byte) {
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

// flushState returns the driver's requests and flushes in flight and the
// flushes the fake holds.
func (r *rig) flushState() (inflight, flushing, held int) {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return r.d.inflight, r.d.flushing, len(r.f.held)
}

// driver is the rig's device for blkiotest.
func (r *rig) driver() blkiotest.Driver {
	return blkiotest.Driver{Sync: r.d.Sync, FlushAsync: r.d.FlushAsync, Flush: r.d.Flush,
		Flushes:  func() uint64 { return r.d.Stats().Flushes },
		InFlight: func() int { in, _, _ := r.flushState(); return in }}
}

// TestFlushAsync: FlushAsync returns with its flush in flight; writes
// started after it complete and Sync returns while the device still holds
// the flush; the device received the flush only after the writes synced
// before it had completed; Flush waits for the held flush before it
// submits its own.
func TestFlushAsync(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) {
		o.Now = f.lazyClock() // requests complete only when the driver waits
		o.MaxRequest = 64 << 10
		o.Timeout = 5 * time.Second // a Sync that waits for the held flush fails
	})
	rng := rand.New(rand.NewPCG(1, 2))
	first := r.a.buf(256 << 10)
	fillRand(rng, first)
	if err := r.d.WriteAsync(first, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	r.f.set(func() { r.f.holdFlushes = 1 })
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	if in, fl, _ := r.flushState(); in != 1 || fl != 1 {
		t.Fatalf("after FlushAsync: %d requests in flight, %d flushes; want the flush in flight", in, fl)
	}
	second := r.a.buf(256 << 10)
	fillRand(rng, second)
	if err := r.d.WriteAsync(second, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync while the device holds the flush: %v", err)
	}
	if in, fl, held := r.flushState(); in != 1 || fl != 1 || held != 1 {
		t.Fatalf("after Sync: %d requests in flight, %d flushes, the device holds %d; want only the held flush", in, fl, held)
	}
	if !bytes.Equal(r.diskCopy()[1<<20:][:len(second)], second) {
		t.Fatal("the writes after FlushAsync are not on the disk after Sync")
	}
	if st := r.d.Stats(); st.Timeouts != 0 || st.Resets != 0 {
		t.Fatalf("stats %+v: Sync waited for the flush", st)
	}
	r.f.release()
	if err := r.d.Flush(); err != nil {
		t.Fatal(err)
	}
	if in, fl, held := r.flushState(); in != 0 || fl != 0 || held != 0 {
		t.Fatalf("after Flush: %d requests in flight, %d flushes, the device holds %d", in, fl, held)
	}
	// The events: the first writes, the flush received and held, the
	// second writes, the held flush executed, then Flush's own.
	log := r.f.log()
	at := func(kind byte, typ uint32) int {
		for i, e := range log {
			if e.kind == kind && e.typ == typ {
				return i
			}
		}
		t.Fatalf("no event %c of type %d in %v", kind, typ, log)
		return -1
	}
	h := at('h', TypeFlush)
	for i, e := range log {
		if e.typ == TypeOut && (i > h) != (e.sector >= 1<<20>>SectorShift) {
			t.Fatalf("write of sector %d is event %d, the flush was received at %d: %v", e.sector, i, h, log)
		}
	}
	n := len(log)
	if log[n-2] != (event{'r', TypeFlush, 0}) || log[n-1] != (event{'x', TypeFlush, 0}) {
		t.Fatalf("events end %v, want the held flush executed, then Flush's (Flush did not wait for it)", log[max(n-4, 0):])
	}
	if st := r.d.Stats(); st.Flushes != 2 {
		t.Errorf("stats %+v, want 2 flushes", st)
	}
	if _, fl := r.f.counts(); fl != 2 {
		t.Errorf("the device executed %d flushes, want 2", fl)
	}
}

// TestFlushAsyncConfigs: writes, FlushAsync (after Sync, or with writes
// in flight: on a small queue it waits for a slot) and Sync interleaved on
// every configuration (completions in order, in reverse, from another
// goroutine): the data is on the disk, each FlushAsync reached the device,
// and Flush leaves nothing in flight.
func TestFlushAsyncConfigs(t *testing.T) {
	for name, setup := range configs() {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, setup)
			rng := rand.New(rand.NewPCG(3, 4))
			want := r.diskCopy()
			for i := range 6 {
				w := r.a.buf(96 << 10)
				fillRand(rng, w)
				off := int64(i) * (128 << 10)
				if err := r.d.WriteAsync(w, off); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], w)
				switch i {
				case 1, 3, 5: // as the store: the writes complete, then the flush starts
					if err := r.d.Sync(); err != nil {
						t.Fatal(err)
					}
					if err := r.d.FlushAsync(); err != nil {
						t.Fatal(err)
					}
				case 2, 4: // with writes in flight (or waiting for their slot)
					if err := r.d.FlushAsync(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := r.d.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := r.d.Flush(); err != nil {
				t.Fatal(err)
			}
			if in, fl, _ := r.flushState(); in != 0 || fl != 0 {
				t.Fatalf("after Flush: %d requests in flight, %d flushes", in, fl)
			}
			if !bytes.Equal(r.diskCopy(), want) {
				t.Fatal("disk contents differ from model")
			}
			if _, fl := r.f.counts(); fl != 6 || r.d.Stats().Flushes != 6 {
				t.Fatalf("device saw %d flushes, stats %+v; want 6", fl, r.d.Stats())
			}
		})
	}
}

// TestFlushAsyncError: a flush FlushAsync started that fails is reported
// once, by the first Sync, FlushAsync or Flush after the driver saw its
// completion; a FlushAsync that reports it starts no flush.
func TestFlushAsyncError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lazy     bool
		settle   func(r *rig) error // runs before the calls that may report it
		reporter string
	}{
		// Completions in reverse order: Sync reaps the write, not the
		// flush submitted before it; Flush does.
		{"Flush", true, nil, "Flush"},
		// Completions in order: Sync reaps the flush before the write.
		{"Sync", false, nil, "Sync"},
		// ReadAt waits for the flush and keeps its error.
		{"FlushAsync", false, func(r *rig) error { _, err := r.d.ReadAt(r.a.buf(4096), 0); return err }, "FlushAsync"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(f *fakeBlk, o *Options) {
				if tc.lazy {
					o.Now = f.lazyClock()
				}
			})
			r.f.set(func() { r.f.badFlush = true })
			if err := r.d.FlushAsync(); err != nil {
				t.Fatal(err)
			}
			w := r.a.buf(64 << 10)
			if err := r.d.WriteAsync(w, 0); err != nil {
				t.Fatal(err)
			}
			if tc.settle != nil {
				if err := tc.settle(r); err != nil {
					t.Fatalf("the operation that completes the flush: %v", err)
				}
			}
			blkiotest.FlushErrorReportedOnce(t, r.driver(), tc.settle != nil, tc.reporter,
				func(err error) bool { return strings.Contains(err.Error(), "flush: I/O error") },
				func(i int) {
					if i == 0 {
						r.f.set(func() { r.f.badFlush = false })
					}
				})
			if in, fl, _ := r.flushState(); in != 0 || fl != 0 {
				t.Fatalf("%d requests in flight, %d flushes", in, fl)
			}
		})
	}
}

// TestFlushAsyncTimeout: a flush FlushAsync started that the device never
// completes does not hold up Sync; Flush waits for it, times out, resets
// the device and reports the timeout once; a ReadAt that finds it hung
// reads on and leaves the timeout to Sync. The device works afterwards.
func TestFlushAsyncTimeout(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) { shortTimeout(o) })
	w := r.a.buf(64 << 10)
	fillRand(rand.New(rand.NewPCG(5, 6)), w)
	r.f.set(func() { r.f.holdFlushes = 1 })
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	if err := r.d.WriteAsync(w, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync with a hung flush in flight: %v", err)
	}
	if st := r.d.Stats(); st.Timeouts != 0 {
		t.Fatalf("Sync waited for the hung flush: %+v", st)
	}
	if err := r.d.Flush(); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "flush") {
		t.Fatalf("Flush after a hung FlushAsync: %v, want its timeout", err)
	}
	if in, fl, held := r.flushState(); in != 0 || fl != 0 || held != 0 {
		t.Fatalf("after the timeout: %d requests in flight, %d flushes, the device holds %d", in, fl, held)
	}
	for _, c := range []struct {
		name string
		f    func() error
	}{{"Sync", r.d.Sync}, {"Flush", r.d.Flush}, {"FlushAsync", r.d.FlushAsync}, {"Sync", r.d.Sync}, {"Flush", r.d.Flush}} {
		if err := c.f(); err != nil {
			t.Fatalf("%s after the timeout was reported: %v", c.name, err)
		}
	}
	if st := r.d.Stats(); st.Timeouts != 1 || st.Resets != 1 {
		t.Errorf("stats %+v", st)
	}

	// A ReadAt finds the hung flush: it reads after the reset, and the
	// next Sync reports the timeout.
	r.f.set(func() { r.f.holdFlushes = 1 })
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	g := r.a.buf(len(w))
	if _, err := r.d.ReadAt(g, 0); err != nil || !bytes.Equal(g, w) {
		t.Fatalf("ReadAt with a hung flush in flight: %v", err)
	}
	if err := r.d.Sync(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Sync after a ReadAt that timed out on the flush: %v", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	// The device works.
	if err := r.d.WriteAsync(w, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Flush(); err != nil || !bytes.Equal(r.diskCopy()[1<<20:][:len(w)], w) {
		t.Fatalf("device unusable after the timeouts: %v", err)
	}
	if st := r.d.Stats(); st.Timeouts != 2 || st.Resets != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestFlushAsyncNoFeature: without VIRTIO_BLK_F_FLUSH, FlushAsync fails as
// Flush does and sends nothing.
func TestFlushAsyncNoFeature(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) { f.features &^= 1 << FeatureFlush })
	if err := r.d.FlushAsync(); !errors.Is(err, ErrNoFlush) {
		t.Fatalf("FlushAsync without VIRTIO_BLK_F_FLUSH: %v", err)
	}
	if reqs, _ := r.f.counts(); reqs != 0 || r.d.Stats().Flushes != 0 {
		t.Fatalf("%d requests reached the device", reqs)
	}
}
