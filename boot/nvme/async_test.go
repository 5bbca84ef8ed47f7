package nvme

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

const (
	asyncBuf   = 256 << 10 // bytes of one WriteAsync in the tests
	asyncBufs  = 4
	asyncReq   = 64 << 10 // Options.MaxRequest: 4 commands per buffer
	idleSteps  = 5        // idle calls before the manual controller runs
	deadlineTO = time.Minute
)

// fill writes random bytes into p.
func fill(rng *rand.Rand, p []byte) {
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

// TestWriteAsync: writes started by WriteAsync are still in flight when
// it returns (the controller has not run them), all on the disk after
// Sync, and a read right after WriteAsync sees its data.
func TestWriteAsync(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) {
		f.mode = modeLazy // commands run only when the driver waits
		o.MaxRequest = asyncReq
	})
	rng := rand.New(rand.NewPCG(1, 2))
	before := r.diskCopy()
	bufs := make([][]byte, asyncBufs)
	for i := range bufs {
		bufs[i] = r.a.buf(asyncBuf, 0)
		fill(rng, bufs[i])
		if err := r.d.WriteAsync(bufs[i], int64(i*asyncBuf)); err != nil {
			t.Fatal(err)
		}
	}
	cmds := asyncBufs * asyncBuf / asyncReq
	if r.d.inflight != cmds || r.f.outstanding() != cmds {
		t.Fatalf("after WriteAsync: %d commands in flight, controller holds %d; want %d (WriteAsync waited)", r.d.inflight, r.f.outstanding(), cmds)
	}
	if !bytes.Equal(r.diskCopy(), before) {
		t.Fatal("the disk changed before Sync: WriteAsync waited for its commands")
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	r.quiet(t, "Sync")
	if r.d.inflight != 0 {
		t.Fatalf("%d commands in flight after Sync", r.d.inflight)
	}
	disk := r.diskCopy()
	for i, b := range bufs {
		if !bytes.Equal(disk[i*asyncBuf:(i+1)*asyncBuf], b) {
			t.Fatalf("buffer %d not on the disk after Sync", i)
		}
	}
	if st := r.d.Stats(); st.BytesWritten != asyncBufs*asyncBuf || st.Commands != uint64(cmds) {
		t.Errorf("stats %+v", st)
	}

	// More commands than slots: WriteAsync reaps while the queue is full
	// and returns with the rest in flight.
	big := r.a.buf(len(r.d.slots)*asyncReq+asyncBuf, 0)
	fill(rng, big)
	if err := r.d.WriteAsync(big, 0); err != nil {
		t.Fatal(err)
	}
	if r.d.inflight == 0 {
		t.Fatal("a WriteAsync larger than the queue waited for all its commands")
	}
	if err := r.d.Sync(); err != nil || !bytes.Equal(r.diskCopy()[:len(big)], big) {
		t.Fatalf("Sync of a write larger than the queue: %v", err)
	}

	// The controller runs lazy commands in reverse order: a read that
	// did not first complete the write would overtake it.
	w := r.a.buf(pageSize, 0)
	fill(rng, w)
	if err := r.d.WriteAsync(w, 6<<20); err != nil {
		t.Fatal(err)
	}
	got := r.a.buf(pageSize, 0)
	if _, err := r.d.ReadAt(got, 6<<20); err != nil || !bytes.Equal(got, w) {
		t.Fatalf("read after WriteAsync: %v, equal %v", err, bytes.Equal(got, w))
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}

	// Refused requests start nothing.
	writes := r.f.ios(ioWrite)
	for _, off := range []int64{-512, 100, diskSize} {
		if err := r.d.WriteAsync(w, off); err == nil {
			t.Errorf("WriteAsync at %d accepted", off)
		}
	}
	if err := r.d.WriteAsync(w[:100], 0); err == nil {
		t.Error("WriteAsync of 100 bytes accepted")
	}
	if err := r.d.Sync(); err != nil || r.f.ios(ioWrite) != writes {
		t.Errorf("refused writes: Sync %v, %d commands", err, r.f.ios(ioWrite)-writes)
	}
}

