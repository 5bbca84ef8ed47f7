package blk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"tamavisor/boot/virtio"
)

const diskSize = 8 << 20

type rig struct {
	a   *arena
	f   *fakeBlk
	d   *Device
	opt Options
}

func newRig(t testing.TB, setup func(*fakeBlk, *Options)) *rig {
	t.Helper()
	a := newArena(24 << 20)
	r := &rig{a: a, f: newFake(t, a, diskSize), opt: Options{Phys: a.phys}}
	if setup != nil {
		setup(r.f, &r.opt)
	}
	d, err := r.open()
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	return r
}

func (r *rig) open() (*Device, error) {
	m, err := virtio.ProbeMMIO(r.f)
	if err != nil {
		return nil, err
	}
	return New(m, r.a, r.opt)
}

func (r *rig) diskCopy() []byte {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return bytes.Clone(r.f.disk)
}

func TestProbeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeBlk)
		want string
	}{
		{"magic", func(f *fakeBlk) { f.magic = 0 }, "bad magic"},
		{"legacy", func(f *fakeBlk) { f.version = 1 }, "-global virtio-mmio.force-legacy=false"},
		{"version3", func(f *fakeBlk) { f.version = 3 }, "unsupported version 3"},
		{"net", func(f *fakeBlk) { f.id = 1 }, "not a block device"},
		{"noV1", func(f *fakeBlk) { f.features &^= 1 << virtio.FeatureVersion1 }, "VIRTIO_F_VERSION_1"},
		{"reject", func(f *fakeBlk) { f.reject = true }, "FEATURES_OK"},
		{"noqueue", func(f *fakeBlk) { f.qmax = 0 }, "queue 0 not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newArena(1 << 20)
			f := newFake(t, a, diskSize)
			tc.set(f)
			r := &rig{a: a, f: f, opt: Options{Phys: a.phys}}
			_, err := r.open()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
			if tc.name == "magic" && !errors.Is(err, virtio.ErrNoMMIODevice) {
				t.Errorf("not ErrNoMMIODevice: %v", err)
			}
			if tc.name == "reject" && (!errors.Is(err, virtio.ErrFeaturesRejected) || f.status&virtio.StatusFailed == 0) {
				t.Errorf("status %#x, err %v", f.status, err)
			}
		})
	}
}

func TestGeometry(t *testing.T) {
	r := newRig(t, nil)
	if r.d.SectorSize() != 512 || r.d.Size() != diskSize || r.d.ReadOnly() {
		t.Fatalf("sector %d size %d ro %v", r.d.SectorSize(), r.d.Size(), r.d.ReadOnly())
	}
	if r.f.drvFeat != defaultFeatures {
		t.Errorf("negotiated %#x, want %#x", r.f.drvFeat, uint64(defaultFeatures))
	}
	if id, err := r.d.ID(); err != nil || id != "fake-serial-0001" {
		t.Errorf("ID = %q, %v", id, err)
	}
}

func configs() map[string]func(*fakeBlk, *Options) {
	return map[string]func(*fakeBlk, *Options){
		"default": nil,
		"small-segments": func(f *fakeBlk, o *Options) {
			f.features |= 1<<FeatureSizeMax | 1<<FeatureSegMax
			f.sizeMax, f.segMax = 1536, 3
		},
		"odd-size-max": func(f *fakeBlk, o *Options) {
			f.features |= 1 << FeatureSizeMax
			f.sizeMax = 700
			o.MaxRequest = 5000
		},
		"lazy-reverse": func(f *fakeBlk, o *Options) {
			o.Now = f.lazyClock()
			o.MaxRequest = 8 << 10
		},
		"async": func(f *fakeBlk, o *Options) {
			f.startAsync()
			o.MaxRequest = 16 << 10
		},
		"async-small": func(f *fakeBlk, o *Options) {
			f.features |= 1<<FeatureSizeMax | 1<<FeatureSegMax
			f.sizeMax, f.segMax, f.qmax = 8192, 2, 16
			f.startAsync()
		},
	}
}

