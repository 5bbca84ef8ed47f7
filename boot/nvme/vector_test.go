package nvme

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const (
	vecSkew = 0x200 // page offset of the first segment of vectored writes
	vecMid  = 3     // pages of the middle segment
	vecTail = 0x200 // bytes of the last segment, in its first page
	vecOff  = 1 << 20
	vecBad  = 2 // an offset that is not dword aligned
)

// vecSegs returns the segments of a vectored write in separate arena
// allocations, none physically adjacent to another: the first starts
// vecSkew into a page and ends on a page boundary, the middle one is
// whole pages (preceded by an empty segment), the last starts on a page
// boundary and ends vecTail bytes into it. The total is a multiple of
// 4096-byte blocks.
func vecSegs(r *rig, rng *rand.Rand) [][]byte {
	first := r.a.buf(pageSize-vecSkew, vecSkew)
	r.a.buf(pageSize, 0) // a gap: no joining
	mid := r.a.buf(vecMid*pageSize, 0)
	r.a.buf(pageSize, 0)
	last := r.a.buf(vecTail, 0)
	segs := [][]byte{first, nil, mid, last}
	for _, s := range segs {
		fill(rng, s)
	}
	return segs
}

// wantPRPs models the PRP entries of the commands of a vectored write of
// segs split at multiples of reqLen bytes: the address of each command's
// first byte, then each further memory page its bytes lie in.
func wantPRPs(t *testing.T, a *arena, segs [][]byte, reqLen int) [][]uint64 {
	var pas []uint64 // the physical address of every byte
	for _, s := range segs {
		if len(s) == 0 {
			continue
		}
		pa, ok := a.phys(s)
		if !ok {
			t.Fatal("segment outside the arena")
		}
		for i := range s {
			pas = append(pas, pa+uint64(i))
		}
	}
	var cmds [][]uint64
	for pos := 0; pos < len(pas); pos += reqLen {
		cmd := []uint64{pas[pos]}
		page := pas[pos] &^ pageMask
		for _, pa := range pas[pos:min(pos+reqLen, len(pas))] {
			if pa&^pageMask != page {
				page = pa &^ pageMask
				cmd = append(cmd, page)
			}
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}

// gotPRPs returns the PRPs the fake resolved since its log was cleared,
// in LBA order.
func gotPRPs(f *fakeNVMe) [][]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	log := slices.Clone(f.prpLog)
	slices.SortFunc(log, func(a, b prpRecord) int { return int(a.slba) - int(b.slba) })
	var cmds [][]uint64
	for _, rec := range log {
		cmds = append(cmds, rec.prps)
	}
	return cmds
}

// TestWriteVAsync: a vectored write of segments in separate places (the
// first from mid-page to a page boundary, whole pages, the last from a
// page boundary to mid-page) is still in flight when WriteVAsync returns,
// and after Sync is on the disk byte-exact, with the PRP entries the
// commands should have, also when commands split the segments.
func TestWriteVAsync(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeNVMe, *Options)
	}{
		{"one-command", nil},
		{"page-commands", func(f *fakeNVMe, o *Options) { o.MaxRequest = pageSize }},
		{"mdts-8k", func(f *fakeNVMe, o *Options) { f.mdts = 1 }},
		{"4k-blocks-lazy", func(f *fakeNVMe, o *Options) { f.lbads, f.mode, o.MaxRequest = maxLBAShift, modeLazy, 2*pageSize }},
		{"two-entry-queue", func(f *fakeNVMe, o *Options) { f.mqes, o.MaxRequest = 1, pageSize }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(f *fakeNVMe, o *Options) {
				f.logPRPs = true
				if tc.set != nil {
					tc.set(f, o)
				}
			})
			rng := rand.New(rand.NewPCG(21, 22))
			segs := vecSegs(r, rng)
			whole := bytes.Join(segs, nil)
			reqLen := r.d.Identity().MaxTransfer
			cmds := (len(whole) + reqLen - 1) / reqLen
			before := r.diskCopy()
			r.f.set(func() { r.f.prpLog = nil })
			started, err := r.d.WriteVAsync(segs, vecOff)
			if !started || err != nil {
				t.Fatalf("WriteVAsync: started %v, %v", started, err)
			}
			if r.f.mode == modeLazy {
				if r.d.inflight != cmds || !bytes.Equal(r.diskCopy(), before) {
					t.Fatalf("%d commands in flight after WriteVAsync, want %d; it waited for them", r.d.inflight, cmds)
				}
			}
			if err := r.d.Sync(); err != nil {
				t.Fatal(err)
			}
			r.quiet(t, "Sync")
			want := before
			copy(want[vecOff:], whole)
			if !bytes.Equal(r.diskCopy(), want) {
				t.Fatal("disk differs from the segments")
			}
			if got, want := gotPRPs(r.f), wantPRPs(t, r.a, segs, reqLen); !slices.EqualFunc(got, want, slices.Equal) {
				t.Errorf("PRPs (PRP1, then pages)\n%x\nwant\n%x", got, want)
			}
			if st := r.d.Stats(); st.BytesWritten != uint64(len(whole)) || st.Commands != uint64(cmds) || st.BytesBounced != 0 {
				t.Errorf("stats %+v, want %d bytes written by %d commands", st, len(whole), cmds)
			}
		})
	}
}