// TestWriteAsyncRoundTrip: asynchronous writes through every geometry of
// configs (MDTS splits, PRP lists, a two-entry queue, 4 KiB blocks, a
// controller in its own goroutine), with a read between them, land on the
// disk as a model says.
func TestWriteAsyncRoundTrip(t *testing.T) {
	for name, setup := range configs() {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, setup)
			sector := r.d.SectorSize()
			rng := rand.New(rand.NewPCG(3, 4))
			want := r.diskCopy()
			off := 0
			for i, n := range []int{4096, 8192 + 512, 65536, 1 << 20, 12288} {
				if n%sector != 0 {
					continue
				}
				w := r.a.buf(n, i%2*sector%pageSize)
				fill(rng, w)
				if err := r.d.WriteAsync(w, int64(off)); err != nil {
					t.Fatalf("WriteAsync(%d, %d): %v", n, off, err)
				}
				copy(want[off:], w)
				if i == 2 {
					g := r.a.buf(n, 0)
					if _, err := r.d.ReadAt(g, int64(off)); err != nil || !bytes.Equal(g, w) {
						t.Fatalf("ReadAt after WriteAsync: %v", err)
					}
				}
				off += n + sector
			}
			if err := r.d.Sync(); err != nil {
				t.Fatal(err)
			}
			r.quiet(t, "Sync")
			if !bytes.Equal(r.diskCopy(), want) {
				t.Fatal("disk contents differ from model")
			}
		})
	}
}

// TestWriteAsyncSettles: every synchronous operation first completes the
// writes WriteAsync started, and keeps their error for Sync.
func TestWriteAsyncSettles(t *testing.T) {
	for _, tc := range []struct {
		name string
		vwc  bool
		op   func(r *rig) error
	}{
		{"ReadAt", true, func(r *rig) error { _, err := r.d.ReadAt(r.a.buf(pageSize, 0), 4<<20); return err }},
		{"WriteAt", true, func(r *rig) error { _, err := r.d.WriteAt(r.a.buf(pageSize, 0), 4<<20); return err }},
		{"bounced-WriteAt", true, func(r *rig) error { _, err := r.d.WriteAt(make([]byte, pageSize), 4<<20); return err }},
		{"Flush", true, func(r *rig) error { return r.d.Flush() }},
		{"Flush-no-cache", false, func(r *rig) error { return r.d.Flush() }},
		{"Shutdown", true, func(r *rig) error { return r.d.Shutdown() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(f *fakeNVMe, o *Options) { f.mode, f.vwc, o.MaxRequest = modeLazy, tc.vwc, asyncReq })
			rng := rand.New(rand.NewPCG(5, 6))
			w := r.a.buf(asyncBuf, 0)
			fill(rng, w)
			if err := r.d.WriteAsync(w, 0); err != nil {
				t.Fatal(err)
			}
			if err := tc.op(r); err != nil {
				t.Fatal(err)
			}
			r.quiet(t, tc.name)
			if !bytes.Equal(r.diskCopy()[:asyncBuf], w) {
				t.Fatalf("%s returned before the asynchronous write completed", tc.name)
			}
			// A failed asynchronous write: the operation succeeds, Sync
			// reports the write's error.
			r.f.set(func() { r.f.errLo, r.f.errHi = 1, 2 })
			if err := r.d.WriteAsync(w, 0); err != nil {
				t.Fatal(err)
			}
			if err := tc.op(r); err != nil {
				t.Fatalf("%s after a failed asynchronous write: %v (the write's error belongs to Sync)", tc.name, err)
			}
			if err := r.d.Sync(); err == nil || !strings.Contains(err.Error(), "Write Fault") {
				t.Fatalf("Sync: %v, want the asynchronous write's Write Fault", err)
			}
		})
	}
}