func TestRoundTrip(t *testing.T) {
	for name, setup := range configs() {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, setup)
			want := r.diskCopy()
			rng := rand.New(rand.NewPCG(1, 2))
			for _, n := range []int{512, 1024, 4096, 4608, 65536, 1 << 20, 3<<20 + 512} {
				for _, off := range []int64{0, 512, 7 * 512, int64(diskSize - n)} {
					w := r.a.buf(n)
					for i := range w {
						w[i] = byte(rng.Uint32())
					}
					if k, err := r.d.WriteAt(w, off); err != nil || k != n {
						t.Fatalf("WriteAt(%d, %d) = %d, %v", n, off, k, err)
					}
					copy(want[off:], w)
					g := r.a.buf(n)
					if k, err := r.d.ReadAt(g, off); err != nil || k != n {
						t.Fatalf("ReadAt(%d, %d) = %d, %v", n, off, k, err)
					}
					if !bytes.Equal(g, want[off:off+int64(n)]) {
						t.Fatalf("ReadAt(%d, %d): data mismatch", n, off)
					}
					r.a.next -= 2 * n // reuse arena space
				}
			}
			if !bytes.Equal(r.diskCopy(), want) {
				t.Fatal("disk contents differ from model")
			}
			st := r.d.Stats()
			if reqs, _ := r.f.counts(); uint64(reqs) != st.Requests || st.BytesBounced != 0 {
				t.Errorf("stats %+v, device saw %d requests", st, reqs)
			}
		})
	}
}

func TestSplitting(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) {
		f.features |= 1<<FeatureSizeMax | 1<<FeatureSegMax
		f.sizeMax, f.segMax = 4096, 4
	})
	before, _ := r.f.counts()
	if _, err := r.d.ReadAt(r.a.buf(1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := r.f.counts(); reqs-before != 64 {
		t.Errorf("1 MiB read took %d requests, want 64 of 16 KiB", reqs-before)
	}
}

func TestInFlight(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) {
		o.Now = f.lazyClock()
		o.MaxRequest = 64 << 10
	})
	p := r.a.buf(1 << 20)
	if _, err := r.d.ReadAt(p, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, r.diskCopy()[1<<20:2<<20]) {
		t.Fatal("data mismatch")
	}
	// 64-entry queue: 21 slots; 16 requests of 64 KiB all go out at once.
	if r.f.maxBatch != 16 || r.f.notifies != 1 {
		t.Errorf("max batch %d, %d notifies; want 16 requests in flight after 1 notify", r.f.maxBatch, r.f.notifies)
	}
}

func TestRefused(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) { f.blkSize = 4096 })
	if r.d.SectorSize() != 4096 {
		t.Fatalf("sector size %d, want 4096", r.d.SectorSize())
	}
	b := r.a.buf(8192)
	for _, tc := range []struct {
		p   []byte
		off int64
	}{
		{b[:4096], 512}, {b[:512], 0}, {b[:4097], 0}, {b[:4096], -4096},
		{b[:4096], diskSize}, {b[:8192], diskSize - 4096}, {b[:4096], 1 << 62},
	} {
		if _, err := r.d.ReadAt(tc.p, tc.off); err == nil {
			t.Errorf("ReadAt(len %d, off %d) succeeded", len(tc.p), tc.off)
		}
		if _, err := r.d.WriteAt(tc.p, tc.off); err == nil {
			t.Errorf("WriteAt(len %d, off %d) succeeded", len(tc.p), tc.off)
		}
	}
	if reqs, _ := r.f.counts(); reqs != 0 {
		t.Errorf("%d requests reached the device", reqs)
	}
}

func TestIOError(t *testing.T) {
	for name, setup := range configs() {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, setup)
			r.f.set(func() { r.f.errLo, r.f.errHi = 2048, 2050 })
			b := r.a.buf(2 << 20)
			_, err := r.d.ReadAt(b, 0)
			if err == nil || !strings.Contains(err.Error(), "I/O error") || !strings.Contains(err.Error(), "read of sectors") {
				t.Fatalf("ReadAt over bad sectors: %v", err)
			}
			t.Log(err)
			_, err = r.d.WriteAt(b[:4096], 2047*512)
			if err == nil || !strings.Contains(err.Error(), "write of sectors 2047-2054") {
				t.Fatalf("WriteAt over bad sectors: %v", err)
			}
			if _, err := r.d.ReadAt(b, 4<<20); err != nil {
				t.Fatalf("device unusable after error: %v", err)
			}
			r.f.set(func() { r.f.errHi = 0 })
			if _, err := r.d.ReadAt(b, 0); err != nil {
				t.Fatalf("read after error cleared: %v", err)
			}
			if !bytes.Equal(b, r.diskCopy()[:len(b)]) {
				t.Fatal("data mismatch after recovery")
			}
		})
	}
}

