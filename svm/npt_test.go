package svm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

var errArenaFull = errors.New("arena full")

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
		return 0, errArenaFull
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

// BenchmarkMapRun maps 1 MiB of 4 KiB pages in one call, the run a lazy
// snapshot restore maps per block. The upper tables exist already (as after
// the first block of a region); each iteration clears the run's page table
// entries again directly, which costs little next to mapping them.
func BenchmarkMapRun(b *testing.B) {
	const gpa, hpa, run = Size2M, 0x4000_0000, 1 << 20
	n, err := NewNPT(newArena())
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Map(gpa, hpa, run, PermRWX); err != nil {
		b.Fatal(err)
	}
	pt := n.table(n.root)
	for l := nptLevels; l > levelPT; l-- {
		pt = n.table(pt[index(gpa, l)] & pteAddrMask)
	}
	first := index(gpa, levelPT)
	for b.Loop() {
		clear(pt[first : first+run/PageSize])
		if err := n.Map(gpa, hpa, run, PermRWX); err != nil {
			b.Fatal(err)
		}
	}
}

// mapping is what one 4 KiB guest page maps to.
type mapping struct {
	hpa uint64
	p   Perm
}

// pagesOf expands every leaf of n into its 4 KiB pages.
func pagesOf(n *NPT) map[uint64]mapping {
	m := map[uint64]mapping{}
	n.Walk(func(gpa, hpa, size uint64, p Perm) {
		for off := uint64(0); off < size; off += PageSize {
			m[gpa+off] = mapping{hpa + off, p}
		}
	})
	return m
}

// comparePages reports the first few pages where got and want differ.
func comparePages(t *testing.T, what string, got, want map[uint64]mapping) {
	t.Helper()
	bad := 0
	for gpa, w := range want {
		if g, ok := got[gpa]; !ok || g != w {
			if bad++; bad <= 5 {
				t.Errorf("%s: GPA %#x maps %#x %v (present %v), want %#x %v", what, gpa, g.hpa, g.p, ok, w.hpa, w.p)
			}
		}
	}
	for gpa, g := range got {
		if _, ok := want[gpa]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("%s: GPA %#x maps %#x %v, want a hole", what, gpa, g.hpa, g.p)
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d pages differ in all", what, bad)
	}
}

// leafSizes counts the leaves of n by size.
func leafSizes(n *NPT) (small, large int) {
	n.Walk(func(_, _, size uint64, _ Perm) {
		if size == PageSize {
			small++
		} else {
			large++
		}
	})
	return small, large
}

// pdeOf returns the page-directory entry for gpa, or nil when a level above
// is absent or a large page; it allocates nothing.
func pdeOf(n *NPT, gpa uint64) *uint64 {
	t := n.table(n.root)
	for l := nptLevels; l > levelPD; l-- {
		e := t[index(gpa, l)]
		if e&PTEPresent == 0 || e&PTELarge != 0 {
			return nil
		}
		t = n.table(e & pteAddrMask)
	}
	return &t[index(gpa, levelPD)]
}

// ptOf returns the page table for gpa, or nil when there is none.
func ptOf(n *NPT, gpa uint64) *[entriesPerTab]uint64 {
	e := pdeOf(n, gpa)
	if e == nil || *e&PTEPresent == 0 || *e&PTELarge != 0 {
		return nil
	}
	return n.table(*e & pteAddrMask)
}

// errGPA is the GPA Map's error names.
func errGPA(err error) (uint64, bool) {
	const at = " at GPA "
	s := err.Error()
	i := strings.LastIndex(s, at)
	if i < 0 {
		return 0, false
	}
	v, perr := strconv.ParseUint(s[i+len(at):], 0, 64)
	return v, perr == nil
}

// identity is the mapping of [gpa, gpa+size) to [hpa, hpa+size) with p.
func identity(m map[uint64]mapping, gpa, hpa, size uint64, p Perm) map[uint64]mapping {
	if m == nil {
		m = map[uint64]mapping{}
	}
	for off := uint64(0); off < size; off += PageSize {
		m[gpa+off] = mapping{hpa + off, p}
	}
	return m
}

