package linux

import (
	"encoding/binary"

	"tamavisor/svm"
)

// Selectors the 64-bit entry expects (boot.rst, "64-bit Boot Protocol":
// CS must be __BOOT_CS and DS, ES, SS must be __BOOT_DS).
const (
	BootCS  = 0x10  // __BOOT_CS
	BootDS  = 0x18  // __BOOT_DS
	GDTSize = 4 * 8 // null, unused, __BOOT_CS, __BOOT_DS
)

// Segment attributes of the flat boot segments in the VMCB format (APM
// vol. 2, 15.5.1: descriptor bits 40-47 in bits 0-7, bits 52-55 in 8-11).
const (
	// AttrCode64: present code segment, execute/read, accessed, L=1, D=0, G=1.
	AttrCode64 = svm.SegP | svm.SegS | svm.SegCode | svm.SegWrite | svm.SegAccessed | svm.SegL | svm.SegG
	// AttrData: present data segment, read/write, accessed, D/B=1, G=1.
	AttrData = svm.SegP | svm.SegS | svm.SegWrite | svm.SegAccessed | svm.SegDB | svm.SegG
)

// flatLimit is the 20-bit limit of a 4 GiB segment with G=1; the VMCB holds
// it expanded.
const (
	flatLimit     = 0xFFFFF
	flatLimitVMCB = 0xFFFFFFFF
)

// descriptor is a flat segment descriptor (APM vol. 2, 4.7) with base 0
// and VMCB-format attributes attrib.
func descriptor(attrib uint16) uint64 {
	d := uint64(flatLimit&0xFFFF) | uint64(flatLimit>>16)<<48
	d |= uint64(attrib&0xFF) << 40
	d |= uint64(attrib>>8&0xF) << 52
	return d
}

// GDT is the boot GDT: __BOOT_CS a flat 64-bit code segment, __BOOT_DS a
// flat data segment.
func GDT() []byte {
	g := make([]byte, GDTSize)
	binary.LittleEndian.PutUint64(g[BootCS:], descriptor(AttrCode64))
	binary.LittleEndian.PutUint64(g[BootDS:], descriptor(AttrData))
	return g
}

// Page-table entry bits (APM vol. 2, 5.3.3 and 5.4: long-mode 2-MiB pages).
const (
	pteP  = 1 << 0
	pteRW = 1 << 1
	ptePS = 1 << 7 // PDE maps a 2 MiB page

	entries   = 512
	size2M    = 2 << 20
	size1G    = 1 << 30
	maxMapped = entries * size1G // one PDPT
)

// PageTablesSize is the size of PageTables(_, mapBytes): PML4, PDPT and
// one PD per GiB.
func PageTablesSize(mapBytes uint64) uint64 {
	return (2 + (mapBytes+size1G-1)/size1G) * pageSize
}

// PageTables identity-maps [0, mapBytes) (rounded up to 1 GiB) with
// present, writable 2 MiB pages, in tables that go at guest-physical base:
// the PML4 at base (CR3), the PDPT at base+4 KiB, the PDs after it.
func PageTables(base, mapBytes uint64) ([]byte, error) {
	if base%pageSize != 0 || mapBytes == 0 || mapBytes > maxMapped {
		return nil, refuse("page tables at %#x for %#x bytes: want a 4 KiB aligned base and 1 byte to 512 GiB", base, mapBytes)
	}
	size := PageTablesSize(mapBytes)
	if base+size < base {
		return nil, refuse("page tables at %#x wrap", base)
	}
	t := make([]byte, size)
	le := binary.LittleEndian
	pdpt := base + pageSize
	le.PutUint64(t[0:], pdpt|pteP|pteRW)
	for g := uint64(0); g < size/pageSize-2; g++ {
		pd := pdpt + pageSize + g*pageSize
		le.PutUint64(t[pageSize+g*8:], pd|pteP|pteRW)
		for i := uint64(0); i < entries; i++ {
			le.PutUint64(t[pd-base+i*8:], g*size1G+i*size2M|pteP|pteRW|ptePS)
		}
	}
	return t, nil
}

// EntryState is the register state of the 64-bit entry (boot.rst, "64-bit
// Boot Protocol"): long mode with paging on the identity map, flat
// __BOOT_CS/__BOOT_DS, interrupts off, RSI at boot_params, RIP at the
// load address + 0x200. Other general registers are 0. The caller adds
// EFER.SVME and its own TR, LDTR, PAT and debug registers.
type EntryState struct {
	RIP, RSI, RSP, RFLAGS  uint64
	CR0, CR3, CR4, EFER    uint64
	GDTR, IDTR             svm.Segment // base and limit only
	CS, DS, ES, SS, FS, GS svm.Segment
}

// Entry is the state the vCPU starts the kernel placed by l in.
func (l *Layout) Entry() EntryState {
	code := svm.Segment{Selector: BootCS, Attrib: AttrCode64, Limit: flatLimitVMCB}
	data := svm.Segment{Selector: BootDS, Attrib: AttrData, Limit: flatLimitVMCB}
	return EntryState{
		RIP:    l.Kernel + Entry64Offset,
		RSI:    l.ZeroPage,
		RSP:    l.StackTop,
		RFLAGS: svm.RFLAGSFixed, // IF=0
		CR0:    svm.CR0PE | svm.CR0ET | svm.CR0PG,
		CR3:    l.PageTables,
		CR4:    svm.CR4PAE,
		EFER:   svm.EFERLME | svm.EFERLMA,
		GDTR:   svm.Segment{Base: l.GDT, Limit: GDTSize - 1},
		CS:     code,
		DS:     data, ES: data, SS: data, FS: data, GS: data,
	}
}

// Apply copies e into a VMCB state save area and the general registers
// the VMCB lacks (RSI there, the others 0). It sets CPL 0, keeps
// EFER.SVME and leaves the other fields of s.
func (e *EntryState) Apply(s *svm.StateSaveArea, r *svm.Regs) {
	*r = svm.Regs{RSI: e.RSI}
	s.RAX, s.RIP, s.RSP, s.RFLAGS = 0, e.RIP, e.RSP, e.RFLAGS
	s.CR0, s.CR3, s.CR4 = e.CR0, e.CR3, e.CR4
	s.EFER = s.EFER&svm.EFERSVME | e.EFER
	s.CPL = 0
	s.GDTR, s.IDTR = e.GDTR, e.IDTR
	s.CS, s.DS, s.ES, s.SS, s.FS, s.GS = e.CS, e.DS, e.ES, e.SS, e.FS, e.GS
}
