package nvme

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	diskSize  = 8 << 20
	arenaSize = 24 << 20
	tick      = time.Millisecond
	testTO    = 50 * time.Millisecond // command timeout under the fake clock
)

type rig struct {
	a   *arena
	f   *fakeNVMe
	d   *Device
	opt Options
}

func newRig(t testing.TB, setup func(*fakeNVMe, *Options)) *rig {
	t.Helper()
	r := newRigNoOpen(t, setup)
	d, err := New(r.f, r.a, r.opt)
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	return r
}

func newRigNoOpen(t testing.TB, setup func(*fakeNVMe, *Options)) *rig {
	a := newArena(arenaSize)
	f := newFake(t, a, diskSize)
	r := &rig{a: a, f: f, opt: Options{Phys: a.phys, Timeout: testTO, Now: f.clock(tick)}}
	if setup != nil {
		setup(r.f, &r.opt)
	}
	return r
}

func (r *rig) diskCopy() []byte {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return bytes.Clone(r.f.disk)
}

// quiet checks the controller holds no command: none may touch a buffer
// after the call that issued it returned.
func (r *rig) quiet(t *testing.T, when string) {
	t.Helper()
	if n := r.f.outstanding(); n != 0 {
		t.Errorf("%s: controller still holds %d commands", when, n)
	}
}

func TestInit(t *testing.T) {
	for _, dstrd := range []uint8{0, 1, 3} {
		r := newRig(t, func(f *fakeNVMe, o *Options) { f.dstrd, f.mdts = dstrd, 5 })
		id := r.d.Identity()
		want := Identity{VendorID: fakeVID, ControllerID: fakeCNTLID, Serial: fakeSN, Model: fakeMN, Firmware: fakeFR,
			Version: fakeVS, Namespaces: 1, VolatileWriteCache: true, MaxTransfer: 128 << 10, LBASize: 512, Blocks: diskSize / 512}
		if id != want {
			t.Errorf("stride %d: identity\n%+v, want\n%+v", dstrd, id, want)
		}
		if r.d.SectorSize() != 512 || r.d.Size() != diskSize {
			t.Errorf("geometry %d × %d", r.d.SectorSize(), r.d.Size())
		}
		wantAdmin := []byte{adminIdentify, adminIdentify, adminSetFeatures, adminCreateIOCQ, adminCreateIOSQ}
		if !slices.Equal(r.f.admin, wantAdmin) {
			t.Errorf("admin commands %x, want %x", r.f.admin, wantAdmin)
		}
		if r.f.aqa != (adminEntries-1)<<AQA_ACQS|(adminEntries-1) || r.f.cqs[1].size != DefaultQueueSize || len(r.d.slots) != DefaultQueueSize-1 {
			t.Errorf("AQA %#x, I/O CQ %+v, %d slots", r.f.aqa, r.f.cqs[1], len(r.d.slots))
		}
		b := r.a.buf(4096, 0)
		if _, err := r.d.ReadAt(b, 4096); err != nil || !bytes.Equal(b, r.diskCopy()[4096:8192]) {
			t.Fatalf("stride %d: read: %v", dstrd, err)
		}
	}
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.lbads, f.mqes = maxLBAShift, 3 })
	if r.d.SectorSize() != 4096 || r.d.Size() != diskSize || len(r.d.slots) != 3 || r.d.Identity().MaxTransfer != DefaultMaxRequest {
		t.Errorf("4096-byte blocks: sector %d size %d, %d slots, identity %+v", r.d.SectorSize(), r.d.Size(), len(r.d.slots), r.d.Identity())
	}
}

func TestInitErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeNVMe, *Options)
		is   error
		want string
	}{
		{"gone", func(f *fakeNVMe, o *Options) { f.gone = true }, ErrGone, "all ones"},
		{"never-ready", func(f *fakeNVMe, o *Options) { f.neverReady = true }, ErrNotReady, "did not set within CAP.TO (1s)"},
		{"fatal", func(f *fakeNVMe, o *Options) { f.cfs, f.stickyCFS = true, true }, ErrFatal, "while enabling"},
		{"stuck", func(f *fakeNVMe, o *Options) { f.rdy, f.stuckReady = true, true }, ErrNotReady, "may still access memory"},
		{"no-nvm", func(f *fakeNVMe, o *Options) { f.noNVM = true }, nil, "NVM Command Set"},
		{"mpsmin", func(f *fakeNVMe, o *Options) { f.mpsmin = 1 }, nil, "8192 bytes (CAP.MPSMIN)"},
		{"sqes", func(f *fakeNVMe, o *Options) { f.sqes = 0x77 }, nil, "queue entry sizes"},
		{"metadata", func(f *fakeNVMe, o *Options) { f.ms = 8 }, nil, "8 bytes of metadata"},
		{"lbads", func(f *fakeNVMe, o *Options) { f.lbads = 13 }, nil, "2^13 bytes"},
		{"flbas", func(f *fakeNVMe, o *Options) { f.flbas = 5 }, nil, "LBA format 5 of 2"},
		{"no-namespace", func(f *fakeNVMe, o *Options) { o.Namespace = 2 }, nil, "namespace 2 does not exist"},
		{"inactive", func(f *fakeNVMe, o *Options) { f.nn, o.Namespace = 2, 2 }, nil, "not active"},
		{"identify-error", func(f *fakeNVMe, o *Options) {
			f.fault = func(q int, op byte) action { return pick(q == 0 && op == adminIdentify, actStatus) }
			f.status = st(SCTGeneric, SCInternalError)
		}, nil, "Identify Controller: Internal Error (SCT 0x0 SC 0x06)"},
		{"admin-timeout", func(f *fakeNVMe, o *Options) {
			f.fault = func(q int, op byte) action { return pick(op == adminCreateIOSQ, actHang) }
		}, ErrTimeout, "Create I/O Submission Queue"},
		{"admin-bad-cid", func(f *fakeNVMe, o *Options) {
			f.fault = func(q int, op byte) action { return pick(op == adminSetFeatures, actBadCID) }
		}, ErrProtocol, "admin completion for command ID"},
		{"admin-bad-sqid", func(f *fakeNVMe, o *Options) {
			f.fault = func(q int, op byte) action { return pick(q == 0, actBadSQID) }
		}, ErrProtocol, "names submission queue 1"},
		{"admin-queue-size", func(f *fakeNVMe, o *Options) {
			f.fault = func(q int, op byte) action { return pick(op == adminCreateIOCQ, actStatus) }
			f.status = st(SCTCommandSpecific, SCInvalidQueueSize)
		}, nil, "Invalid Queue Size (SCT 0x1 SC 0x02)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigNoOpen(t, tc.set)
			_, err := New(r.f, r.a, r.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("got %v, want %v containing %q", err, tc.is, tc.want)
			}
			if tc.name != "gone" && tc.name != "stuck" && r.f.cc&(1<<CC_EN) != 0 {
				t.Errorf("controller left enabled after a failed bring-up")
			}
			r.quiet(t, "failed New")
		})
	}
}

// pick returns a when cond holds, else actNormal.
func pick(cond bool, a action) action {
	if cond {
		return a
	}
	return actNormal
}

func configs() map[string]func(*fakeNVMe, *Options) {
	return map[string]func(*fakeNVMe, *Options){
		"default": nil,
		"4k-blocks": func(f *fakeNVMe, o *Options) {
			f.lbads = maxLBAShift
		},
		"mdts-8k": func(f *fakeNVMe, o *Options) {
			f.mdts = 1
		},
		"two-entry-queue": func(f *fakeNVMe, o *Options) {
			f.mqes, f.dstrd = 1, 2
		},
		"big-commands": func(f *fakeNVMe, o *Options) {
			o.MaxRequest = 4 << 20 // capped at one PRP list page: 2 MiB
		},
		"lazy-reverse": func(f *fakeNVMe, o *Options) {
			f.mode = modeLazy
			o.MaxRequest = 32 << 10
		},
		"async": func(f *fakeNVMe, o *Options) {
			f.startAsync()
			o.MaxRequest = 16 << 10
			o.Now, o.Timeout = nil, 10*time.Second
		},
	}
}

