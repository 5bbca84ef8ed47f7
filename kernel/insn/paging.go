package insn

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Control-register and EFER bits that select the paging mode
// (APM vol. 2, 3.1 and 5.1).
const (
	CR0_PE   = 1 << 0  // protection enable
	CR0_PG   = 1 << 31 // paging
	CR4_PSE  = 1 << 4  // 4-Mbyte pages in 32-bit (non-PAE) paging
	CR4_PAE  = 1 << 5  // physical-address extension
	CR4_LA57 = 1 << 12 // 5-level paging
	EFER_LME = 1 << 8  // long mode enable
	EFER_LMA = 1 << 10 // long mode active
	EFER_NXE = 1 << 11 // no-execute enable (bit 63 of PAE/long-mode entries)
)

// Page-translation entry bits (APM vol. 2, 5.4 "Page-Translation-Table Entry
// Fields"): legacy, PAE and long-mode entries share the low 12 bits; bit 63
// only exists in the 64-bit (PAE and long-mode) formats.
const (
	PTE_P   = 1 << 0  // present
	PTE_RW  = 1 << 1  // read/write
	PTE_US  = 1 << 2  // user/supervisor
	PTE_PWT = 1 << 3  // page-level writethrough
	PTE_PCD = 1 << 4  // page-level cache disable
	PTE_A   = 1 << 5  // accessed
	PTE_D   = 1 << 6  // dirty (leaf entries only)
	PTE_PS  = 1 << 7  // page size (PDE/PDPE); PAT bit in a 4-Kbyte PTE
	PTE_G   = 1 << 8  // global (leaf entries only)
	PTE_NX  = 1 << 63 // no-execute (PAE and long mode, when EFER.NXE=1)
)

// Physical-address fields. The physical-address width is taken as the
// architectural maximum of 52 bits (APM vol. 2, 5.1), so bits 51:M are never
// treated as reserved.
const (
	pageSize = 1 << 12
	pageMask = pageSize - 1

	// 32-bit (non-PAE) legacy paging, APM vol. 2, 5.2.
	cr3LegacyMask  = 0xffff_f000 // CR3[31:12]: page-directory base
	pte32AddrMask  = 0xffff_f000 // PDE/PTE[31:12]: next table or 4-Kbyte page
	pde4MAddrMask  = 0xffc0_0000 // PDE[31:22]: 4-Mbyte page, PA[31:22]
	pde4MHighShift = 13          // PDE[20:13]: PA[39:32] (PSE-40)
	pde4MHighMask  = 0xff        //
	pde4MRsvd      = 1 << 21     // PDE[21]: reserved in a 4-Mbyte PDE

	// Legacy PAE paging (APM vol. 2, 5.2) and long mode (5.3).
	cr3PAEMask     = 0xffff_ffe0           // CR3[31:5]: PDPT base (32-byte aligned)
	pdptePAERsvd   = 0x1e6                 // PDPTE[8:5] and PDPTE[2:1] must be zero
	paeHighRsvd    = 0x7ff << 52           // bits 62:52 reserved in legacy-PAE entries
	pageAddrMask64 = 0x000f_ffff_ffff_f000 // entry[51:12]: next table or 4-Kbyte page
	page2MAddrMask = 0x000f_ffff_ffe0_0000 // PDE[51:21]: 2-Mbyte page
	page2MRsvd     = 0x1f_e000             // PDE[20:13] reserved in a 2-Mbyte PDE (bit 12 is PAT)
	page1GAddrMask = 0x000f_ffff_c000_0000 // PDPE[51:30]: 1-Gbyte page
	page1GRsvd     = 0x3fff_e000           // PDPE[29:13] reserved in a 1-Gbyte PDPE

	// Long mode, APM vol. 2, 5.3: CR3[51:12] is the PML4 base.
	cr3LongMask = pageAddrMask64
)

// FaultReason tells why a page walk stopped.
type FaultReason uint8

const (
	FaultNotPresent FaultReason = iota + 1 // an entry had P=0
	FaultReserved                          // an entry had a reserved bit set
)

func (r FaultReason) String() string {
	switch r {
	case FaultNotPresent:
		return "not present"
	case FaultReserved:
		return "reserved bit set"
	}
	return fmt.Sprintf("FaultReason(%d)", uint8(r))
}

// PageFault is the error Translate returns when the guest's own page tables
// do not map a linear address: the guest would take a #PF on it.
type PageFault struct {
	Addr   uint64      // linear address (the guest's CR2)
	Reason FaultReason // why the walk stopped
	Level  int         // level of the faulting entry: 1 = PTE, 2 = PDE, 3 = PDPE, 4 = PML4E
	Entry  uint64      // the faulting entry as read
}