// TestNPTMapRuns: runs of 4 KiB pages within and across 2 MiB regions and
// higher table boundaries, 2 MiB pages between 4 KiB heads and tails, and
// runs of 2 MiB pages across a page directory, map exactly what was asked
// with the expected leaf sizes.
func TestNPTMapRuns(t *testing.T) {
	const pml4Span = 1 << 39 // what one PML4 entry maps
	for _, tc := range []struct {
		name             string
		gpa, hpa, size   uint64
		wantSmall, large int
	}{
		{"within one 2 MiB region", 0x10_0000, 0x4000_0000, 1 << 20, 256, 0},
		{"crossing a 2 MiB boundary", Size2M - 8*PageSize, 0x4000_3000, 16 * PageSize, 16, 0},
		{"one whole region, host unaligned", Size2M, 0x4000_1000, Size2M, 512, 0},
		{"three regions, host unaligned", Size2M - PageSize, 0x4000_1000, 2*Size2M + 2*PageSize, 2*512 + 2, 0},
		{"4 KiB head, 2 MiB pages, 4 KiB tail", 1 << 20, 0x4010_0000, 5<<20 + PageSize, 256 + 1, 2},
		{"2 MiB pages crossing 1 GiB", Size1G - 2*Size2M, 0x8000_0000, 4 * Size2M, 0, 4},
		{"4 KiB pages crossing a PML4 entry", pml4Span - 4*PageSize, 0x4000_0000, 8 * PageSize, 8, 0},
		{"up to the end of GPA space", MaxGPA - 3*PageSize, 0x4000_0000, 3 * PageSize, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := NewNPT(newArena())
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Map(tc.gpa, tc.hpa, tc.size, PermRead|PermExec); err != nil {
				t.Fatal(err)
			}
			comparePages(t, "after Map", pagesOf(n), identity(nil, tc.gpa, tc.hpa, tc.size, PermRead|PermExec))
			if small, large := leafSizes(n); small != tc.wantSmall || large != tc.large {
				t.Errorf("%d 4 KiB and %d 2 MiB leaves, want %d and %d", small, large, tc.wantSmall, tc.large)
			}
			for off := uint64(0); off < tc.size; off += 37 * PageSize {
				if hpa, p, ok := n.Translate(tc.gpa + off + 9); !ok || hpa != tc.hpa+off+9 || p != PermRead|PermExec {
					t.Errorf("GPA %#x -> %#x %v %v", tc.gpa+off+9, hpa, p, ok)
				}
			}
		})
	}
}