// TestWriteVAsyncJoined: segments that are physically adjacent are
// joined, whatever their lengths and alignment; a segment that ends mid
// page where a command ends is fine, and the next command's first may
// start anywhere dword aligned.
func TestWriteVAsyncJoined(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.logPRPs, o.MaxRequest = true, pageSize })
	rng := rand.New(rand.NewPCG(23, 24))
	p := r.a.buf(3*pageSize, vecSkew)
	fill(rng, p)
	q := r.a.buf(pageSize, vecSkew+prpAlign)
	fill(rng, q)
	for _, tc := range []struct {
		name string
		segs [][]byte
	}{
		{"odd-cuts", [][]byte{p[:vecBad+1], p[vecBad+1 : pageSize+vecBad], p[pageSize+vecBad:]}},
		// p[:pageSize] ends vecSkew into a page, where the first command
		// ends; q is the second command's PRP1.
		{"command-ends-mid-page", [][]byte{p[:pageSize], q[:vecTail]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			whole := bytes.Join(tc.segs, nil)
			r.f.set(func() { r.f.prpLog = nil })
			if started, err := r.d.WriteVAsync(tc.segs, vecOff); !started || err != nil {
				t.Fatalf("WriteVAsync: started %v, %v", started, err)
			}
			if err := r.d.Sync(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.diskCopy()[vecOff:vecOff+len(whole)], whole) {
				t.Fatal("disk differs from the segments")
			}
			if got, want := gotPRPs(r.f), wantPRPs(t, r.a, tc.segs, pageSize); !slices.EqualFunc(got, want, slices.Equal) {
				t.Errorf("PRPs\n%x\nwant\n%x", got, want)
			}
		})
	}
}

