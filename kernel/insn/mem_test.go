package insn

import (
	"encoding/binary"
	"errors"
)

var errUnbacked = errors.New("fake: GPA not backed")

// fakeMem is guest-physical memory [0, len(b)), with a bump allocator of
// zeroed 4-Kbyte pages for building page tables.
type fakeMem struct {
	b    []byte
	next uint64 // next free page
	wrap bool   // reduce every GPA modulo len(b) (fuzzing: always backed)
}

func newMem(size int) *fakeMem {
	return &fakeMem{b: make([]byte, size), next: 0x1000}
}

func (m *fakeMem) ReadGPA(gpa uint64, b []byte) error {
	if m.wrap {
		for i := range b {
			b[i] = m.b[(gpa+uint64(i))%uint64(len(m.b))]
		}
		return nil
	}
	if gpa > uint64(len(m.b)) || uint64(len(b)) > uint64(len(m.b))-gpa {
		return errUnbacked
	}
	copy(b, m.b[gpa:])
	return nil
}

func (m *fakeMem) page() uint64 {
	p := m.next
	m.next += 0x1000
	if m.next > uint64(len(m.b)) {
		panic("fakeMem: out of pages")
	}
	return p
}

func (m *fakeMem) put32(gpa uint64, v uint32) { binary.LittleEndian.PutUint32(m.b[gpa:], v) }
func (m *fakeMem) put64(gpa uint64, v uint64) { binary.LittleEndian.PutUint64(m.b[gpa:], v) }
func (m *fakeMem) get64(gpa uint64) uint64    { return binary.LittleEndian.Uint64(m.b[gpa:]) }
func (m *fakeMem) get32(gpa uint64) uint32    { return binary.LittleEndian.Uint32(m.b[gpa:]) }

const tflags = PTE_P | PTE_RW

// long4 builds 4-level long-mode tables rooted at cr3.
type long4 struct {
	m   *fakeMem
	cr3 uint64
}

func newLong4(m *fakeMem) *long4 { return &long4{m: m, cr3: m.page()} }

// table returns the next-level table of the entry at gpa, creating it.
func (t *long4) table(entry uint64) uint64 {
	e := t.m.get64(entry)
	if e&PTE_P == 0 {
		e = t.m.page() | tflags
		t.m.put64(entry, e)
	}
	return e & pageAddrMask64
}

// mapPage maps lin to gpa with a page of the given size (4K, 2M or 1G).
func (t *long4) mapPage(lin, gpa uint64, size uint64) {
	pdpt := t.table(t.cr3 + (lin>>39&0x1ff)*8)
	pdpe := pdpt + (lin>>30&0x1ff)*8
	if size == 1<<30 {
		t.m.put64(pdpe, gpa|tflags|PTE_PS)
		return
	}
	pd := t.table(pdpe)
	pde := pd + (lin>>21&0x1ff)*8
	if size == 1<<21 {
		t.m.put64(pde, gpa|tflags|PTE_PS)
		return
	}
	pt := t.table(pde)
	t.m.put64(pt+(lin>>12&0x1ff)*8, gpa|tflags)
}

// pae builds 3-level PAE tables; the PDPT sits at cr3.
type pae struct {
	m   *fakeMem
	cr3 uint64
}

func newPAE(m *fakeMem) *pae { return &pae{m: m, cr3: m.page() + 0x20} } // 32-byte aligned, not page aligned

func (t *pae) mapPage(lin, gpa uint64, size uint64) {
	pdpte := t.cr3 + (lin>>30&3)*8
	e := t.m.get64(pdpte)
	if e&PTE_P == 0 {
		e = t.m.page() | PTE_P // PDPTE: no R/W or U/S
		t.m.put64(pdpte, e)
	}
	pde := e&pageAddrMask64 + (lin>>21&0x1ff)*8
	if size == 1<<21 {
		t.m.put64(pde, gpa|tflags|PTE_PS)
		return
	}
	d := t.m.get64(pde)
	if d&PTE_P == 0 {
		d = t.m.page() | tflags
		t.m.put64(pde, d)
	}
	t.m.put64(d&pageAddrMask64+(lin>>12&0x1ff)*8, gpa|tflags)
}

// legacy32 builds 2-level 32-bit tables.
type legacy32 struct {
	m   *fakeMem
	cr3 uint64
}

func newLegacy32(m *fakeMem) *legacy32 { return &legacy32{m: m, cr3: m.page()} }

func (t *legacy32) mapPage(lin, gpa uint64, size uint64) {
	pde := t.cr3 + (lin>>22)*4
	if size == 1<<22 {
		t.m.put32(pde, uint32(gpa&pde4MAddrMask|(gpa>>32&0xff)<<13|tflags|PTE_PS))
		return
	}
	d := uint64(t.m.get32(pde))
	if d&PTE_P == 0 {
		d = t.m.page() | tflags
		t.m.put32(pde, uint32(d))
	}
	t.m.put32(d&pte32AddrMask+(lin>>12&0x3ff)*4, uint32(gpa|tflags))
}

// Guest CPU states.
const (
	csCode64 = CSAttrL | 0x9b  // present, code, L=1
	csCode32 = CSAttrDB | 0x9b // D=1
	csCode16 = 0x9b
	cr0PG    = CR0_PE | CR0_PG
)

func cpuLong(cr3, rip uint64) *CPU {
	return &CPU{CR0: cr0PG, CR3: cr3, CR4: CR4_PAE, EFER: EFER_LME | EFER_LMA | EFER_NXE, CSAttrib: csCode64, RIP: rip}
}