// TestNPTMapRunConflicts: a run next to existing mappings fills exactly the
// gap; a run that meets a mapped 4 KiB page, a large page above its page
// table, or a page table below a 2 MiB leaf it wants stops there with
// ErrMapped naming that GPA, and what it mapped before stays mapped; so
// does a run whose next page table cannot be allocated.
func TestNPTMapRunConflicts(t *testing.T) {
	const other = 0x9000_0000 // host address of the mappings already there
	for _, tc := range []struct {
		name           string
		setup          func(n *NPT, a *arena) error
		gpa, hpa, size uint64
		wantErr        error  // nil: the whole run maps
		wantAt         uint64 // the GPA the error names
	}{
		{
			name: "between two mappings",
			setup: func(n *NPT, _ *arena) error {
				if err := n.Map(0x10_0000-PageSize, other, PageSize, PermRead); err != nil {
					return err
				}
				return n.Map(0x20_0000, other+Size2M, Size2M, PermRead)
			},
			gpa: 0x10_0000, hpa: 0x4000_1000, size: 1 << 20,
		},
		{
			name: "4 KiB page in the run",
			setup: func(n *NPT, _ *arena) error {
				return n.Map(0x5_0000, other, PageSize, PermRead)
			},
			gpa: 0, hpa: 0x4000_1000, size: 1 << 20,
			wantErr: ErrMapped, wantAt: 0x5_0000,
		},
		{
			name: "4 KiB page in the next region",
			setup: func(n *NPT, _ *arena) error {
				return n.Map(Size2M+2*PageSize, other, PageSize, PermRead)
			},
			gpa: Size2M - 4*PageSize, hpa: 0x4000_0000, size: 16 * PageSize,
			wantErr: ErrMapped, wantAt: Size2M + 2*PageSize,
		},
		{
			name: "run reaching a 2 MiB page",
			setup: func(n *NPT, _ *arena) error {
				return n.Map(Size2M, other&^(Size2M-1), Size2M, PermRead)
			},
			gpa: Size2M - 2*PageSize, hpa: 0x4000_1000, size: 4 * PageSize,
			wantErr: ErrMapped, wantAt: Size2M,
		},
		{
			name: "run inside a 2 MiB page",
			setup: func(n *NPT, _ *arena) error {
				return n.Map(Size2M, other&^(Size2M-1), Size2M, PermRead)
			},
			gpa: Size2M + PageSize, hpa: 0x4000_1000, size: 2 * PageSize,
			wantErr: ErrMapped, wantAt: Size2M + PageSize,
		},
		{
			name: "2 MiB page over a page table",
			setup: func(n *NPT, _ *arena) error {
				return n.Map(Size2M+5*PageSize, other, PageSize, PermRead)
			},
			gpa: 0, hpa: 0x4000_0000, size: 2 * Size2M,
			wantErr: ErrMapped, wantAt: Size2M,
		},
		{
			name: "run of 2 MiB pages reaching a 2 MiB page",
			setup: func(n *NPT, _ *arena) error {
				return n.Map(2*Size2M, other&^(Size2M-1), Size2M, PermRead)
			},
			gpa: 0, hpa: 0x4000_0000, size: 4 * Size2M,
			wantErr: ErrMapped, wantAt: 2 * Size2M,
		},
		{
			name: "next page table not allocated",
			setup: func(n *NPT, a *arena) error {
				// Root, PDPT, PD and the first page table only.
				a.limit = len(a.pages) + nptLevels - 1
				return nil
			},
			gpa: Size2M - 2*PageSize, hpa: 0x4000_0000, size: 4 * PageSize,
			wantErr: errArenaFull, wantAt: Size2M,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newArena()
			n, err := NewNPT(a)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(n, a); err != nil {
				t.Fatal(err)
			}
			want := pagesOf(n)
			err = n.Map(tc.gpa, tc.hpa, tc.size, PermRWX)
			mapped := tc.size
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				if w := fmt.Sprintf("%v at GPA %#x", tc.wantErr, tc.wantAt); err.Error() != w {
					t.Errorf("error %q, want %q", err, w)
				}
				mapped = tc.wantAt - tc.gpa
			}
			comparePages(t, "after Map", pagesOf(n), identity(want, tc.gpa, tc.hpa, mapped, PermRWX))
		})
	}
}