func TestFlush(t *testing.T) {
	r := newRig(t, nil)
	for i := range 3 {
		if err := r.d.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, n := r.f.counts(); n != i+1 {
			t.Fatalf("device saw %d flushes, want %d", n, i+1)
		}
	}
	r = newRig(t, func(f *fakeBlk, o *Options) { f.features &^= 1 << FeatureFlush })
	if err := r.d.Flush(); !errors.Is(err, ErrNoFlush) {
		t.Fatalf("Flush without VIRTIO_BLK_F_FLUSH: %v", err)
	}
	if _, n := r.f.counts(); n != 0 {
		t.Fatalf("flush reached a device without the feature")
	}
}

func TestReadOnly(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) { f.features |= 1 << FeatureRO })
	b := r.a.buf(4096)
	if _, err := r.d.WriteAt(b, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("WriteAt on RO device: %v", err)
	}
	if reqs, _ := r.f.counts(); reqs != 0 {
		t.Fatal("write reached RO device")
	}
	if _, err := r.d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

func TestBounce(t *testing.T) {
	for _, phys := range []bool{false, true} {
		r := newRig(t, func(f *fakeBlk, o *Options) {
			o.BounceSize = 12 << 10
			if !phys {
				o.Phys = nil
			}
		})
		w := make([]byte, 100<<10) // Go heap: not in the arena
		for i := range w {
			w[i] = byte(i * 13)
		}
		if _, err := r.d.WriteAt(w, 1<<20); err != nil {
			t.Fatal(err)
		}
		g := make([]byte, len(w))
		if _, err := r.d.ReadAt(g, 1<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g, w) || !bytes.Equal(r.diskCopy()[1<<20:][:len(w)], w) {
			t.Fatal("bounce round trip mismatch")
		}
		if st := r.d.Stats(); st.BytesBounced != 2*uint64(len(w)) {
			t.Errorf("bounced %d bytes, want %d", st.BytesBounced, 2*len(w))
		}
	}
}

func TestWrap(t *testing.T) {
	n := 70000 // more than 65536: the 16-bit ring indices wrap
	if testing.Short() {
		n = 3000
	}
	r := newRig(t, func(f *fakeBlk, o *Options) { f.qmax = 8 })
	b := r.a.buf(1024)
	disk := r.diskCopy()
	for i := range n {
		off := int64(i%(diskSize/512-1)) * 512
		if _, err := r.d.ReadAt(b, off); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !bytes.Equal(b, disk[off:off+1024]) {
			t.Fatalf("request %d: data mismatch", i)
		}
	}
	if reqs, _ := r.f.counts(); reqs != n {
		t.Errorf("device saw %d requests, want %d", reqs, n)
	}
}

// shortTimeout gives o a 50 ms timeout on a clock that advances 1 ms at
// each reading: a request the device never completes times out after 50
// polls.
func shortTimeout(o *Options) {
	var now time.Duration
	o.Timeout = 50 * time.Millisecond
	o.Now = func() time.Duration { now += time.Millisecond; return now }
}

func TestTimeout(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) { shortTimeout(o) })
	r.f.set(func() { r.f.mode = modeHang })
	b := r.a.buf(64 << 10)
	_, err := r.d.ReadAt(b, 4096)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "sectors 8-135") {
		t.Fatalf("hung read: %v", err)
	}
	if err := r.d.Flush(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("hung flush: %v", err)
	}
	r.f.set(func() { r.f.mode = modeSync })
	if _, err := r.d.ReadAt(b, 4096); err != nil {
		t.Fatalf("device unusable after timeout: %v", err)
	}
	if !bytes.Equal(b, r.diskCopy()[4096:][:len(b)]) {
		t.Fatal("data mismatch after timeout")
	}
	if st := r.d.Stats(); st.Timeouts != 2 || st.Resets != 2 {
		t.Errorf("stats %+v", st)
	}
}