func TestRoundTrip(t *testing.T) {
	for name, setup := range configs() {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, setup)
			sector := r.d.SectorSize()
			want := r.diskCopy()
			rng := rand.New(rand.NewPCG(1, 2))
			skews := []int{0, 512, pageSize - 512}
			if name == "async" { // real concurrency: slower, fewer cases
				skews = skews[:1]
			}
			for _, n := range []int{512, 1024, 4096, 4608, 8192, 12288, 65536, 1 << 20, 3<<20 + 4096} {
				if n%sector != 0 {
					continue
				}
				for _, off := range []int64{0, int64(sector), 7 * int64(sector), int64(diskSize - n)} {
					for _, skew := range skews {
						mark := r.a.next
						w := r.a.buf(n, skew)
						for i := range w {
							w[i] = byte(rng.Uint32())
						}
						if k, err := r.d.WriteAt(w, off); err != nil || k != n {
							t.Fatalf("WriteAt(%d, %d, skew %d) = %d, %v", n, off, skew, k, err)
						}
						copy(want[off:], w)
						g := r.a.buf(n, skew)
						if k, err := r.d.ReadAt(g, off); err != nil || k != n {
							t.Fatalf("ReadAt(%d, %d, skew %d) = %d, %v", n, off, skew, k, err)
						}
						if !bytes.Equal(g, want[off:off+int64(n)]) {
							t.Fatalf("ReadAt(%d, %d, skew %d): data mismatch", n, off, skew)
						}
						r.a.next = mark // reuse arena space
					}
				}
			}
			if !bytes.Equal(r.diskCopy(), want) {
				t.Fatal("disk contents differ from model")
			}
			st := r.d.Stats()
			if cmds := r.f.ios(ioRead) + r.f.ios(ioWrite); uint64(cmds) != st.Commands || st.BytesBounced != 0 || st.Resets != 0 {
				t.Errorf("stats %+v, controller saw %d commands", st, cmds)
			}
			if mdts := r.f.mdts; mdts != 0 && r.f.maxXfer != pageSize<<mdts {
				t.Errorf("largest transfer %d bytes, want MDTS %d", r.f.maxXfer, pageSize<<mdts)
			}
		})
	}
}

func TestPRPs(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		n, skew, lists int
	}{
		{4096, 0, 0}, {512, 4096 - 512, 0}, {8192, 0, 0}, {4096, 512, 0}, {8192, 512, 1}, {12288, 0, 1}, {512 << 10, 0, 1},
	} {
		mark := r.a.next
		before := r.f.listCmds
		if _, err := r.d.ReadAt(r.a.buf(tc.n, tc.skew), 0); err != nil {
			t.Fatal(err)
		}
		if got := r.f.listCmds - before; got != tc.lists {
			t.Errorf("%d bytes at page offset %d: %d commands with PRP lists, want %d", tc.n, tc.skew, got, tc.lists)
		}
		r.a.next = mark
	}
}

func TestSplitting(t *testing.T) {
	for _, tc := range []struct {
		mdts       uint8
		maxRequest int
		cmds       int
	}{
		{2, 0, 64},        // MDTS 16 KiB
		{0, 64 << 10, 16}, // Options.MaxRequest
		{0, 0, 2},         // DefaultMaxRequest
		{9, 8 << 20, 1},   // MDTS 2 MiB, one PRP list page
		{0, 100, 256},     // at least a page
		{0, 5000, 256},    // whole pages
	} {
		r := newRig(t, func(f *fakeNVMe, o *Options) { f.mdts, o.MaxRequest = tc.mdts, tc.maxRequest })
		if _, err := r.d.ReadAt(r.a.buf(1<<20, 0), 0); err != nil {
			t.Fatal(err)
		}
		if n := r.f.ios(ioRead); n != tc.cmds {
			t.Errorf("MDTS %d, MaxRequest %d: 1 MiB read took %d commands, want %d", tc.mdts, tc.maxRequest, n, tc.cmds)
		}
	}
}

