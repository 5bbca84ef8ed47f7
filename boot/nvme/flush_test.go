package nvme

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"tamavisor/boot/blkio/blkiotest"
)

// holdFlushes returns a fault that holds the next n flushes of the I/O
// queue with act (actHold until released, actHang for good).
func holdFlushes(n int, act action) func(q int, op byte) action {
	return func(q int, op byte) action {
		if q == ioQueueID && op == ioFlush && n > 0 {
			n--
			return act
		}
		return actNormal
	}
}

// flushState returns the driver's commands and flushes in flight.
func (r *rig) flushState() (inflight, flushing int) {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return r.d.inflight, r.d.flushing
}

// driver is the rig's controller for blkiotest.
func (r *rig) driver() blkiotest.Driver {
	return blkiotest.Driver{Sync: r.d.Sync, FlushAsync: r.d.FlushAsync, Flush: r.d.Flush,
		Flushes:  func() uint64 { return r.d.Stats().Flushes },
		InFlight: func() int { in, _ := r.flushState(); return in }}
}

// TestFlushAsync: FlushAsync returns with its Flush in flight; writes
// started after it complete and Sync returns while the controller still
// holds the Flush; the controller fetched the Flush only after the writes
// synced before it had completed; Flush waits for the held Flush before
// it submits its own.
func TestFlushAsync(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) {
		f.mode = modeLazy // commands run only when the driver waits
		o.MaxRequest = asyncReq
	})
	rng := rand.New(rand.NewPCG(1, 2))
	first := r.a.buf(asyncBuf, 0)
	fill(rng, first)
	if err := r.d.WriteAsync(first, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	r.f.set(func() { r.f.fault = holdFlushes(1, actHold) })
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	if in, fl := r.flushState(); in != 1 || fl != 1 {
		t.Fatalf("after FlushAsync: %d commands in flight, %d flushes; want the Flush in flight", in, fl)
	}
	second := r.a.buf(asyncBuf, 0)
	fill(rng, second)
	if err := r.d.WriteAsync(second, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync while the controller holds the Flush: %v", err)
	}
	if in, fl := r.flushState(); in != 1 || fl != 1 {
		t.Fatalf("after Sync: %d commands in flight, %d flushes; want only the held Flush", in, fl)
	}
	if fl, other := r.f.outstandingOps(); fl != 1 || other != 0 {
		t.Fatalf("after Sync the controller holds %d flushes and %d other commands; want the Flush only", fl, other)
	}
	if !bytes.Equal(r.diskCopy()[1<<20:][:asyncBuf], second) {
		t.Fatal("the writes after FlushAsync are not on the disk after Sync")
	}
	if st := r.d.Stats(); st.Timeouts != 0 || st.Resets != 0 {
		t.Fatalf("stats %+v: Sync waited for the Flush", st)
	}
	r.f.releaseHeld()
	if err := r.d.Flush(); err != nil {
		t.Fatal(err)
	}
	r.quiet(t, "Flush")
	if in, fl := r.flushState(); in != 0 || fl != 0 {
		t.Fatalf("after Flush: %d commands in flight, %d flushes", in, fl)
	}
	// The events: the first writes, the Flush fetched and held, the
	// second writes, the held Flush executed, then Flush's own.
	log := r.f.log()
	h := -1
	for i, e := range log {
		if e.kind == 'h' && e.op == ioFlush {
			h = i
			break
		}
	}
	if h < 0 {
		t.Fatalf("the controller held no Flush: %v", log)
	}
	for i, e := range log {
		if e.op == ioWrite && (i > h) != (e.slba >= 1<<20>>r.d.lbaShift) {
			t.Fatalf("write of LBA %d is event %d, the Flush was fetched at %d: %v", e.slba, i, h, log)
		}
	}
	n := len(log)
	if log[n-2] != (event{'r', ioFlush, 0}) || log[n-1] != (event{'x', ioFlush, 0}) {
		t.Fatalf("events end %v, want the held Flush executed, then Flush's (Flush did not wait for it)", log[max(n-4, 0):])
	}
	if st := r.d.Stats(); st.Flushes != 2 || r.f.ios(ioFlush) != 2 {
		t.Errorf("stats %+v, controller saw %d flushes; want 2", st, r.f.ios(ioFlush))
	}
}

// TestFlushAsyncConfigs: writes, FlushAsync (after Sync, or with writes
// in flight) and Sync interleaved on every configuration of configs (a
// one-slot queue where FlushAsync waits for a slot and returns the
// completion it reaped before it submits, completions in reverse, a
// controller in its own goroutine): the data is on the disk, each
// FlushAsync reached the controller, and Flush leaves nothing in flight.
func TestFlushAsyncConfigs(t *testing.T) {
	for name, setup := range configs() {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, setup)
			rng := rand.New(rand.NewPCG(3, 4))
			want := r.diskCopy()
			for i := range 6 {
				w := r.a.buf(96<<10, 0)
				fill(rng, w)
				off := i * (128 << 10)
				if err := r.d.WriteAsync(w, int64(off)); err != nil {
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
			if _, other := r.f.outstandingOps(); other != 0 {
				t.Fatalf("after Sync the controller holds %d commands other than flushes", other)
			}
			if err := r.d.Flush(); err != nil {
				t.Fatal(err)
			}
			r.quiet(t, "Flush")
			if in, fl := r.flushState(); in != 0 || fl != 0 {
				t.Fatalf("after Flush: %d commands in flight, %d flushes", in, fl)
			}
			if !bytes.Equal(r.diskCopy(), want) {
				t.Fatal("disk contents differ from model")
			}
			if n := r.f.ios(ioFlush); n != 6 || r.d.Stats().Flushes != 6 {
				t.Fatalf("controller saw %d flushes, stats %+v; want 6", n, r.d.Stats())
			}
		})
	}
}