// TestWriteVAsyncRefused: segments PRP entries cannot describe return
// started false and a nil error, and submit nothing; a bad length or
// offset is an error, as for WriteAsync.
func TestWriteVAsyncRefused(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.mode = modeLazy })
	pg := func(n, skew int) []byte { return r.a.buf(n, skew) }
	for _, tc := range []struct {
		name string
		segs [][]byte
	}{
		{"middle-not-page-aligned", [][]byte{pg(pageSize-vecSkew, vecSkew), pg(pageSize-vecSkew, vecSkew), pg(vecTail, 0)}},
		{"last-not-page-aligned", [][]byte{pg(pageSize-vecSkew, vecSkew), pg(vecTail, vecSkew)}},
		{"first-not-ending-on-page", [][]byte{pg(vecSkew, 0), pg(pageSize, 0)}},
		{"middle-not-ending-on-page", [][]byte{pg(pageSize-vecSkew, vecSkew), pg(vecTail, 0), pg(pageSize-vecTail, 0)}},
		{"first-not-dword-aligned", [][]byte{pg(pageSize-vecBad, vecBad), pg(vecSkew+vecBad, 0)}},
		{"no-physical-address", [][]byte{pg(pageSize-vecSkew, vecSkew), make([]byte, pageSize), pg(vecTail, 0)}},
		// Fine for commands of a page (TestWriteVAsyncJoined), not here.
		{"ends-mid-page-mid-command", [][]byte{pg(pageSize, vecSkew), pg(vecTail, prpAlign)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, stats := r.diskCopy(), r.d.Stats()
			started, err := r.d.WriteVAsync(tc.segs, vecOff)
			if started || err != nil {
				t.Fatalf("WriteVAsync: started %v, %v; want refused", started, err)
			}
			if r.d.inflight != 0 || r.f.outstanding() != 0 || r.d.Stats() != stats || r.d.Sync() != nil || !bytes.Equal(r.diskCopy(), before) {
				t.Fatalf("a refused WriteVAsync started something: %d in flight, stats %+v", r.d.inflight, r.d.Stats())
			}
		})
	}
	seg := r.a.buf(pageSize, 0)
	for _, tc := range []struct {
		segs [][]byte
		off  int64
	}{
		{[][]byte{seg[:vecSkew], seg[vecSkew : vecSkew+vecBad]}, 0}, // not whole blocks
		{[][]byte{seg}, vecSkew + vecBad},
		{[][]byte{seg}, diskSize},
	} {
		if started, err := r.d.WriteVAsync(tc.segs, tc.off); started || err == nil {
			t.Errorf("WriteVAsync of %d bytes at %d: started %v, %v; want an error", len(bytes.Join(tc.segs, nil)), tc.off, started, err)
		}
	}
	if n := r.f.ios(ioWrite); n != 0 {
		t.Errorf("refused writes issued %d commands", n)
	}

	// Without Options.Phys nothing has a physical address.
	r = newRig(t, func(f *fakeNVMe, o *Options) { o.Phys = nil })
	if started, err := r.d.WriteVAsync([][]byte{r.a.buf(pageSize, 0)}, 0); started || err != nil || r.f.ios(ioWrite) != 0 {
		t.Fatalf("WriteVAsync without Options.Phys: started %v, %v", started, err)
	}
}