func TestInFlight(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) {
		f.mode = modeLazy
		o.MaxRequest = 64 << 10
	})
	doorbells := r.f.sqDoorbells
	p := r.a.buf(1<<20, 0)
	if _, err := r.d.ReadAt(p, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, r.diskCopy()[1<<20:2<<20]) {
		t.Fatal("data mismatch")
	}
	if r.f.maxBatch != 16 || r.f.sqDoorbells-doorbells != 1 {
		t.Errorf("max batch %d, %d doorbells; want 16 commands in flight after 1 doorbell", r.f.maxBatch, r.f.sqDoorbells-doorbells)
	}
	// 40 commands through 31 slots: the queue refills as completions come.
	if _, err := r.d.ReadAt(r.a.buf(40*64<<10, 0), 0); err != nil {
		t.Fatal(err)
	}
	if r.f.maxBatch != DefaultQueueSize-1 {
		t.Errorf("max batch %d, want %d", r.f.maxBatch, DefaultQueueSize-1)
	}
}

func TestRefused(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.lbads = maxLBAShift })
	b := r.a.buf(8192, 0)
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
	if n := r.f.ios(ioRead) + r.f.ios(ioWrite); n != 0 {
		t.Errorf("%d commands reached the controller", n)
	}
}

func TestMediaError(t *testing.T) {
	for name, setup := range configs() {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, setup)
			sector := int64(r.d.SectorSize())
			r.f.set(func() { r.f.errLo, r.f.errHi = uint64(1<<20/sector), uint64(1<<20/sector)+2 })
			b := r.a.buf(2<<20, 0)
			_, err := r.d.ReadAt(b, 0)
			var se *StatusError
			if !errors.As(err, &se) || se.SCT() != SCTMediaError || se.SC() != SCUnrecoveredReadError ||
				!strings.Contains(err.Error(), "Unrecovered Read Error (SCT 0x2 SC 0x81)") || !strings.Contains(err.Error(), "read of LBAs") {
				t.Fatalf("ReadAt over bad blocks: %v", err)
			}
			r.quiet(t, "after error status")
			lba := 1<<20/sector - 1
			_, err = r.d.WriteAt(b[:2*sector], lba*sector)
			if want := "write of LBAs " + itoa(lba) + "-" + itoa(lba+1) + ": Write Fault"; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("WriteAt over bad blocks: %v, want %q", err, want)
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
			if st := r.d.Stats(); st.Resets != 0 || st.Errors != 2 {
				t.Errorf("error statuses: stats %+v, want 2 errors and no reset", st)
			}
		})
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func TestFlush(t *testing.T) {
	r := newRig(t, nil)
	for i := range 3 {
		if err := r.d.Flush(); err != nil {
			t.Fatal(err)
		}
		if n := r.f.ios(ioFlush); n != i+1 {
			t.Fatalf("controller saw %d flushes, want %d", n, i+1)
		}
	}
	r.f.set(func() { r.f.fault = func(q int, op byte) action { return pick(op == ioFlush && q == 1, actStatus) } })
	r.f.status = st(SCTGeneric, SCInternalError)
	if err := r.d.Flush(); err == nil || !strings.Contains(err.Error(), "flush: Internal Error") {
		t.Fatalf("failing flush: %v", err)
	}
	r = newRig(t, func(f *fakeNVMe, o *Options) { f.vwc = false })
	if err := r.d.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := r.f.ios(ioFlush); n != 0 || r.d.Stats().Flushes != 0 {
		t.Fatalf("Flush without a volatile write cache sent %d commands", n)
	}
}