// TestFlushAsyncError: a Flush FlushAsync started that fails is reported
// once, by the first Sync, FlushAsync or Flush after the driver saw its
// completion; a FlushAsync that reports it starts no Flush.
func TestFlushAsyncError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lazy     bool
		settle   func(r *rig) error // runs before the calls that may report it
		reporter string
	}{
		// Completions in reverse order: Sync reaps the write, not the
		// Flush submitted before it; Flush does.
		{"Flush", true, nil, "Flush"},
		// Completions in order: Sync reaps the Flush before the write.
		{"Sync", false, nil, "Sync"},
		// ReadAt waits for the Flush and keeps its error.
		{"FlushAsync", false, func(r *rig) error { _, err := r.d.ReadAt(r.a.buf(pageSize, 0), 0); return err }, "FlushAsync"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(f *fakeNVMe, o *Options) {
				if tc.lazy {
					f.mode = modeLazy
				}
				f.status = st(SCTGeneric, SCInternalError)
				f.fault = holdFlushes(1, actStatus)
			})
			if err := r.d.FlushAsync(); err != nil {
				t.Fatal(err)
			}
			if err := r.d.WriteAsync(r.a.buf(asyncBuf, 0), 0); err != nil {
				t.Fatal(err)
			}
			if tc.settle != nil {
				if err := tc.settle(r); err != nil {
					t.Fatalf("the operation that completes the Flush: %v", err)
				}
			}
			blkiotest.FlushErrorReportedOnce(t, r.driver(), tc.settle != nil, tc.reporter, func(err error) bool {
				var se *StatusError
				return errors.As(err, &se) && se.SC() == SCInternalError && strings.Contains(err.Error(), "flush: Internal Error")
			}, nil)
			r.quiet(t, "Flush")
			if st := r.d.Stats(); st.Errors != 1 || st.Resets != 0 {
				t.Errorf("stats %+v, want 1 error and no reset", st)
			}
		})
	}
}

// TestFlushAsyncTimeout: a Flush FlushAsync started that the controller
// never completes does not hold up Sync; Flush waits for it, times out,
// resets the controller and reports the timeout once; a ReadAt that finds
// it hung reads on and leaves the timeout to Sync. The device works
// afterwards.
func TestFlushAsyncTimeout(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.fault = holdFlushes(1, actHang) })
	w := r.a.buf(asyncBuf, 0)
	fill(rand.New(rand.NewPCG(5, 6)), w)
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	if err := r.d.WriteAsync(w, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync with a hung Flush in flight: %v", err)
	}
	if st := r.d.Stats(); st.Timeouts != 0 {
		t.Fatalf("Sync waited for the hung Flush: %+v", st)
	}
	if err := r.d.Flush(); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "(flush)") {
		t.Fatalf("Flush after a hung FlushAsync: %v, want its timeout", err)
	}
	r.quiet(t, "Flush")
	if in, fl := r.flushState(); in != 0 || fl != 0 {
		t.Fatalf("after the timeout: %d commands in flight, %d flushes", in, fl)
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

	// A ReadAt finds the hung Flush: it reads after the reset, and the
	// next Sync reports the timeout.
	r.f.set(func() { r.f.fault = holdFlushes(1, actHang) })
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	g := r.a.buf(asyncBuf, 0)
	if _, err := r.d.ReadAt(g, 0); err != nil || !bytes.Equal(g, w) {
		t.Fatalf("ReadAt with a hung Flush in flight: %v", err)
	}
	r.quiet(t, "ReadAt")
	if err := r.d.Sync(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Sync after a ReadAt that timed out on the Flush: %v", err)
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
	if err := r.d.Flush(); err != nil || !bytes.Equal(r.diskCopy()[1<<20:][:asyncBuf], w) {
		t.Fatalf("device unusable after the timeouts: %v", err)
	}
	if st := r.d.Stats(); st.Timeouts != 2 || st.Resets != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestFlushAsyncNoCache: without a volatile write cache FlushAsync has
// nothing to do, as Flush.
func TestFlushAsyncNoCache(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.vwc = false })
	if err := r.d.FlushAsync(); err != nil {
		t.Fatal(err)
	}
	if n := r.f.ios(ioFlush); n != 0 || r.d.Stats().Flushes != 0 {
		t.Fatalf("FlushAsync without a volatile write cache sent %d commands", n)
	}
}