// TestWriteAsyncError: a failed write is reported by Sync, once; one that
// an operation in between completed is reported by the next WriteAsync,
// once, and not by Sync again.
func TestWriteAsyncError(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.mode, o.MaxRequest = modeLazy, asyncReq })
	w := r.a.buf(asyncBuf, 0)
	r.f.set(func() { r.f.errLo, r.f.errHi = 100, 101 })
	if err := r.d.WriteAsync(w, 0); err != nil {
		t.Fatal(err)
	}
	var se *StatusError
	if err := r.d.Sync(); !errors.As(err, &se) || se.SC() != SCWriteFault || !strings.Contains(err.Error(), "write of LBAs 0-127") {
		t.Fatalf("Sync after a failed write: %v", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("second Sync: %v", err)
	}

	if err := r.d.WriteAsync(w, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.ReadAt(r.a.buf(pageSize, 0), 4<<20); err != nil {
		t.Fatal(err)
	}
	r.f.set(func() { r.f.errHi = 0 })
	writes := r.f.ios(ioWrite)
	if err := r.d.WriteAsync(w, int64(asyncBuf)); !errors.As(err, &se) || se.SC() != SCWriteFault {
		t.Fatalf("WriteAsync after a failed one completed: %v, want its Write Fault", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync after WriteAsync returned the error: %v", err)
	}
	if n := r.f.ios(ioWrite) - writes; n != 0 {
		t.Errorf("the WriteAsync that returned an earlier error started %d commands", n)
	}
	if st := r.d.Stats(); st.Errors != 2 || st.Resets != 0 {
		t.Errorf("stats %+v, want 2 errors and no reset", st)
	}
}

// TestWriteAsyncTimeout: a controller that stops completing makes Sync
// fail with ErrTimeout, resets it, and the device works afterwards.
func TestWriteAsyncTimeout(t *testing.T) {
	r := newRig(t, nil)
	r.f.set(func() { r.f.fault = func(q int, op byte) action { return pick(q == ioQueueID, actHang) } })
	w := r.a.buf(asyncBuf, 0)
	if err := r.d.WriteAsync(w, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "write of LBAs") {
		t.Fatalf("Sync of a hung write: %v", err)
	}
	r.quiet(t, "Sync of a hung write")
	if err := r.d.Sync(); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	r.f.set(func() { r.f.fault = nil })
	fill(rand.New(rand.NewPCG(7, 8)), w)
	if err := r.d.WriteAsync(w, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil || !bytes.Equal(r.diskCopy()[:asyncBuf], w) {
		t.Fatalf("device unusable after timeout: %v", err)
	}
	if st := r.d.Stats(); st.Timeouts != 1 || st.Resets != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestWriteAsyncErrorOnce: a WriteAsync that fails itself (a timeout
// while the queue is full) returns its error, and the next Sync, of
// writes that all succeeded, does not return it again.
func TestWriteAsyncErrorOnce(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { o.MaxRequest = pageSize })
	r.f.set(func() { r.f.fault = func(q int, op byte) action { return pick(q == ioQueueID, actHang) } })
	w := r.a.buf(asyncBuf, 0) // 64 commands, 31 slots
	if err := r.d.WriteAsync(w, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WriteAsync filling the queue of a hung controller: %v, want a timeout", err)
	}
	r.quiet(t, "failed WriteAsync")
	r.f.set(func() { r.f.fault = nil })
	if err := r.d.WriteAsync(w[:pageSize], 0); err != nil {
		t.Fatalf("the next write: %v", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync of the next writes: %v (the earlier WriteAsync's error, already returned)", err)
	}
}

// TestSyncDeadController: an asynchronous write the controller never
// completes, and a controller that then fails its reinitialisation
// (never ready again, or does not even stop): Sync returns an error
// instead of waiting for the lost command forever.
func TestSyncDeadController(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   func(f *fakeNVMe)
		is    error
		fixed bool // the controller recovers afterwards
	}{
		{"never-ready", func(f *fakeNVMe) { f.neverReady = true }, ErrNotReady, true},
		{"stuck", func(f *fakeNVMe) { f.stuckReady = true }, errStuck, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.f.set(func() { r.f.fault = func(q int, op byte) action { return pick(q == ioQueueID, actHang) } })
			w := r.a.buf(asyncBuf, 0)
			if err := r.d.WriteAsync(w, 0); err != nil {
				t.Fatal(err)
			}
			r.f.set(func() { tc.set(r.f) })
			done := make(chan error, 1)
			go func() { done <- r.d.Sync() }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrTimeout) || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), "reinitialisation failed") {
					t.Fatalf("Sync of a lost write on a dead controller: %v", err)
				}
			case <-time.After(deadlineTO): // a backstop: Sync loops forever if broken
				t.Fatal("Sync still waiting for a command the reset dropped")
			}
			if err := r.d.Sync(); err != nil {
				t.Fatalf("second Sync: %v", err)
			}
			if !tc.fixed {
				if err := r.d.WriteAsync(w, 0); err == nil {
					t.Fatal("WriteAsync on a stuck controller succeeded")
				}
				return
			}
			r.f.set(func() { r.f.fault, r.f.neverReady = nil, false })
			if err := r.d.WriteAsync(w, 0); err != nil {
				t.Fatalf("WriteAsync after the controller recovered: %v", err)
			}
			if err := r.d.Sync(); err != nil || !bytes.Equal(r.diskCopy()[:asyncBuf], w) {
				t.Fatalf("Sync after the controller recovered: %v", err)
			}
		})
	}
}