func TestBounce(t *testing.T) {
	for _, phys := range []bool{false, true} {
		r := newRig(t, func(f *fakeNVMe, o *Options) {
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
	// An arena buffer at an odd address cannot be a PRP entry: bounced.
	r := newRig(t, nil)
	b := r.a.buf(4096+2, 0)[2:]
	if _, err := r.d.ReadAt(b, 0); err != nil || r.d.Stats().BytesBounced != 4096 {
		t.Fatalf("misaligned buffer: %v, stats %+v", err, r.d.Stats())
	}
}

func TestWrap(t *testing.T) {
	n := 3000
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.mqes = 3 })
	b := r.a.buf(1024, 0)
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
	if c := r.f.ios(ioRead); c != n {
		t.Errorf("controller saw %d commands, want %d", c, n)
	}
}

// TestFaults: each kind of broken completion on the first I/O command of
// a multi-command read gives its error, leaves no command in the
// controller, and the device works again afterwards.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		act    action
		is     error
		want   string
		resets uint64
	}{
		{"drop", actDrop, ErrTimeout, "timed out after 50ms (read of LBAs", 1},
		{"hang", actHang, ErrTimeout, "timed out", 1},
		{"bad-phase", actBadPhase, ErrTimeout, "timed out", 1},
		{"fatal", actFatal, ErrFatal, "timed out after 50ms (read of LBAs 0-63); nvme: controller fatal status (CSTS.CFS)", 1},
		{"bad-cid", actBadCID, ErrProtocol, "which is not in flight", 1},
		{"bad-sqid", actBadSQID, ErrProtocol, "completion queue 1 entry 0 names submission queue 0", 1},
		{"bad-sqhd", actBadSQHD, ErrProtocol, "reports SQ head 32 outside", 1},
		{"status", actStatus, nil, "read of LBAs 0-63: Data Transfer Error (SCT 0x0 SC 0x04, DNR)", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(f *fakeNVMe, o *Options) { o.MaxRequest = 32 << 10 })
			faults := 1
			r.f.set(func() {
				r.f.status = st(SCTGeneric, SCDataTransferError) | 1<<statusDNRShift
				r.f.fault = func(q int, op byte) action {
					if q == 1 && faults > 0 {
						faults--
						return tc.act
					}
					return actNormal
				}
			})
			enables := r.f.enables
			b := r.a.buf(256<<10, 0)
			_, err := r.d.ReadAt(b, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("got %v, want %v containing %q", err, tc.is, tc.want)
			}
			if tc.is == ErrFatal && !errors.Is(err, ErrTimeout) {
				t.Errorf("fatal status not reported as a timeout: %v", err)
			}
			r.quiet(t, "failed read")
			st := r.d.Stats()
			if st.Resets != tc.resets || uint64(r.f.enables-enables) != tc.resets {
				t.Errorf("%d resets (%d enables), want %d", st.Resets, r.f.enables-enables, tc.resets)
			}
			if errors.Is(err, ErrProtocol) != (st.ProtocolErrors == 1) {
				t.Errorf("stats %+v for %v", st, err)
			}
			if errors.Is(err, ErrTimeout) != (st.Timeouts == 1) {
				t.Errorf("stats %+v for %v", st, err)
			}
			if _, err := r.d.ReadAt(b, 0); err != nil || !bytes.Equal(b, r.diskCopy()[:len(b)]) {
				t.Fatalf("read after the fault: %v", err)
			}
			r.quiet(t, "read after the fault")
		})
	}
}

// TestDuplicate: a completion posted twice is caught on the next request.
func TestDuplicate(t *testing.T) {
	r := newRig(t, nil)
	once := true
	r.f.set(func() {
		r.f.fault = func(q int, op byte) action {
			if q == 1 && once {
				once = false
				return actDup
			}
			return actNormal
		}
	})
	b := r.a.buf(4096, 0)
	if _, err := r.d.ReadAt(b, 0); err != nil {
		t.Fatalf("first read: %v", err)
	}
	if _, err := r.d.ReadAt(b, 4096); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "not in flight") {
		t.Fatalf("read after a duplicate completion: %v", err)
	}
	if _, err := r.d.ReadAt(b, 4096); err != nil || !bytes.Equal(b, r.diskCopy()[4096:8192]) {
		t.Fatalf("third read: %v", err)
	}
}