func (e *PageFault) Error() string {
	return fmt.Sprintf("insn: page fault at %#x: level-%d entry %#x %v", e.Addr, e.Level, e.Entry, e.Reason)
}

var (
	// ErrNonCanonical is returned for a long-mode linear address whose
	// bits 63:48 are not a sign extension of bit 47 (the guest would #GP).
	ErrNonCanonical = errors.New("insn: non-canonical linear address")
	// ErrLA57 is returned when the guest uses 5-level paging, which
	// Translate does not walk.
	ErrLA57 = errors.New("insn: 5-level paging (CR4.LA57) is not supported")
)

// Translate walks the guest's page tables to map a linear address to a
// guest-physical address (APM vol. 2, chapter 5):
//
//   - CR0.PG=0: no paging, the linear address is the physical one;
//   - EFER.LMA=1: 4-level long-mode paging, 4-Kbyte, 2-Mbyte and 1-Gbyte pages
//     (5-level paging, CR4.LA57, gives ErrLA57);
//   - CR4.PAE=1: 3-level PAE paging, 4-Kbyte and 2-Mbyte pages;
//   - otherwise 2-level 32-bit paging, with 4-Mbyte pages if CR4.PSE=1.
//
// The page-table entries are read with mem, as guest-physical addresses; an
// error from mem is returned wrapped (the caller's NPT does not back that
// table). A present-bit or reserved-bit failure gives a *PageFault. Access
// rights (R/W, U/S, NX) are not checked and no accessed/dirty bit is set:
// Translate only reads.
//
// c's scratch space is used to read the entries, so c must not be shared by
// concurrent calls.
func Translate(mem GuestMemory, c *CPU, linear uint64) (gpa uint64, err error) {
	if c.CR0&CR0_PG == 0 {
		if c.EFER&EFER_LMA == 0 {
			linear &= 0xffff_ffff
		}
		return linear, nil
	}
	switch {
	case c.EFER&EFER_LMA != 0:
		if c.CR4&CR4_LA57 != 0 {
			return 0, ErrLA57
		}
		return walkLong(mem, c, linear)
	case c.CR4&CR4_PAE != 0:
		return walkPAE(mem, c, uint32(linear))
	default:
		return walkLegacy(mem, c, uint32(linear))
	}
}

// readEntry reads one little-endian page-table entry of size 4 or 8 bytes.
func readEntry(mem GuestMemory, c *CPU, gpa uint64, size int, level int) (uint64, error) {
	b := c.pte[:size]
	if err := mem.ReadGPA(gpa, b); err != nil {
		return 0, fmt.Errorf("insn: reading level-%d page-table entry at GPA %#x: %w", level, gpa, err)
	}
	if size == 4 {
		return uint64(binary.LittleEndian.Uint32(b)), nil
	}
	return binary.LittleEndian.Uint64(b), nil
}

// walkLegacy is the 32-bit (non-PAE) walk, APM vol. 2, 5.2.
func walkLegacy(mem GuestMemory, c *CPU, lin uint32) (uint64, error) {
	pdeAddr := c.CR3&cr3LegacyMask | uint64(lin>>22)<<2
	pde, err := readEntry(mem, c, pdeAddr, 4, 2)
	if err != nil {
		return 0, err
	}
	if pde&PTE_P == 0 {
		return 0, &PageFault{Addr: uint64(lin), Reason: FaultNotPresent, Level: 2, Entry: pde}
	}
	if pde&PTE_PS != 0 && c.CR4&CR4_PSE != 0 {
		// 4-Mbyte page with PSE-40 high address bits (APM vol. 2, 5.2).
		if pde&pde4MRsvd != 0 {
			return 0, &PageFault{Addr: uint64(lin), Reason: FaultReserved, Level: 2, Entry: pde}
		}
		base := pde&pde4MAddrMask | (pde>>pde4MHighShift&pde4MHighMask)<<32
		return base | uint64(lin&(1<<22-1)), nil
	}
	pteAddr := pde&pte32AddrMask | uint64(lin>>12&0x3ff)<<2
	pte, err := readEntry(mem, c, pteAddr, 4, 1)
	if err != nil {
		return 0, err
	}
	if pte&PTE_P == 0 {
		return 0, &PageFault{Addr: uint64(lin), Reason: FaultNotPresent, Level: 1, Entry: pte}
	}
	return pte&pte32AddrMask | uint64(lin&pageMask), nil
}