// mapSmall maps the 2 MiB region at gpa to hpa with 4 KiB pages, as a lazy
// restore does: in 1 MiB runs.
func mapSmall(t *testing.T, n *NPT, gpa, hpa uint64, p Perm) {
	t.Helper()
	const run = 1 << 20
	for off := uint64(0); off < Size2M; off += run {
		if err := n.Map(gpa+off, hpa+off, run, p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNPTPromote: a region of 4 KiB pages mapping a 2 MiB aligned host run
// with one permission becomes one 2 MiB page that translates every page as
// before, allocates nothing, and leaves the neighbours alone; a second
// Promote has nothing to do. Removing write permission from one page
// splits it back into a new page table, and Promote refuses until the
// permission is the same again; Unmap of one page splits it too.
func TestNPTPromote(t *testing.T) {
	const gpa, hbase = 3 * Size2M, 0x4020_0000
	a := newArena()
	n, err := NewNPT(a)
	if err != nil {
		t.Fatal(err)
	}
	mapSmall(t, n, gpa, hbase, PermRWX)
	// Neighbours on both sides, same host run: not part of the region.
	if err := n.Map(gpa-PageSize, hbase-PageSize, PageSize, PermRWX); err != nil {
		t.Fatal(err)
	}
	if err := n.Map(gpa+Size2M, hbase+Size2M, PageSize, PermRWX); err != nil {
		t.Fatal(err)
	}
	before := pagesOf(n)
	tables := len(a.pages)
	pde := pdeOf(n, gpa)
	oldPT := *pde & pteAddrMask

	if ok, err := n.Promote(gpa); !ok || err != nil {
		t.Fatalf("Promote: %v %v", ok, err)
	}
	if *pde != hbase|leafBits(PermRWX)|PTELarge {
		t.Errorf("directory entry %#x, want a 2 MiB page at %#x", *pde, uint64(hbase))
	}
	if len(a.pages) != tables {
		t.Errorf("Promote allocated %d pages", len(a.pages)-tables)
	}
	comparePages(t, "after Promote", pagesOf(n), before)
	if small, large := leafSizes(n); small != 2 || large != 1 {
		t.Errorf("%d 4 KiB and %d 2 MiB leaves, want 2 and 1", small, large)
	}
	for off := uint64(0); off < Size2M; off += PageSize {
		if hpa, p, ok := n.Translate(gpa + off + 0x123); !ok || hpa != hbase+off+0x123 || p != PermRWX {
			t.Fatalf("GPA %#x -> %#x %v %v", gpa+off+0x123, hpa, p, ok)
		}
	}
	if ok, err := n.Promote(gpa); ok || err != nil {
		t.Errorf("second Promote: %v %v", ok, err)
	}

	// Write-protect one page: the 2 MiB page splits into a new table.
	page := uint64(gpa + 100*PageSize)
	if err := n.SetWrite(page, PageSize, false); err != nil {
		t.Fatal(err)
	}
	if *pde&PTELarge != 0 || *pde&pteAddrMask == oldPT {
		t.Errorf("directory entry %#x after the split, old table %#x", *pde, oldPT)
	}
	want := identity(nil, gpa-PageSize, hbase-PageSize, Size2M+2*PageSize, PermRWX)
	want[page] = mapping{want[page].hpa, PermRead | PermExec}
	comparePages(t, "after SetWrite", pagesOf(n), want)
	if small, large := leafSizes(n); small != 2+entriesPerTab || large != 0 {
		t.Errorf("%d 4 KiB and %d 2 MiB leaves, want %d and 0", small, large, 2+entriesPerTab)
	}
	if ok, err := n.Promote(gpa); ok || err != nil {
		t.Errorf("Promote with one read-only page: %v %v", ok, err)
	}
	if err := n.SetWrite(page, PageSize, true); err != nil {
		t.Fatal(err)
	}
	if ok, err := n.Promote(gpa); !ok || err != nil {
		t.Errorf("Promote after write permission is back: %v %v", ok, err)
	}
	comparePages(t, "after the second promotion", pagesOf(n), before)

	// Unmap one page: the 2 MiB page splits, the page is a hole.
	if err := n.Unmap(page, PageSize); err != nil {
		t.Fatal(err)
	}
	delete(before, page)
	comparePages(t, "after Unmap", pagesOf(n), before)
}

// TestNPTPromoteAccessedDirty: the accessed and dirty bits of the 4 KiB
// entries do not prevent promotion; the 2 MiB page has each if any entry
// had it.
func TestNPTPromoteAccessedDirty(t *testing.T) {
	const gpa, hbase = Size2M, 0x4000_0000
	for _, tc := range []struct {
		name   string
		edit   func(pt *[entriesPerTab]uint64)
		wantAD uint64
	}{
		{"as Map sets them", func(*[entriesPerTab]uint64) {}, PTEAccessed | PTEDirty},
		{"none", func(pt *[entriesPerTab]uint64) {
			for i := range pt {
				pt[i] &^= PTEAccessed | PTEDirty
			}
		}, 0},
		{"one accessed, one dirty", func(pt *[entriesPerTab]uint64) {
			for i := range pt {
				pt[i] &^= PTEAccessed | PTEDirty
			}
			pt[3] |= PTEAccessed
			pt[entriesPerTab-1] |= PTEDirty
		}, PTEAccessed | PTEDirty},
		{"one dirty", func(pt *[entriesPerTab]uint64) {
			for i := range pt {
				pt[i] &^= PTEDirty
			}
			pt[200] |= PTEDirty
		}, PTEAccessed | PTEDirty},
		{"one not accessed", func(pt *[entriesPerTab]uint64) {
			pt[7] &^= PTEAccessed
		}, PTEAccessed | PTEDirty},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := NewNPT(newArena())
			if err != nil {
				t.Fatal(err)
			}
			mapSmall(t, n, gpa, hbase, PermRead)
			tc.edit(ptOf(n, gpa))
			if ok, err := n.Promote(gpa); !ok || err != nil {
				t.Fatalf("Promote: %v %v", ok, err)
			}
			e := *pdeOf(n, gpa)
			if got := e & (PTEAccessed | PTEDirty); got != tc.wantAD {
				t.Errorf("accessed/dirty %#x, want %#x (entry %#x)", got, tc.wantAD, e)
			}
			if e&^(PTEAccessed|PTEDirty) != hbase|leafBits(PermRead)&^(PTEAccessed|PTEDirty)|PTELarge {
				t.Errorf("entry %#x", e)
			}
		})
	}
}

// TestNPTPromoteRefuses: Promote changes nothing and reports false when a
// 4 KiB entry is missing, the host addresses are not one run, the run does
// not start 2 MiB aligned, or one entry's permission or attributes differ,
// and when the region is a hole or already a 2 MiB page; an unaligned or
// out-of-range GPA is an error.
func TestNPTPromoteRefuses(t *testing.T) {
	const gpa, hbase = 2 * Size2M, 0x4000_0000
	const other = 0x9000_0000
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, n *NPT)
		at      uint64 // the GPA given to Promote
		wantErr error
	}{
		{"one entry missing", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			if err := n.Unmap(gpa+17*PageSize, PageSize); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"last entry missing", func(t *testing.T, n *NPT) {
			if err := n.Map(gpa, hbase, Size2M-PageSize, PermRWX); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"one host address elsewhere", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			if err := n.Unmap(gpa+300*PageSize, PageSize); err != nil {
				t.Fatal(err)
			}
			if err := n.Map(gpa+300*PageSize, other, PageSize, PermRWX); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"two host pages swapped", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			pt := ptOf(n, gpa)
			pt[1], pt[2] = pt[2], pt[1]
		}, gpa, nil},
		{"host run not 2 MiB aligned", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase+PageSize, PermRWX)
		}, gpa, nil},
		{"host run 2 MiB aligned, first entry elsewhere", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			if err := n.Unmap(gpa, PageSize); err != nil {
				t.Fatal(err)
			}
			if err := n.Map(gpa, other, PageSize, PermRWX); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"one entry read-only", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			if err := n.SetWrite(gpa+(entriesPerTab-1)*PageSize, PageSize, false); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"one entry not executable", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			if err := n.Unmap(gpa+5*PageSize, PageSize); err != nil {
				t.Fatal(err)
			}
			if err := n.Map(gpa+5*PageSize, hbase+5*PageSize, PageSize, PermRead|PermWrite); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"one entry uncacheable", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			ptOf(n, gpa)[9] |= PTEPCD
		}, gpa, nil},
		{"PAT set on every entry", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			pt := ptOf(n, gpa)
			for i := range pt {
				pt[i] |= PTEPAT
			}
		}, gpa, nil},
		{"a hole between mappings", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa-Size2M, hbase, PermRWX)
			mapSmall(t, n, gpa+Size2M, hbase+2*Size2M, PermRWX)
		}, gpa, nil},
		{"an emptied page table", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
			if err := n.Unmap(gpa, Size2M); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"already a 2 MiB page", func(t *testing.T, n *NPT) {
			if err := n.Map(gpa, hbase, Size2M, PermRWX); err != nil {
				t.Fatal(err)
			}
		}, gpa, nil},
		{"GPA not 2 MiB aligned", func(t *testing.T, n *NPT) {
			mapSmall(t, n, gpa, hbase, PermRWX)
		}, gpa + PageSize, ErrUnaligned},
		{"GPA beyond 48 bits", func(*testing.T, *NPT) {}, MaxGPA, ErrRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newArena()
			n, err := NewNPT(a)
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(t, n)
			before := pagesOf(n)
			var pde uint64
			if e := pdeOf(n, gpa); e != nil {
				pde = *e
			}
			tables := len(a.pages)
			ok, err := n.Promote(tc.at)
			if ok || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("Promote: %v %v, want false %v", ok, err, tc.wantErr)
			}
			if e := pdeOf(n, gpa); e != nil && *e != pde {
				t.Errorf("directory entry %#x, was %#x", *e, pde)
			}
			if len(a.pages) != tables {
				t.Errorf("Promote allocated %d pages", len(a.pages)-tables)
			}
			comparePages(t, "after Promote", pagesOf(n), before)
		})
	}
}

