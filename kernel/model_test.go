package kernel

import (
	"errors"
	"strings"
	"testing"

	"tamavisor/svm"
)

func TestCPUIDModel(t *testing.T) {
	m := NewCPUIDModel(fakeCPUID)
	for _, c := range []struct {
		leaf, sub  uint32
		a, b, c, d uint32
	}{
		{0, 0, maxBasicLeaf, 0x68747541, 0x444d4163, 0x69746e65},
		{0, 9, maxBasicLeaf, 0x68747541, 0x444d4163, 0x69746e65}, // subleaf ignored
		{5, 0, 0, 0, 0, 0}, // MONITOR leaf
		{7, 0, 0, f7ebxFSGSBASE | f7ebxBMI1 | f7ebxBMI2, 0, 0},
		{7, 1, 0, 0, 0, 0},
		{7, 4, 0, 0, 0, 0},
		{0xd, 0, 0, 0, 0, 0},
		{0xd, 1, 0, 0, 0, 0},
		{0xe, 0, 0, 0, 0, 0},  // above the clamped max
		{0x10, 0, 0, 0, 0, 0}, // host has it, model does not
		{0x80000000, 0, maxExtLeaf, 0x68747541, 0x444d4163, 0x69746e65},
		{0x80000001, 0, 0x00a20f10, 0x20000000, 1, hostExt1EDX},
		{0x8000000a, 0, 0, 0, 0, 0},
		{0x8000001f, 0, 0, 0, 0, 0},
		{0x40000000, 3, 0x40000000, 0x616d6154, 0x6f736956, 0x00564872},
		{0x40000100, 0, 0, 0, 0, 0},
		{0xffffffff, 0, 0, 0, 0, 0},
	} {
		a, b, cc, d := m.Lookup(c.leaf, c.sub)
		if a != c.a || b != c.b || cc != c.c || d != c.d {
			t.Errorf("leaf %#x.%d: %#x %#x %#x %#x, want %#x %#x %#x %#x", c.leaf, c.sub, a, b, cc, d, c.a, c.b, c.c, c.d)
		}
	}
	a, b, c, d := m.Lookup(1, 0)
	if a != 0x00a20f10 || b != 0x00010800 || c != 1|1<<20|hypervisorBit || d != 1|1<<25|1<<26|f1edxAPIC {
		t.Errorf("leaf 1: %#x %#x %#x %#x", a, b, c, d)
	}
	// The table is the model: no hypervisor-only leaves beyond what is listed.
	for _, e := range m.Entries {
		if e.Leaf == 0x8000000a && e.EAX|e.EBX|e.ECX|e.EDX != 0 {
			t.Errorf("SVM leaf in the table: %+v", e)
		}
	}
}

// TestCPUIDModelSmallHost: a host with few leaves yields a model with few.
func TestCPUIDModelSmallHost(t *testing.T) {
	calls := 0
	host := func(leaf, sub uint32) (uint32, uint32, uint32, uint32) {
		calls++
		switch leaf {
		case 0:
			return 1, 1, 2, 3
		case 0x80000000:
			return 0x80000001, 0, 0, 0
		case 1:
			return 0xf00, 0xff000000, f1ecxAVX, f1edxMCE
		case 0x80000001:
			return 0, 0, e1ecxSVM, 0
		}
		t.Errorf("host asked for leaf %#x.%d beyond its maximum", leaf, sub)
		return 0, 0, 0, 0
	}
	m := NewCPUIDModel(host)
	if _, _, c, _ := m.Lookup(0x80000001, 0); c != 0 {
		t.Errorf("SVM bit shown: %#x", c)
	}
	if a, _, _, _ := m.Lookup(0, 0); a != 1 {
		t.Errorf("max leaf %d, want the host's 1", a)
	}
	if _, b, c, d := m.Lookup(1, 0); b != 1<<16 || c != hypervisorBit || d != f1edxAPIC {
		t.Errorf("leaf 1 EBX %#x ECX %#x EDX %#x", b, c, d)
	}
	if a, b, c, d := m.Lookup(7, 0); a|b|c|d != 0 {
		t.Error("leaf 7 present above the host's maximum")
	}
	// Lookups do not call the host.
	before := calls
	for i := 0; i < 10; i++ {
		m.Lookup(1, 0)
	}
	if calls != before {
		t.Error("Lookup called the host CPUID")
	}
}

