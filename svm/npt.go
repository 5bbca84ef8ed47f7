package svm

import (
	"errors"
	"fmt"
	"unsafe"
)

// Nested page table entry bits. NPT uses the AMD64 long-mode 4-level
// format (APM vol. 2, 5.3 and 15.25.5). Nested walks are user accesses, so
// every level needs the U/S bit (15.25.5).
const (
	PTEPresent  = 1 << 0
	PTEWrite    = 1 << 1
	PTEUser     = 1 << 2
	PTEPWT      = 1 << 3
	PTEPCD      = 1 << 4
	PTEAccessed = 1 << 5
	PTEDirty    = 1 << 6
	PTELarge    = 1 << 7 // PS: 2 MiB page in a PDE, 1 GiB in a PDPE
	PTEPAT      = 1 << 7 // PAT in a 4 KiB PTE; a PDE's PAT is bit 12 (5.4.1)
	PTENX       = 1 << 63

	pteAddrMask = 0x000ffffffffff000 // bits 51:12

	Size2M = 2 << 20
	Size1G = 1 << 30

	nptLevels     = 4 // PML4, PDP, PD, PT (APM vol. 2, 5.3.3)
	levelPD       = 2 // page directory: its leaves are 2 MiB pages
	levelPT       = 1 // page table: its leaves are 4 KiB pages
	entriesPerTab = 512
	// MaxGPA is the first guest-physical address a 4-level table cannot map.
	MaxGPA = 1 << 48
)

// Perm is the access a guest has to a nested mapping.
type Perm uint8

// Permissions of a nested mapping.
const (
	PermRead  Perm = 1 << 0
	PermWrite Perm = 1 << 1
	PermExec  Perm = 1 << 2
	PermRWX        = PermRead | PermWrite | PermExec
)

// PageAllocator hands out zeroed, 4 KiB-aligned host-physical pages for page
// tables and gives access to pages it handed out.
type PageAllocator interface {
	AllocPage() (pa uint64, err error)
	Page(pa uint64) *[PageSize]byte
}

// NPT is a nested page table: it maps guest-physical to host-physical
// addresses. Only what Map was told is mapped: no hypervisor memory is
// reachable from the guest unless a caller maps it.
type NPT struct {
	alloc PageAllocator
	root  uint64
}

// Errors of NPT operations.
var (
	ErrMapped    = errors.New("svm: NPT range already mapped")
	ErrUnaligned = errors.New("svm: NPT range not 4 KiB aligned")
	ErrRange     = errors.New("svm: NPT range beyond 48-bit guest-physical space")
)

// NewNPT allocates an empty table.
func NewNPT(a PageAllocator) (*NPT, error) {
	root, err := a.AllocPage()
	if err != nil {
		return nil, err
	}
	return &NPT{alloc: a, root: root}, nil
}

// Root is the value for the VMCB's N_CR3.
func (n *NPT) Root() uint64 { return n.root }

func (n *NPT) table(pa uint64) *[entriesPerTab]uint64 {
	return (*[entriesPerTab]uint64)(unsafe.Pointer(n.alloc.Page(pa)))
}

// index of gpa in the table at level (4 = PML4 ... 1 = PT).
func index(gpa uint64, level int) int {
	return int(gpa>>(12+9*(level-1))) & (entriesPerTab - 1)
}

func levelSize(level int) uint64 { return 1 << (12 + 9*(level-1)) }

func leafBits(p Perm) uint64 {
	v := uint64(PTEPresent | PTEUser | PTEAccessed | PTEDirty)
	if p&PermWrite != 0 {
		v |= PTEWrite
	}
	if p&PermExec == 0 {
		v |= PTENX
	}
	return v
}

const tableBits = PTEPresent | PTEWrite | PTEUser | PTEAccessed

// Map maps [gpa, gpa+size) to [hpa, hpa+size) with permission p, using
// 2 MiB pages where both addresses and the remaining size allow and 4 KiB
// pages elsewhere. It refuses to overlap an existing mapping. On error the
// part already mapped stays mapped.
//
// Consecutive leaves that share a table are installed by one walk (setRun):
// a run of 4 KiB pages walks down to its page table once per 2 MiB region,
// a run of 2 MiB pages to its page directory once per 1 GiB region.
func (n *NPT) Map(gpa, hpa, size uint64, p Perm) error {
	if gpa%PageSize != 0 || hpa%PageSize != 0 || size%PageSize != 0 {
		return ErrUnaligned
	}
	if gpa+size > MaxGPA || gpa+size < gpa {
		return ErrRange
	}
	for size > 0 {
		level := levelPT
		if gpa%Size2M == 0 && hpa%Size2M == 0 && size >= Size2M {
			level = levelPD
		}
		sz := levelSize(level)
		// Leaves up to the end of the table holding gpa's entry, or of
		// the range (2 MiB leaves: of its whole 2 MiB pages).
		span := levelSize(level+1) - gpa%levelSize(level+1)
		run := min(span, size&^(sz-1)) / sz
		done, err := n.setRun(gpa, hpa, int(run), level, p)
		mapped := uint64(done) * sz
		if err != nil {
			return fmt.Errorf("%w at GPA %#x", err, gpa+mapped)
		}
		gpa, hpa, size = gpa+mapped, hpa+mapped, size-mapped
	}
	return nil
}