// TestNPTModel runs random Map, Unmap, SetWrite and Promote calls on a
// window of eight 2 MiB regions that crosses a 1 GiB boundary and compares
// the table after each with a model of what every 4 KiB page maps. Map may
// only stop with ErrMapped at a mapped page, or for a 2 MiB page over a page
// table (Map refuses those even when Unmap emptied them); the part before
// stays mapped. Promote must promote exactly the regions whose pages map
// one 2 MiB aligned host run with one permission and are not a 2 MiB page
// already.
func TestNPTModel(t *testing.T) {
	const (
		regions   = 8
		window    = regions * Size2M
		base      = Size1G - window/2
		hbase     = 0x40_0000_0000 // backs the window at a fixed offset, 2 MiB aligned
		elsewhere = hbase + window // a host area for mappings not at that offset
	)
	ops := 2000
	if testing.Short() {
		ops = 500
	}
	rng := rand.New(rand.NewPCG(1, 2))
	a := newArena()
	n, err := NewNPT(a)
	if err != nil {
		t.Fatal(err)
	}
	model := map[uint64]mapping{}
	// randRange is a page-aligned range in the window, sometimes whole
	// 2 MiB regions.
	randRange := func(maxPages uint64) (gpa, size uint64) {
		if rng.IntN(4) == 0 {
			gpa = base + rng.Uint64N(regions)*Size2M
			size = (1 + rng.Uint64N(2)) * Size2M
		} else {
			gpa = base + rng.Uint64N(window/PageSize)*PageSize
			size = (1 + rng.Uint64N(maxPages)) * PageSize
		}
		return gpa, min(size, base+window-gpa)
	}
	randPerm := func() Perm {
		if rng.IntN(4) != 0 {
			return PermRWX
		}
		return Perm(rng.IntN(int(PermRWX)+1)) | PermRead
	}
	var maps, conflicts, overTable, promoted, refused int
	// doMap maps, checks where Map stopped and updates the model.
	doMap := func(i int, what string, gpa, hpa, size uint64, p Perm) {
		t.Helper()
		err := n.Map(gpa, hpa, size, p)
		end := gpa + size
		if err != nil {
			at, ok := errGPA(err)
			if !errors.Is(err, ErrMapped) || !ok || at < gpa || at >= end || at%PageSize != 0 {
				t.Fatalf("op %d: %s: Map(%#x, %#x, %#x): %v", i, what, gpa, hpa, size, err)
			}
			if _, mapped := model[at]; !mapped {
				large := at%Size2M == 0 && (hpa+at-gpa)%Size2M == 0 && end-at >= Size2M
				pde := pdeOf(n, at)
				if !large || pde == nil || *pde&PTEPresent == 0 || *pde&PTELarge != 0 {
					t.Fatalf("op %d: %s: Map(%#x, %#x, %#x): %v, but GPA %#x is a hole", i, what, gpa, hpa, size, err, at)
				}
				overTable++
			}
			end = at
			conflicts++
		} else {
			maps++
		}
		for g := gpa; g < end; g += PageSize {
			if old, mapped := model[g]; mapped {
				t.Fatalf("op %d: %s: Map(%#x, %#x, %#x) mapped over GPA %#x -> %#x", i, what, gpa, hpa, size, g, old.hpa)
			}
			model[g] = mapping{hpa + g - gpa, p}
		}
	}
	for i := range ops {
		var what string
		switch op := rng.IntN(10); {
		case op < 2:
			gpa, size := randRange(512)
			hpa := hbase + gpa - base
			if rng.IntN(8) == 0 {
				hpa = elsewhere + rng.Uint64N(1<<16)*PageSize
			}
			p := randPerm()
			what = fmt.Sprintf("Map(%#x, %#x, %#x, %v)", gpa, hpa, size, p)
			doMap(i, what, gpa, hpa, size, p)
		case op < 4:
			// Fill the holes of a range, each hole by one Map next to
			// the mappings around it, as a lazy restore does.
			gpa, size := randRange(1024)
			p := randPerm()
			what = fmt.Sprintf("fill(%#x, %#x, %v)", gpa, size, p)
			for g := gpa; g < gpa+size; {
				if _, mapped := model[g]; mapped {
					g += PageSize
					continue
				}
				hole := g
				for g < gpa+size {
					if _, mapped := model[g]; mapped {
						break
					}
					g += PageSize
				}
				doMap(i, what, hole, hbase+hole-base, g-hole, p)
			}
		case op < 6:
			gpa, size := randRange(600)
			what = fmt.Sprintf("Unmap(%#x, %#x)", gpa, size)
			if err := n.Unmap(gpa, size); err != nil {
				t.Fatalf("op %d: %s: %v", i, what, err)
			}
			for g := gpa; g < gpa+size; g += PageSize {
				delete(model, g)
			}
		case op < 7:
			gpa, size := randRange(600)
			w := rng.IntN(2) == 0
			what = fmt.Sprintf("SetWrite(%#x, %#x, %v)", gpa, size, w)
			if err := n.SetWrite(gpa, size, w); err != nil {
				t.Fatalf("op %d: %s: %v", i, what, err)
			}
			for g := gpa; g < gpa+size; g += PageSize {
				if m, mapped := model[g]; mapped {
					m.p &^= PermWrite
					if w {
						m.p |= PermWrite
					}
					model[g] = m
				}
			}
		default:
			gpa := base + rng.Uint64N(regions)*Size2M
			what = fmt.Sprintf("Promote(%#x)", gpa)
			first, want := model[gpa], true
			for off := uint64(0); off < Size2M; off += PageSize {
				if m, mapped := model[gpa+off]; !mapped || m != (mapping{first.hpa + off, first.p}) {
					want = false
				}
			}
			want = want && first.hpa%Size2M == 0
			if pde := pdeOf(n, gpa); pde == nil || *pde&PTELarge != 0 {
				want = false // a 2 MiB page already
			}
			ok, err := n.Promote(gpa)
			if ok != want || err != nil {
				t.Fatalf("op %d: %s = %v %v, want %v", i, what, ok, err, want)
			}
			if ok {
				promoted++
			} else {
				refused++
			}
		}
		comparePages(t, fmt.Sprintf("op %d: %s", i, what), pagesOf(n), model)
		for range 4 {
			g := base + rng.Uint64N(window)
			m, mapped := model[g&^(PageSize-1)]
			hpa, p, ok := n.Translate(g)
			if ok != mapped || ok && (hpa != m.hpa+g%PageSize || p != m.p) {
				t.Errorf("op %d: %s: Translate(%#x) = %#x %v %v, model %#x %v %v", i, what, g, hpa, p, ok, m.hpa, m.p, mapped)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d maps, %d stopped by a mapping (%d at a hole, by a page table where a 2 MiB page was due), %d promotions, %d refused",
		maps, conflicts, overTable, promoted, refused)
	if promoted == 0 || conflicts == 0 {
		t.Error("the random calls did not exercise promotion and conflicts")
	}
}