func TestPATValid(t *testing.T) {
	for _, c := range []struct {
		v  uint64
		ok bool
	}{
		{0, true},
		{0x0007040600070406, true},
		{0x0706050401000706, true},
		{0x0101010101010101, true},
		{0x0707070707070707, true},
		{0x02, false},
		{0x03, false},
		{0x08, false},
		{0xff, false},
		{0x0200000000000000, false},
		{0x0300000000000000, false},
		{0x1000000000000000, false},
		{0x0000000000000800, false},
	} {
		if got := patValid(c.v); got != c.ok {
			t.Errorf("patValid(%#016x) = %v", c.v, got)
		}
	}
	if eferWritable&(svm.EFERSVME|svm.EFERLMA) != 0 {
		t.Error("EFER.SVME or LMA writable by the guest")
	}
}

// TestRealModeGP: exceptions injected in real mode carry no error code.
func TestRealModeGP(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode16)
	es := e.resume(e.msrStep(false, svm.MSRVMCR, 0))
	if got := last(es).vmcb.Control.EventInj; got != 0x8000030d {
		t.Errorf("real-mode #GP EVENTINJ %#x, want 0x8000030d (no error code)", got)
	}
}

func TestPhysPool(t *testing.T) {
	m := newFakeMem(8 << 20)
	base := m.base
	p := NewPhysPool(m, base+1, base+4<<20+100) // rounded in to [base+4K, base+4M)
	if got := p.FreeBytes(); got != 4<<20-4096 {
		t.Fatalf("FreeBytes %#x, want %#x", got, 4<<20-4096)
	}
	a, err := p.Alloc(1, 0)
	if err != nil || a != base+4096 {
		t.Fatalf("Alloc(1) = %#x, %v", a, err)
	}
	if got := p.FreeBytes(); got != 4<<20-8192 {
		t.Errorf("one byte took %d bytes, want a page", 4<<20-4096-got)
	}
	// 2 MiB alignment skips to base+2M, leaving the gap free.
	b, err := p.Alloc(svm.Size2M, svm.Size2M)
	if err != nil || b != base+svm.Size2M {
		t.Fatalf("Alloc(2M, 2M) = %#x, %v", b, err)
	}
	if got := p.FreeBytes(); got != 2<<20-8192 {
		t.Errorf("FreeBytes %#x after the aligned allocation", got)
	}
	c, err := p.Alloc(3*4096, 8192)
	if err != nil || c%8192 != 0 || c < a+4096 || c+3*4096 > b {
		t.Errorf("Alloc(12K, 8K) = %#x, %v: want it in the gap before %#x", c, err, b)
	}
	// Exhaustion.
	_, err = p.Alloc(4<<20, 4096)
	if !errors.Is(err, ErrNoMemory) || !strings.Contains(err.Error(), "4096 KiB requested") {
		t.Errorf("exhausted pool: %v", err)
	}
	if _, err := p.Alloc(0, 4096); err == nil {
		t.Error("zero-sized allocation succeeded")
	}
	free := p.FreeBytes()
	for _, sz := range []uint64{^uint64(0) - 100, 1 << 63} {
		if pa, err := p.Alloc(sz, 4096); err == nil {
			t.Errorf("Alloc(%#x) = %#x", sz, pa)
		}
	}
	if _, err := p.Alloc(4096, 1<<63); err == nil {
		t.Error("Alloc with alignment 2^63 succeeded")
	}
	if p.FreeBytes() != free {
		t.Error("failed allocations changed the pool")
	}
	// Freeing everything merges back to one span.
	p.Free(b, svm.Size2M)
	p.Free(a, 1)
	p.Free(c, 3*4096)
	if got := p.FreeBytes(); got != 4<<20-4096 || len(p.free) != 1 {
		t.Errorf("after freeing all: %#x free in %v", got, p.free)
	}
	// Reallocated memory is zeroed.
	x, _ := p.Alloc(8192, 0)
	buf := m.Bytes(x, 8192)
	for i := range buf {
		buf[i] = 0xa5
	}
	p.Free(x, 8192)
	y, _ := p.Alloc(8192, 0)
	if y != x {
		t.Fatalf("reallocation at %#x, freed %#x", y, x)
	}
	for i, v := range m.Bytes(y, 8192) {
		if v != 0 {
			t.Fatalf("reallocated byte %d is %#x", i, v)
		}
	}
	// Exactly-fitting allocation empties the pool; Free restores it.
	p.Free(y, 8192)
	all, err := p.Alloc(4<<20-4096, 0)
	if err != nil || p.FreeBytes() != 0 {
		t.Fatalf("whole-pool allocation: %#x, %v, %d left", all, err, p.FreeBytes())
	}
	if _, err := p.Alloc(4096, 0); !errors.Is(err, ErrNoMemory) || !strings.Contains(err.Error(), "0 KiB free") {
		t.Errorf("empty pool: %v", err)
	}
	p.Free(all, 4<<20-4096)
	if p.FreeBytes() != 4<<20-4096 || len(p.free) != 1 {
		t.Errorf("after Free: %v", p.free)
	}
}