// TestWriteVAsyncError: as for WriteAsync, a failed vectored write is
// reported by Sync, once; one that an operation in between completed is
// reported by the next call, once, which starts nothing.
func TestWriteVAsyncError(t *testing.T) {
	r := newRig(t, func(f *fakeNVMe, o *Options) { f.mode, o.MaxRequest = modeLazy, pageSize })
	segs := vecSegs(r, rand.New(rand.NewPCG(25, 26)))
	r.f.set(func() { r.f.errLo, r.f.errHi = 9, 10 }) // the third command
	if started, err := r.d.WriteVAsync(segs, 0); !started || err != nil {
		t.Fatalf("WriteVAsync: started %v, %v", started, err)
	}
	var se *StatusError
	if err := r.d.Sync(); !errors.As(err, &se) || se.SC() != SCWriteFault || !strings.Contains(err.Error(), "write of LBAs 8-15") {
		t.Fatalf("Sync after a failed vectored write: %v", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("second Sync: %v", err)
	}

	if started, err := r.d.WriteVAsync(segs, 0); !started || err != nil {
		t.Fatalf("WriteVAsync: started %v, %v", started, err)
	}
	if _, err := r.d.ReadAt(r.a.buf(pageSize, 0), 4<<20); err != nil {
		t.Fatal(err)
	}
	r.f.set(func() { r.f.errHi = 0 })
	writes := r.f.ios(ioWrite)
	if _, err := r.d.WriteVAsync(segs, vecOff); !errors.As(err, &se) || se.SC() != SCWriteFault {
		t.Fatalf("WriteVAsync after a failed one completed: %v, want its Write Fault", err)
	}
	if err := r.d.Sync(); err != nil {
		t.Fatalf("Sync after WriteVAsync returned the error: %v", err)
	}
	if n := r.f.ios(ioWrite) - writes; n != 0 {
		t.Errorf("the WriteVAsync that returned an earlier error started %d commands", n)
	}
	if st := r.d.Stats(); st.Errors != 2 || st.Resets != 0 {
		t.Errorf("stats %+v, want 2 errors and no reset", st)
	}
	// The device works on.
	if started, err := r.d.WriteVAsync(segs, vecOff); !started || err != nil || r.d.Sync() != nil {
		t.Fatalf("WriteVAsync after the errors: started %v, %v", started, err)
	}
	if whole := bytes.Join(segs, nil); !bytes.Equal(r.diskCopy()[vecOff:vecOff+len(whole)], whole) {
		t.Fatal("disk differs from the segments")
	}
}

// TestWriteVAsyncTimeout: a controller that stops completing makes Sync
// of a vectored write fail with ErrTimeout and resets it.
func TestWriteVAsyncTimeout(t *testing.T) {
	r := newRig(t, nil)
	r.f.set(func() { r.f.fault = func(q int, op byte) action { return pick(q == ioQueueID, actHang) } })
	segs := vecSegs(r, rand.New(rand.NewPCG(27, 28)))
	if started, err := r.d.WriteVAsync(segs, 0); !started || err != nil {
		t.Fatalf("WriteVAsync: started %v, %v", started, err)
	}
	if err := r.d.Sync(); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "write of LBAs") {
		t.Fatalf("Sync of a hung vectored write: %v", err)
	}
	r.quiet(t, "Sync of a hung vectored write")
	if st := r.d.Stats(); st.Timeouts != 1 || st.Resets != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestReadV: a read scattered into the segments of a vectored write
// brings back exactly the disk's bytes, split into commands as writes
// are, with the PRP entries a write of the same segments has; segments
// PRP entries cannot describe are refused before anything is read.
func TestReadV(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeNVMe, *Options)
	}{
		{"one-command", nil},
		{"page-commands", func(f *fakeNVMe, o *Options) { o.MaxRequest = pageSize }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(f *fakeNVMe, o *Options) {
				f.logPRPs = true
				if tc.set != nil {
					tc.set(f, o)
				}
			})
			segs := vecSegs(r, rand.New(rand.NewPCG(31, 32)))
			whole := bytes.Join(segs, nil)
			r.f.set(func() { r.f.prpLog = nil })
			done, err := r.d.ReadV(segs, vecOff)
			if !done || err != nil {
				t.Fatalf("ReadV: done %v, %v", done, err)
			}
			if got, want := bytes.Join(segs, nil), r.diskCopy()[vecOff:vecOff+len(whole)]; !bytes.Equal(got, want) {
				t.Fatal("the segments differ from the disk")
			}
			if got, want := gotPRPs(r.f), wantPRPs(t, r.a, segs, r.d.Identity().MaxTransfer); !slices.EqualFunc(got, want, slices.Equal) {
				t.Errorf("PRPs (PRP1, then pages)\n%x\nwant\n%x", got, want)
			}
			pg := func(n, skew int) []byte { return r.a.buf(n, skew) }
			bad := [][]byte{pg(pageSize-vecSkew, vecSkew), pg(pageSize-vecSkew, vecSkew), pg(vecTail, 0)}
			reads := r.f.ios(ioRead)
			if done, err := r.d.ReadV(bad, vecOff); done || err != nil || r.f.ios(ioRead) != reads {
				t.Fatalf("ReadV of a middle segment not page aligned: done %v, %v, %d commands", done, err, r.f.ios(ioRead)-reads)
			}
		})
	}
}
