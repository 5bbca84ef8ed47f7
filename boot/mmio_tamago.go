//go:build tamago && amd64

package boot

import (
	"fmt"
	"unsafe"

	"github.com/usbarmory/tamago/amd64"
	"github.com/usbarmory/tamago/dma"

	"tamavisor/internal/x86"
)

// TamaGo's identity map (amd64/init.s): [IdentityStart, IdentityEnd),
// 0-3 GiB write-back, 3-6 GiB with PCD set (uncacheable); the zero page
// is not mapped. MapMMIO adds device registers beyond it.
const (
	IdentityStart = 0x1000
	IdentityEnd   = 6 << 30
)

// Page table entry bits (AMD APM vol. 2, section 5.4.1) and the PAT
// (section 7.8): a page's PAT index is PAT<<2 | PCD<<1 | PWT.
const (
	ptePresent  = 1 << 0
	ptePWT      = 1 << 3
	ptePCD      = 1 << 4
	ptePATLarge = 1 << 12 // PAT bit of a 2 MiB or 1 GiB page
	ptePAT4K    = 1 << 7  // PAT bit of a 4 KiB page
	msrPAT      = 0x277
	patEntry    = 8 // bits per PAT entry
	patUCMinus  = 7 // PAT type UC- (UC unless the MTRRs say WC)

	pteWrite     = 1 << 1
	ptePS        = 1 << 7 // a 1 GiB page in a PDPT entry
	pteAddr      = 0x000f_ffff_ffff_f000
	pml4Shift    = 39 // 512 GiB per PML4 entry (section 5.3.3, Figure 5-18)
	pdptShift    = 30 // 1 GiB per PDPT entry (1 GiB pages, Figure 5-22)
	tableIndex   = 0x1ff
	tableSize    = 4096
	entrySize    = 8
	canonicalEnd = 1 << 47 // identity-mapped addresses must be canonical, lower half
	// mmioPage maps a 1 GiB page of device registers: present, writable,
	// PCD and PWT (PAT entry 3, UC in the power-on PAT: section 7.8.2).
	mmioPage = ptePresent | pteWrite | ptePS | ptePCD | ptePWT
)

// MapMMIO identity-maps [pa, pa+size) uncacheable where TamaGo's page
// tables leave it unmapped, as firmware places 64-bit BARs far above RAM
// (OVMF on q35: 0xe000000000). It adds 1 GiB pages (PDPT entries with
// PCD|PWT), and a PDPT from the DMA region where a PML4 entry is empty;
// parts that are already mapped are left as they are (MMIOType checks
// them). It needs 1 GiB page support, which TamaGo requires anyway.
func MapMMIO(pa, size uint64) error {
	if size == 0 || pa >= canonicalEnd || size > canonicalEnd-pa {
		return fmt.Errorf("[%#x, +%#x) cannot be identity-mapped (above %#x)", pa, size, uint64(canonicalEnd))
	}
	pml4 := x86.ReadCR3() & pteAddr
	changed := false
	for g := pa >> pdptShift; g <= (pa+size-1)>>pdptShift; g++ {
		page := g << pdptShift
		pml4e := entry(pml4, page>>pml4Shift&tableIndex)
		if *pml4e&ptePresent == 0 {
			addr, buf := dma.Reserve(tableSize, tableSize)
			if buf == nil {
				return fmt.Errorf("no memory for a page table to map %#x", page)
			}
			clear(buf)
			*pml4e = uint64(addr) | ptePresent | pteWrite
		}
		pdpte := entry(*pml4e&pteAddr, page>>pdptShift&tableIndex)
		if *pdpte&ptePresent == 0 {
			*pdpte = page | mmioPage
			changed = true
		}
	}
	if changed {
		x86.WriteCR3(x86.ReadCR3()) // flush cached translations
	}
	return nil
}

// entry returns entry i of the page table at physical address table.
func entry(table, i uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(uintptr(table + i*entrySize)))
}

// MMIOType says how [pa, pa+size) is mapped for a device's registers:
// the page table's PAT type and the MTRR type of each end. uncached is
// true when the effective type (APM vol. 2, Table 7-11) is UC for both
// ends, as device registers need; err says an end is not mapped.
func MMIOType(pa, size uint64) (desc string, uncached bool, err error) {
	if size == 0 || pa < IdentityStart || pa >= canonicalEnd || size > canonicalEnd-pa {
		return "", false, fmt.Errorf("[%#x, +%#x) cannot be identity-mapped", pa, size)
	}
	defType := x86.RDMSR(MSRMTRRDefType)
	var vars []VariableMTRR
	for i := range min(uint32(x86.RDMSR(MSRMTRRCap)&mtrrCapVCNT), maxVariableMTRR) {
		vars = append(vars, VariableMTRR{Base: x86.RDMSR(MSRMTRRPhysBase + 2*i), Mask: x86.RDMSR(MSRMTRRPhysMask + 2*i)})
	}
	pat := x86.RDMSR(msrPAT)
	uncached = true
	for i, a := range []uint64{pa, pa + size - 1} {
		off, level, _ := CPU.FindPTE(a, 0)
		if off == 0 {
			return "", false, fmt.Errorf("%#x is not mapped", a)
		}
		pte := *(*uint64)(unsafe.Pointer(uintptr(off)))
		idx := pte >> 3 & 3 // PCD, PWT
		if (level == amd64.PT && pte&ptePAT4K != 0) || (level != amd64.PT && pte&ptePATLarge != 0) {
			idx |= 4
		}
		page := uint8(pat >> (patEntry * idx) & mtrrTypeMask)
		mtrr := MTRRType(defType, vars, a)
		switch {
		case mtrr == MTRRUncacheable, page == MTRRUncacheable:
		case page == patUCMinus && mtrr != MTRRWriteCombine:
		default:
			uncached = false
		}
		pageName := MTRRTypeName(page)
		if page == patUCMinus {
			pageName = "UC-"
		}
		if i == 0 {
			desc = fmt.Sprintf("page %s, MTRR %s", pageName, MTRRTypeName(mtrr))
		}
	}
	return desc, uncached, nil
}