// TestReinitFailure: a reset that fails is remembered; each request retries
// it until the controller comes back.
func TestReinitFailure(t *testing.T) {
	r := newRig(t, nil)
	b := r.a.buf(4096, 0)
	r.f.set(func() {
		r.f.fault = func(q int, op byte) action { return pick(q == 1, actHang) }
		r.f.neverReady = true
	})
	_, err := r.d.ReadAt(b, 0)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "reinitialisation failed") {
		t.Fatalf("hang with a failing reset: %v", err)
	}
	r.quiet(t, "failed reset")
	enables := r.f.enables
	if _, err := r.d.ReadAt(b, 0); !errors.Is(err, ErrNotReady) {
		t.Fatalf("second request: %v", err)
	}
	if r.f.enables != enables+1 {
		t.Errorf("second request made %d enable attempts, want 1", r.f.enables-enables)
	}
	if r.f.cc&(1<<CC_EN) != 0 {
		t.Errorf("controller left enabled after failed reinitialisation")
	}
	r.f.set(func() { r.f.neverReady, r.f.fault = false, nil })
	if _, err := r.d.ReadAt(b, 0); err != nil || !bytes.Equal(b, r.diskCopy()[:4096]) {
		t.Fatalf("request after the controller recovered: %v", err)
	}
	if st := r.d.Stats(); st.Resets != 3 || st.Timeouts != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestStuck: a controller that does not stop when disabled is reported as such.
func TestStuck(t *testing.T) {
	r := newRig(t, nil)
	r.f.set(func() {
		r.f.fault = func(q int, op byte) action { return pick(q == 1, actHang) }
		r.f.stuckReady = true
	})
	_, err := r.d.ReadAt(r.a.buf(4096, 0), 0)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "did not clear within CAP.TO") || !strings.Contains(err.Error(), "may still access memory") {
		t.Fatalf("stuck controller: %v", err)
	}
	disables := r.f.disables
	if _, err := r.d.ReadAt(r.a.buf(4096, 0), 0); err == nil {
		t.Fatal("request on a stuck controller succeeded")
	}
	if r.f.disables != disables {
		t.Errorf("a disabled stuck controller saw another CC.EN 1->0")
	}
}

// TestNamespaceChange: a reset that finds another namespace geometry fails.
func TestNamespaceChange(t *testing.T) {
	r := newRig(t, nil)
	r.f.set(func() {
		r.f.fault = func(q int, op byte) action { return pick(q == 1, actHang) }
		r.f.disk = make([]byte, diskSize/2)
	})
	if _, err := r.d.ReadAt(r.a.buf(4096, 0), 0); err == nil || !strings.Contains(err.Error(), "changed across reset") {
		t.Fatalf("namespace change: %v", err)
	}
}

func TestShutdown(t *testing.T) {
	r := newRig(t, nil)
	if err := r.d.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if field(uint64(r.f.cc), CC_SHN, ccSHNBits) != CC_SHN_NORMAL || r.f.shst != CSTS_SHST_COMPLETE {
		t.Fatalf("CC %#x, SHST %d", r.f.cc, r.f.shst)
	}
	b := r.a.buf(4096, 0)
	if _, err := r.d.ReadAt(b, 0); err != nil || !bytes.Equal(b, r.diskCopy()[:4096]) {
		t.Fatalf("read after shutdown: %v", err)
	}
}

func TestStatusText(t *testing.T) {
	for _, tc := range []struct {
		f    uint16
		want string
	}{
		{st(SCTGeneric, SCLBAOutOfRange), "LBA Out of Range (SCT 0x0 SC 0x80)"},
		{st(SCTCommandSpecific, SCInvalidQueueID), "Invalid Queue Identifier (SCT 0x1 SC 0x01)"},
		{st(SCTMediaError, SCUnrecoveredReadError) | 1<<statusDNRShift, "Unrecovered Read Error (SCT 0x2 SC 0x81, DNR)"},
		{st(SCTVendor, 0x42), "vendor specific status (SCT 0x7 SC 0x42)"},
		{st(SCTGeneric, 0x7f), "unknown status (SCT 0x0 SC 0x7f)"},
	} {
		if got := statusText(tc.f); got != tc.want {
			t.Errorf("statusText(%#x) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

func BenchmarkReadAt1MiB(b *testing.B) {
	r := newRig(b, nil)
	p := r.a.buf(1<<20, 0)
	b.SetBytes(1 << 20)
	for i := 0; b.Loop(); i++ {
		if _, err := r.d.ReadAt(p, int64(i%8)<<20); err != nil {
			b.Fatal(err)
		}
	}
}