func BenchmarkReadAt1MiB(b *testing.B) {
	r := newRig(b, nil)
	p := r.a.buf(1 << 20)
	b.SetBytes(1 << 20)
	for i := 0; b.Loop(); i++ {
		if _, err := r.d.ReadAt(p, int64(i%8)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriteAsync: writes started by WriteAsync are all on the disk after
// Sync, they are still in flight when WriteAsync returns (the caller
// works meanwhile), a read after them sees them, and a failed one is
// reported by Sync once.
func TestWriteAsync(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) {
		o.Now = f.lazyClock() // requests complete only when the driver waits
		o.MaxRequest = 64 << 10
	})
	rng := rand.New(rand.NewPCG(1, 2))
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = r.a.buf(256 << 10)
		for j := range bufs[i] {
			bufs[i][j] = byte(rng.Uint32())
		}
		if err := r.d.WriteAsync(bufs[i], int64(i)<<18); err != nil {
			t.Fatal(err)
		}
	}
	if r.d.inflight == 0 {
		t.Fatal("WriteAsync waited for its requests: nothing in flight")
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	if r.d.inflight != 0 {
		t.Fatalf("%d requests in flight after Sync", r.d.inflight)
	}
	disk := r.diskCopy()
	for i, b := range bufs {
		if !bytes.Equal(disk[i<<18:(i+1)<<18], b) {
			t.Fatalf("buffer %d not on the disk after Sync", i)
		}
	}
	// A read right after WriteAsync sees the write.
	w := r.a.buf(4096)
	for j := range w {
		w[j] = 0x5a
	}
	if err := r.d.WriteAsync(w, 6<<20); err != nil {
		t.Fatal(err)
	}
	got := r.a.buf(4096)
	if _, err := r.d.ReadAt(got, 6<<20); err != nil || !bytes.Equal(got, w) {
		t.Fatalf("read after WriteAsync: %v, equal %v", err, bytes.Equal(got, w))
	}
	// A failed write: Sync reports it, once.
	r.f.set(func() { r.f.errLo, r.f.errHi = 100, 101 })
	if err := r.d.WriteAsync(bufs[0][:64<<10], 96*512); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err == nil || !strings.Contains(err.Error(), "I/O error") {
		t.Fatalf("Sync after a failed write: %v", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	// Refused requests are refused before anything starts.
	if err := r.d.WriteAsync(bufs[0][:100], 0); err == nil {
		t.Fatal("unaligned WriteAsync accepted")
	}
}

// TestWriteAsyncTimeout: a device that stops completing makes Sync fail
// with ErrTimeout, and the device works again afterwards.
func TestWriteAsyncTimeout(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) { shortTimeout(o) })
	r.f.set(func() { r.f.mode = modeHang })
	b := r.a.buf(64 << 10)
	if err := r.d.WriteAsync(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Sync of a hung write: %v", err)
	}
	r.f.set(func() { r.f.mode = modeSync })
	if err := r.d.WriteAsync(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("device unusable after timeout: %v", err)
	}
}

// TestSyncDeadDevice: an asynchronous write the device never completes,
// and a device that then refuses reinitialisation (FEATURES_OK cleared):
// Sync returns an error instead of waiting for the lost request forever.
func TestSyncDeadDevice(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) { shortTimeout(o) })
	r.f.set(func() { r.f.mode = modeHang })
	b := r.a.buf(64 << 10)
	if err := r.d.WriteAsync(b, 0); err != nil {
		t.Fatal(err)
	}
	r.f.set(func() { r.f.reject = true })
	done := make(chan error, 1)
	go func() { done <- r.d.Sync() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Sync of a lost write on a dead device succeeded")
		}
	case <-time.After(time.Minute): // a backstop: Sync loops forever if broken
		t.Fatalf("Sync still running: %d timeouts, %d resets, %d in flight", r.d.stats.Timeouts, r.d.stats.Resets, r.d.inflight)
	}
}