// tableAt returns the table at level (1: PT, 2: PD, 3: PDP, 4: PML4) that
// holds the entry for gpa, walking from the root and allocating missing
// tables on the way. A large page above level mapping gpa is ErrMapped.
func (n *NPT) tableAt(gpa uint64, level int) (*[entriesPerTab]uint64, error) {
	t := n.table(n.root)
	for l := nptLevels; l > level; l-- {
		e := &t[index(gpa, l)]
		if *e&PTEPresent == 0 {
			pa, err := n.alloc.AllocPage()
			if err != nil {
				return nil, err
			}
			*e = pa | tableBits
		} else if *e&PTELarge != 0 {
			return nil, ErrMapped
		}
		t = n.table(*e & pteAddrMask)
	}
	return t, nil
}

// setRun installs count consecutive leaves at level (levelPT or levelPD)
// mapping gpa, gpa+levelSize(level), ... to hpa, hpa+levelSize(level), ...;
// they must all lie in the table that holds gpa's entry. It stops at the
// first entry already present (ErrMapped) and returns how many leaves it
// installed.
func (n *NPT) setRun(gpa, hpa uint64, count, level int, p Perm) (int, error) {
	t, err := n.tableAt(gpa, level)
	if err != nil {
		return 0, err
	}
	bits := leafBits(p)
	if level > levelPT {
		bits |= PTELarge
	}
	first := index(gpa, level)
	leaves := t[first : first+count]
	for i := range leaves {
		if leaves[i]&PTEPresent != 0 {
			return i, ErrMapped
		}
		leaves[i] = (hpa + uint64(i)*levelSize(level)) | bits
	}
	return count, nil
}

// Unmap removes mappings in [gpa, gpa+size); a large page only partly inside
// the range is split first. Unmapped holes are ignored. Freed table pages
// are not returned to the allocator (tables live as long as the VM).
// The caller must flush the guest's TLB before it runs again.
func (n *NPT) Unmap(gpa, size uint64) error {
	return n.editRange(gpa, size, func(e *uint64) { *e = 0 })
}

// editRange calls edit on every leaf mapping [gpa, gpa+size), splitting
// large pages only partly inside (leaf).
func (n *NPT) editRange(gpa, size uint64, edit func(e *uint64)) error {
	if gpa%PageSize != 0 || size%PageSize != 0 {
		return ErrUnaligned
	}
	if gpa+size > MaxGPA || gpa+size < gpa {
		return ErrRange
	}
	end := gpa + size
	for gpa < end {
		step, err := n.leaf(gpa, end, edit)
		if err != nil {
			return err
		}
		gpa += step
	}
	return nil
}

// leaf calls edit on the leaf entry mapping gpa, which starts at gpa and
// ends at or before end (a larger page only partly inside is split
// first), and returns how far it advanced: past that leaf, or past the
// hole at gpa (edit is not called).
func (n *NPT) leaf(gpa, end uint64, edit func(e *uint64)) (uint64, error) {
	t := n.table(n.root)
	for l := nptLevels; l >= 1; l-- {
		e := &t[index(gpa, l)]
		sz := levelSize(l)
		base := gpa &^ (sz - 1)
		if *e&PTEPresent == 0 {
			return base + sz - gpa, nil
		}
		if l == 1 || *e&PTELarge != 0 {
			if base == gpa && base+sz <= end {
				edit(e)
				return sz, nil
			}
			if err := n.split(e, l); err != nil {
				return 0, err
			}
		}
		t = n.table(*e & pteAddrMask)
	}
	return PageSize, nil
}

// SetWrite grants (w) or removes write permission on every mapping in
// [gpa, gpa+size); a large page only partly inside the range is split
// first. Holes are skipped. Write protection of guest RAM tracks the pages
// a guest writes (dirty pages for incremental snapshots, copy before write
// for live ones): a write to a protected page exits with a nested page
// fault, present and write set in EXITINFO1 (APM vol. 2, 15.25.6). After
// removing write permission the caller must flush the guest's TLB before
// it runs again; granting it needs no flush (a fault re-walks the tables).
func (n *NPT) SetWrite(gpa, size uint64, w bool) error {
	return n.editRange(gpa, size, func(e *uint64) {
		if w {
			*e |= PTEWrite
		} else {
			*e &^= PTEWrite
		}
	})
}