// rsvd64 returns the reserved bits common to every level of a PAE or
// long-mode entry: NX when EFER.NXE=0 (APM vol. 2, 5.6), and, in legacy
// PAE mode, bits 62:52 (APM vol. 2, 5.2; Intel SDM vol. 3A, 4.4.2).
func rsvd64(c *CPU, long bool) uint64 {
	var r uint64
	if c.EFER&EFER_NXE == 0 {
		r |= PTE_NX
	}
	if !long {
		r |= paeHighRsvd
	}
	return r
}

// walkPAE is the 3-level legacy PAE walk, APM vol. 2, 5.2.
func walkPAE(mem GuestMemory, c *CPU, lin uint32) (uint64, error) {
	rsvd := rsvd64(c, false)
	pdpteAddr := c.CR3&cr3PAEMask | uint64(lin>>30)<<3
	pdpte, err := readEntry(mem, c, pdpteAddr, 8, 3)
	if err != nil {
		return 0, err
	}
	if pdpte&PTE_P == 0 {
		return 0, &PageFault{Addr: uint64(lin), Reason: FaultNotPresent, Level: 3, Entry: pdpte}
	}
	// A legacy-PAE PDPTE has no R/W, U/S, A, D, PS, G or NX bits.
	if pdpte&(pdptePAERsvd|paeHighRsvd|PTE_NX) != 0 {
		return 0, &PageFault{Addr: uint64(lin), Reason: FaultReserved, Level: 3, Entry: pdpte}
	}
	return walkPDE(mem, c, uint64(lin), pdpte&pageAddrMask64, rsvd)
}

// walkPDE finishes a PAE or long-mode walk from the page directory down.
func walkPDE(mem GuestMemory, c *CPU, lin, pd, rsvd uint64) (uint64, error) {
	pdeAddr := pd | (lin>>21&0x1ff)<<3
	pde, err := readEntry(mem, c, pdeAddr, 8, 2)
	if err != nil {
		return 0, err
	}
	if pde&PTE_P == 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultNotPresent, Level: 2, Entry: pde}
	}
	if pde&PTE_PS != 0 {
		if pde&(rsvd|page2MRsvd) != 0 {
			return 0, &PageFault{Addr: lin, Reason: FaultReserved, Level: 2, Entry: pde}
		}
		return pde&page2MAddrMask | lin&(1<<21-1), nil
	}
	if pde&rsvd != 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultReserved, Level: 2, Entry: pde}
	}
	pteAddr := pde&pageAddrMask64 | (lin>>12&0x1ff)<<3
	pte, err := readEntry(mem, c, pteAddr, 8, 1)
	if err != nil {
		return 0, err
	}
	if pte&PTE_P == 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultNotPresent, Level: 1, Entry: pte}
	}
	if pte&rsvd != 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultReserved, Level: 1, Entry: pte}
	}
	return pte&pageAddrMask64 | lin&pageMask, nil
}

// walkLong is the 4-level long-mode walk, APM vol. 2, 5.3.
func walkLong(mem GuestMemory, c *CPU, lin uint64) (uint64, error) {
	if uint64(int64(lin<<16)>>16) != lin {
		return 0, ErrNonCanonical
	}
	rsvd := rsvd64(c, true)
	pml4eAddr := c.CR3&cr3LongMask | (lin>>39&0x1ff)<<3
	pml4e, err := readEntry(mem, c, pml4eAddr, 8, 4)
	if err != nil {
		return 0, err
	}
	if pml4e&PTE_P == 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultNotPresent, Level: 4, Entry: pml4e}
	}
	// PS is reserved in a PML4E (there are no 512-Gbyte pages).
	if pml4e&(rsvd|PTE_PS) != 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultReserved, Level: 4, Entry: pml4e}
	}
	pdpeAddr := pml4e&pageAddrMask64 | (lin>>30&0x1ff)<<3
	pdpe, err := readEntry(mem, c, pdpeAddr, 8, 3)
	if err != nil {
		return 0, err
	}
	if pdpe&PTE_P == 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultNotPresent, Level: 3, Entry: pdpe}
	}
	if pdpe&PTE_PS != 0 {
		// 1-Gbyte page (APM vol. 2, 5.3).
		if pdpe&(rsvd|page1GRsvd) != 0 {
			return 0, &PageFault{Addr: lin, Reason: FaultReserved, Level: 3, Entry: pdpe}
		}
		return pdpe&page1GAddrMask | lin&(1<<30-1), nil
	}
	if pdpe&rsvd != 0 {
		return 0, &PageFault{Addr: lin, Reason: FaultReserved, Level: 3, Entry: pdpe}
	}
	return walkPDE(mem, c, lin, pdpe&pageAddrMask64, rsvd)
}