// TestWriteAsyncErrorOnce: a WriteAsync that fails itself (a timeout while
// the queue is full) returns its error, and the next Sync, of writes that
// all succeeded, does not return it again.
func TestWriteAsyncErrorOnce(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) {
		shortTimeout(o)
		o.MaxRequest = 4096
	})
	r.f.set(func() { r.f.mode = modeHang })
	b := r.a.buf(256 << 10)
	if err := r.d.WriteAsync(b, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WriteAsync filling the queue of a hung device: %v, want a timeout", err)
	}
	r.f.set(func() { r.f.mode = modeSync })
	if err := r.d.WriteAsync(b[:4096], 0); err != nil {
		t.Fatalf("the next write: %v", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync of the next writes: %v (the earlier WriteAsync's error, already returned)", err)
	}
}

// TestWriteVAsync: a write gathered from several buffers (pieces of
// pages at odd offsets, physically adjacent ones merged) lands on the disk
// byte-exact after Sync, split into requests within size_max and seg_max;
// more pieces than seg_max descriptors are cut into more requests; a
// segment without a physical address, or a first sector that would take
// more descriptors than seg_max, is refused before anything starts.
func TestWriteVAsync(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) {
		o.Now = f.lazyClock()
		o.MaxRequest = 16 << 10
		f.features |= 1<<FeatureSizeMax | 1<<FeatureSegMax
		f.sizeMax, f.segMax = 8192, 6
	})
	rng := rand.New(rand.NewPCG(3, 4))
	mem := r.a.buf(64 << 10)
	for i := range mem {
		mem[i] = byte(rng.Uint32())
	}
	// 40 KiB from five pieces: two adjacent ones, odd lengths, out of order.
	segs := [][]byte{mem[100:3100], mem[3100:9000], mem[20000 : 20000+13000], mem[40960 : 40960+8192], mem[1000 : 1000+10868]}
	var want []byte
	for _, s := range segs {
		want = append(want, s...)
	}
	if len(want)%512 != 0 {
		t.Fatalf("test: %d bytes", len(want))
	}
	started, err := r.d.WriteVAsync(segs, 8<<10)
	if !started || err != nil {
		t.Fatalf("WriteVAsync: started %v, %v", started, err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	if disk := r.diskCopy(); !bytes.Equal(disk[8<<10:8<<10+len(want)], want) {
		t.Fatal("the gathered write is not on the disk")
	}
	// Eight pieces of a sector each, seg_max 6: two requests.
	reqs, _ := r.f.counts()
	var scattered [][]byte
	want = want[:0]
	for i := range 8 {
		s := mem[i*1024 : i*1024+512]
		scattered = append(scattered, s)
		want = append(want, s...)
	}
	if started, err := r.d.WriteVAsync(scattered, 0); !started || err != nil {
		t.Fatalf("scattered WriteVAsync: started %v, %v", started, err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatal(err)
	}
	if disk := r.diskCopy(); !bytes.Equal(disk[:len(want)], want) {
		t.Fatal("the scattered write is not on the disk")
	}
	if n, _ := r.f.counts(); n-reqs != 2 {
		t.Fatalf("8 pieces with seg_max 6 took %d requests, want 2", n-reqs)
	}
	reqs, _ = r.f.counts()
	// Refusals: nothing is submitted.
	other := make([]byte, 512) // not in the arena: no physical address
	for _, c := range []struct {
		name string
		segs [][]byte
	}{
		{"no physical address", [][]byte{mem[:512], other}},
		{"a first sector of more than seg_max descriptors", [][]byte{mem[0:80], mem[1024:1104], mem[2048:2128], mem[3072:3152], mem[4096:4176], mem[5120:5200], mem[6144:6176]}},
	} {
		if started, err := r.d.WriteVAsync(c.segs, 0); started || err != nil {
			t.Fatalf("%s: started %v, %v; want refused", c.name, started, err)
		}
	}
	if n, _ := r.f.counts(); n != reqs {
		t.Fatalf("refused writes submitted %d requests", n-reqs)
	}
	if _, err := r.d.WriteVAsync([][]byte{mem[:100]}, 0); err == nil {
		t.Fatal("a write of 100 bytes accepted")
	}
}

// TestReadV: a read scattered into several buffers brings back the disk's
// bytes, in requests within size_max and seg_max; a segment without a
// physical address is refused before anything is read.
func TestReadV(t *testing.T) {
	r := newRig(t, func(f *fakeBlk, o *Options) {
		o.MaxRequest = 16 << 10
		f.features |= 1<<FeatureSizeMax | 1<<FeatureSegMax
		f.sizeMax, f.segMax = 8192, 6
	})
	mem := r.a.buf(64 << 10)
	segs := [][]byte{mem[100:612], mem[4096 : 4096+20000], mem[30000 : 30000+12256]}
	done, err := r.d.ReadV(segs, 24<<10)
	if !done || err != nil {
		t.Fatalf("ReadV: done %v, %v", done, err)
	}
	if got, want := bytes.Join(segs, nil), r.diskCopy()[24<<10:24<<10+32768]; !bytes.Equal(got, want) {
		t.Fatal("the segments differ from the disk")
	}
	reqs, _ := r.f.counts()
	if done, err := r.d.ReadV([][]byte{mem[:512], make([]byte, 512)}, 0); done || err != nil {
		t.Fatalf("ReadV into memory without a physical address: done %v, %v", done, err)
	}
	if n, _ := r.f.counts(); n != reqs {
		t.Fatalf("a refused ReadV submitted %d requests", n-reqs)
	}
}