func TestPhysPoolFreeOrder(t *testing.T) {
	m := newFakeMem(1 << 20)
	p := NewPhysPool(m, m.base, m.base+1<<20)
	var pages []uint64
	for i := 0; i < 16; i++ {
		pa, err := p.Alloc(4096, 0)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, pa)
	}
	// Free odd pages, then even: spans must merge into one.
	for i := 1; i < 16; i += 2 {
		p.Free(pages[i], 4096)
	}
	if len(p.free) != 8 { // 7 holes + page 15 merged with the tail
		t.Errorf("%d spans after freeing odd pages: %v", len(p.free), p.free)
	}
	for i := 14; i >= 0; i -= 2 {
		p.Free(pages[i], 4096)
	}
	if len(p.free) != 1 || p.FreeBytes() != 1<<20 {
		t.Errorf("spans %v, %d free", p.free, p.FreeBytes())
	}
}

func TestPhysPoolEmpty(t *testing.T) {
	m := newFakeMem(1 << 20)
	for _, r := range [][2]uint64{{m.base, m.base}, {m.base + 100, m.base + 4000}, {m.base + 8192, m.base}} {
		p := NewPhysPool(m, r[0], r[1])
		if p.FreeBytes() != 0 {
			t.Errorf("pool [%#x, %#x) has %d bytes", r[0], r[1], p.FreeBytes())
		}
		if _, err := p.Alloc(4096, 0); !errors.Is(err, ErrNoMemory) {
			t.Errorf("empty pool Alloc: %v", err)
		}
	}
}

func TestPoolPages(t *testing.T) {
	m := newFakeMem(1 << 20)
	p := NewPhysPool(m, m.base, m.base+1<<20)
	a := PoolPages{p}
	pa, err := a.AllocPage()
	if err != nil || pa%4096 != 0 {
		t.Fatal(pa, err)
	}
	a.Page(pa)[4095] = 7
	if m.Bytes(pa+4095, 1)[0] != 7 {
		t.Error("Page does not view the allocated page")
	}
	tr := &pageTracker{pool: p}
	for i := 0; i < 5; i++ {
		if _, err := tr.AllocPage(); err != nil {
			t.Fatal(err)
		}
	}
	if p.FreeBytes() != 1<<20-6*4096 {
		t.Errorf("FreeBytes %d", p.FreeBytes())
	}
	tr.release()
	if p.FreeBytes() != 1<<20-4096 || len(tr.pages) != 0 {
		t.Errorf("after release: %d free, %d tracked", p.FreeBytes(), len(tr.pages))
	}
}

func TestGuestMemoryBounds(t *testing.T) {
	g := &GuestMemory{Size: 0x2000, ram: make([]byte, 0x2000)}
	for _, c := range []struct {
		gpa, n uint64
		ok     bool
	}{
		{0, 0x2000, true}, {0x1fff, 1, true}, {0x1fff, 2, false}, {0x2000, 0, false},
		{0x2000, 1, false}, {^uint64(0), 2, false}, {1, ^uint64(0), false}, {0, 0, true},
	} {
		_, err := g.Slice(c.gpa, c.n)
		var ge *GPAError
		if (err == nil) != c.ok || (err != nil && !errors.As(err, &ge)) {
			t.Errorf("Slice(%#x, %#x): %v", c.gpa, c.n, err)
		}
	}
	s, _ := g.Slice(0x10, 4)
	if cap(s) != 4 {
		t.Errorf("Slice capacity %d: appending would write guest RAM", cap(s))
	}
	if err := g.WriteGPA(0x1ffe, []byte{1, 2, 3}); err == nil {
		t.Error("WriteGPA across the end succeeded")
	}
	if g.ram[0x1ffe] != 0 {
		t.Error("refused WriteGPA wrote")
	}
}
