package svm

import (
	"errors"
	"testing"
)

// arena is a fake host memory for tests: pages at fake physical addresses.
type arena struct {
	base  uint64
	pages map[uint64]*[PageSize]byte
	next  uint64
	limit int
}

func newArena() *arena {
	return &arena{base: 0x7000_0000, next: 0x7000_0000, pages: map[uint64]*[PageSize]byte{}, limit: 1 << 20}
}

func (a *arena) AllocPage() (uint64, error) {
	if len(a.pages) >= a.limit {
		return 0, errors.New("arena full")
	}
	pa := a.next
	a.next += PageSize
	a.pages[pa] = new([PageSize]byte)
	return pa, nil
}

func (a *arena) Page(pa uint64) *[PageSize]byte { return a.pages[pa] }

func TestNPTMapTranslate(t *testing.T) {
	a := newArena()
	n, err := NewNPT(a)
	if err != nil {
		t.Fatal(err)
	}
	// 4 MiB + 8 KiB of guest RAM at GPA 0 backed by host 0x4000_0000: two
	// 2 MiB pages and two 4 KiB pages.
	const hbase, size = 0x4000_0000, 4<<20 + 2*PageSize
	if err := n.Map(0, hbase, size, PermRWX); err != nil {
		t.Fatal(err)
	}
	for _, gpa := range []uint64{0, 0x1234, Size2M - 1, Size2M + 7, 4 << 20, 4<<20 + PageSize + 5} {
		hpa, p, ok := n.Translate(gpa)
		if !ok || hpa != hbase+gpa || p != PermRWX {
			t.Errorf("GPA %#x -> %#x %v %v", gpa, hpa, p, ok)
		}
	}
	if _, _, ok := n.Translate(size); ok {
		t.Error("GPA past the end is mapped")
	}
	if _, _, ok := n.Translate(MaxGPA + 5); ok {
		t.Error("GPA beyond 48 bits is mapped")
	}
	var large, small int
	n.Walk(func(gpa, hpa, sz uint64, p Perm) {
		if hpa < hbase || hpa+sz > hbase+size {
			t.Errorf("leaf %#x maps host %#x outside guest RAM", gpa, hpa)
		}
		switch sz {
		case Size2M:
			large++
		case PageSize:
			small++
		}
	})
	if large != 2 || small != 2 {
		t.Errorf("%d large, %d small pages; want 2, 2", large, small)
	}
	if err := n.Map(PageSize, 0x9000_0000, PageSize, PermRead); !errors.Is(err, ErrMapped) {
		t.Errorf("overlap: %v", err)
	}
	if err := n.Map(1, 0, PageSize, PermRead); !errors.Is(err, ErrUnaligned) {
		t.Errorf("unaligned: %v", err)
	}
}

func TestNPTEntryBits(t *testing.T) {
	a := newArena()
	n, _ := NewNPT(a)
	if err := n.Map(0x1000, 0x5000, PageSize, PermRead); err != nil {
		t.Fatal(err)
	}
	// Walk the raw entries: every level present and user (NPT walks are
	// user accesses), the leaf read-only and non-executable.
	pa := n.Root()
	for level := 4; level >= 1; level-- {
		e := n.table(pa)[index(0x1000, level)]
		if e&(PTEPresent|PTEUser) != PTEPresent|PTEUser {
			t.Fatalf("level %d entry %#x lacks P|U", level, e)
		}
		if level == 1 {
			if e&PTEWrite != 0 || e&PTENX == 0 || e&pteAddrMask != 0x5000 {
				t.Errorf("leaf %#x", e)
			}
		}
		pa = e & pteAddrMask
	}
	if _, p, _ := n.Translate(0x1000); p != PermRead {
		t.Errorf("perm %v", p)
	}
}

func TestNPTUnmapSplits(t *testing.T) {
	a := newArena()
	n, _ := NewNPT(a)
	if err := n.Map(0, 0x4000_0000, Size2M*2, PermRWX); err != nil {
		t.Fatal(err)
	}
	// Punch a 4 KiB hole in the middle of the first 2 MiB page.
	if err := n.Unmap(0x10_0000, PageSize); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := n.Translate(0x10_0000); ok {
		t.Error("hole still mapped")
	}
	for _, gpa := range []uint64{0x0f_f000, 0x10_1000, Size2M + 5} {
		if hpa, _, ok := n.Translate(gpa); !ok || hpa != 0x4000_0000+gpa {
			t.Errorf("GPA %#x after split -> %#x %v", gpa, hpa, ok)
		}
	}
	// Unmap everything, including already-empty holes.
	if err := n.Unmap(0, 8*Size2M); err != nil {
		t.Fatal(err)
	}
	count := 0
	n.Walk(func(_, _, _ uint64, _ Perm) { count++ })
	if count != 0 {
		t.Errorf("%d mappings left", count)
	}
}

func TestNPTAllocFailure(t *testing.T) {
	a := newArena()
	a.limit = 2
	n, _ := NewNPT(a)
	if err := n.Map(0, 0, PageSize, PermRWX); err == nil {
		t.Error("map with an exhausted allocator succeeded")
	}
}

// TestNPTSetWrite: write protection covers whole large pages without
// splitting them, a single 4 KiB page made writable again splits its
// 2 MiB page and only that page changes, translations keep their host
// addresses, and holes are skipped.
func TestNPTSetWrite(t *testing.T) {
	a := newArena()
	n, err := NewNPT(a)
	if err != nil {
		t.Fatal(err)
	}
	const hbase, size = 0x4000_0000, 4<<20 + 2*PageSize
	if err := n.Map(0, hbase, size, PermRWX); err != nil {
		t.Fatal(err)
	}
	tables := len(a.pages)
	if err := n.SetWrite(0, 8<<20, false); err != nil { // past the end: a hole
		t.Fatal(err)
	}
	if len(a.pages) != tables {
		t.Errorf("protecting whole pages allocated %d tables", len(a.pages)-tables)
	}
	n.Walk(func(gpa, hpa, sz uint64, p Perm) {
		if p != PermRead|PermExec || hpa != hbase+gpa {
			t.Errorf("after protection %#x+%#x -> %#x %v", gpa, sz, hpa, p)
		}
	})
	page := uint64(Size2M + 5*PageSize)
	if err := n.SetWrite(page, PageSize, true); err != nil {
		t.Fatal(err)
	}
	var small, writable int
	n.Walk(func(gpa, hpa, sz uint64, p Perm) {
		if hpa != hbase+gpa {
			t.Errorf("%#x maps %#x after the split", gpa, hpa)
		}
		if sz == PageSize && gpa >= Size2M && gpa < 2*Size2M {
			small++
		}
		if p&PermWrite != 0 {
			writable++
			if gpa != page || sz != PageSize {
				t.Errorf("%#x+%#x writable, want only %#x", gpa, sz, page)
			}
		}
	})
	if small != 512 || writable != 1 {
		t.Errorf("%d small pages in the split 2 MiB page (want 512), %d writable (want 1)", small, writable)
	}
	if _, p, _ := n.Translate(page + 7); p != PermRWX {
		t.Errorf("page made writable: %v", p)
	}
	if err := n.SetWrite(1, PageSize, true); !errors.Is(err, ErrUnaligned) {
		t.Errorf("unaligned: %v", err)
	}
}