// TestIdle: while a wait finds no completion the idle hook runs, with the
// device's lock released; here the hook itself runs the controller, as a
// guest turn would pass time. Without a hook nothing calls it.
func TestIdle(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { o.MaxRequest = asyncReq })
	r.f.set(func() { r.f.mode = modeManual })
	calls := 0
	r.d.SetIdle(func() {
		if !r.d.mu.TryLock() {
			t.Error("the device's lock is held while the idle hook runs")
		} else {
			r.d.mu.Unlock()
		}
		if calls++; calls%idleSteps == 0 {
			r.f.step()
		}
	})
	w := r.a.buf(asyncBuf, 0)
	fill(rand.New(rand.NewPCG(9, 10)), w)
	if err := r.d.WriteAsync(w, 0); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Fatalf("WriteAsync with free slots called the idle hook %d times", calls)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	if calls != idleSteps || !bytes.Equal(r.diskCopy()[:asyncBuf], w) {
		t.Fatalf("Sync called the idle hook %d times, want %d", calls, idleSteps)
	}
	g := r.a.buf(asyncBuf, 0)
	if _, err := r.d.ReadAt(g, 0); err != nil || !bytes.Equal(g, w) || calls != 2*idleSteps {
		t.Fatalf("ReadAt: %v, %d idle calls", err, calls)
	}
	// A hook that never lets the controller run: the wait still times out.
	r.d.SetIdle(func() { calls++ })
	if _, err := r.d.ReadAt(g, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("ReadAt with a hook that never runs the controller: %v", err)
	}
	r.d.SetIdle(nil)
	r.f.set(func() { r.f.mode = modeSync })
	calls = 0
	if _, err := r.d.ReadAt(g, 0); err != nil || calls != 0 {
		t.Fatalf("ReadAt after SetIdle(nil): %v, %d idle calls", err, calls)
	}
}

// TestIdleConcurrent: with the controller in its own goroutine, the idle
// hook of a wait lets another goroutine take the device's lock (run under
// -race).
func TestIdleConcurrent(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) {
		f.startAsync()
		o.MaxRequest = 16 << 10
		o.Now, o.Timeout = nil, 10*time.Second
	})
	stats := make(chan Stats)
	r.d.SetIdle(func() {
		go func() { stats <- r.d.Stats() }()
		select {
		case <-stats:
		case <-time.After(deadlineTO):
			t.Error("another goroutine could not take the lock during the idle hook")
		}
	})
	rng := rand.New(rand.NewPCG(11, 12))
	want := r.diskCopy()
	for i := range asyncBufs {
		w := r.a.buf(asyncBuf, 0)
		fill(rng, w)
		if err := r.d.WriteAsync(w, int64(i*asyncBuf)); err != nil {
			t.Fatal(err)
		}
		copy(want[i*asyncBuf:], w)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.diskCopy(), want) {
		t.Fatal("disk contents differ from model")
	}
}