// split replaces a large leaf at level l with a table of 512 next-level leaves.
func (n *NPT) split(e *uint64, l int) error {
	pa, err := n.alloc.AllocPage()
	if err != nil {
		return err
	}
	sub := n.table(pa)
	hpa := *e & pteAddrMask &^ (levelSize(l) - 1)
	bits := *e &^ pteAddrMask
	if l-1 == 1 {
		bits &^= PTELarge
	}
	for i := range sub {
		sub[i] = (hpa + uint64(i)*levelSize(l-1)) | bits
	}
	*e = pa | tableBits
	return nil
}

// Promote replaces the page table of the 2 MiB region at gpa (2 MiB aligned)
// by one 2 MiB page when all 512 of its 4 KiB entries are present, map
// contiguous host addresses starting 2 MiB aligned, and have the same
// permission and attribute bits; it reports whether it did. A region that
// is a hole or already a large page, or whose entries do not qualify, is
// left as it is (false, nil). Promotion changes no translation: every GPA
// of the region maps the same host address with the same permission.
//
// The accessed and dirty bits (PTEAccessed, PTEDirty) do not prevent
// promotion: the 2 MiB page has each of them if any 4 KiB entry had it, so
// a page the guest wrote stays dirty. Map sets both on every leaf anyway,
// so the processor never has to. A 4 KiB entry with PTEPAT set is not
// promoted (this package never sets it; the bit means PS in a PDE).
//
// The page table is not returned to the allocator (tables live as long as
// the VM) but is no longer reachable: a later split of the 2 MiB page
// allocates a new one. The directory entry changes in one store, so a
// concurrent nested walk sees either the table or the large page, which
// translate alike. The caller must still flush the guest's TLB before it
// runs again (TLBControlFlushASID or a new ASID, APM vol. 2, 15.16): it may
// hold 4 KiB translations of the region next to the new 2 MiB one.
func (n *NPT) Promote(gpa uint64) (bool, error) {
	if gpa%Size2M != 0 {
		return false, fmt.Errorf("%w: GPA %#x not 2 MiB aligned", ErrUnaligned, gpa)
	}
	if gpa >= MaxGPA {
		return false, ErrRange
	}
	t := n.table(n.root)
	for l := nptLevels; l > levelPD; l-- {
		e := t[index(gpa, l)]
		if e&PTEPresent == 0 || e&PTELarge != 0 {
			return false, nil // a hole, or inside a 1 GiB page
		}
		t = n.table(e & pteAddrMask)
	}
	pde := &t[index(gpa, levelPD)]
	if *pde&PTEPresent == 0 || *pde&PTELarge != 0 {
		return false, nil
	}
	pt := n.table(*pde & pteAddrMask)
	const accessedDirty = PTEAccessed | PTEDirty
	hpa := pt[0] & pteAddrMask
	bits := pt[0] &^ pteAddrMask &^ accessedDirty
	if bits&PTEPresent == 0 || bits&PTEPAT != 0 || hpa%Size2M != 0 {
		return false, nil
	}
	var ad uint64
	for i, e := range pt {
		if e&pteAddrMask != hpa+uint64(i)*PageSize || e&^pteAddrMask&^accessedDirty != bits {
			return false, nil
		}
		ad |= e & accessedDirty
	}
	*pde = hpa | bits | ad | PTELarge
	return true, nil
}

// Translate returns the host-physical address and permission of gpa.
func (n *NPT) Translate(gpa uint64) (hpa uint64, p Perm, ok bool) {
	if gpa >= MaxGPA {
		return 0, 0, false
	}
	t := n.table(n.root)
	for l := nptLevels; l >= 1; l-- {
		e := t[index(gpa, l)]
		if e&PTEPresent == 0 {
			return 0, 0, false
		}
		if l == 1 || e&PTELarge != 0 {
			off := gpa & (levelSize(l) - 1)
			return e&pteAddrMask&^(levelSize(l)-1) + off, permOf(e), true
		}
		t = n.table(e & pteAddrMask)
	}
	return 0, 0, false
}

func permOf(e uint64) Perm {
	p := PermRead
	if e&PTEWrite != 0 {
		p |= PermWrite
	}
	if e&PTENX == 0 {
		p |= PermExec
	}
	return p
}

// Walk calls fn for every leaf mapping in GPA order.
func (n *NPT) Walk(fn func(gpa, hpa, size uint64, p Perm)) {
	n.walk(n.root, nptLevels, 0, fn)
}

func (n *NPT) walk(pa uint64, level int, base uint64, fn func(gpa, hpa, size uint64, p Perm)) {
	t := n.table(pa)
	for i, e := range t {
		if e&PTEPresent == 0 {
			continue
		}
		gpa := base + uint64(i)*levelSize(level)
		if level == 1 || e&PTELarge != 0 {
			fn(gpa, e&pteAddrMask&^(levelSize(level)-1), levelSize(level), permOf(e))
			continue
		}
		n.walk(e&pteAddrMask, level-1, gpa, fn)
	}
}
