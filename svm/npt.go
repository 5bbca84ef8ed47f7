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
	PTENX       = 1 << 63

	pteAddrMask = 0x000ffffffffff000 // bits 51:12

	Size2M = 2 << 20
	Size1G = 1 << 30

	nptLevels     = 4
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
func (n *NPT) Map(gpa, hpa, size uint64, p Perm) error {
	if gpa%PageSize != 0 || hpa%PageSize != 0 || size%PageSize != 0 {
		return ErrUnaligned
	}
	if gpa+size > MaxGPA || gpa+size < gpa {
		return ErrRange
	}
	for size > 0 {
		level := 1
		if gpa%Size2M == 0 && hpa%Size2M == 0 && size >= Size2M {
			level = 2
		}
		if err := n.set(gpa, hpa, level, p); err != nil {
			return fmt.Errorf("%w at GPA %#x", err, gpa)
		}
		step := levelSize(level)
		gpa, hpa, size = gpa+step, hpa+step, size-step
	}
	return nil
}

// set installs one leaf at level (1: 4 KiB, 2: 2 MiB).
func (n *NPT) set(gpa, hpa uint64, level int, p Perm) error {
	t := n.table(n.root)
	for l := nptLevels; l > level; l-- {
		e := &t[index(gpa, l)]
		if *e&PTEPresent == 0 {
			pa, err := n.alloc.AllocPage()
			if err != nil {
				return err
			}
			*e = pa | tableBits
		} else if *e&PTELarge != 0 {
			return ErrMapped
		}
		t = n.table(*e & pteAddrMask)
	}
	e := &t[index(gpa, level)]
	if *e&PTEPresent != 0 {
		return ErrMapped
	}
	*e = hpa | leafBits(p)
	if level > 1 {
		*e |= PTELarge
	}
	return nil
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
