package insn

import (
	"errors"
	"testing"
)

func wantGPA(t *testing.T, mem GuestMemory, c *CPU, lin, want uint64) {
	t.Helper()
	got, err := Translate(mem, c, lin)
	if err != nil {
		t.Fatalf("Translate(%#x): %v", lin, err)
	}
	if got != want {
		t.Fatalf("Translate(%#x) = %#x, want %#x", lin, got, want)
	}
}

func wantFault(t *testing.T, mem GuestMemory, c *CPU, lin uint64, reason FaultReason, level int) {
	t.Helper()
	_, err := Translate(mem, c, lin)
	var pf *PageFault
	if !errors.As(err, &pf) {
		t.Fatalf("Translate(%#x) err = %v, want *PageFault", lin, err)
	}
	if pf.Addr != lin || pf.Reason != reason || pf.Level != level {
		t.Fatalf("Translate(%#x) = %+v, want addr %#x reason %v level %d", lin, pf, lin, reason, level)
	}
	if pf.Error() == "" {
		t.Fatal("empty PageFault message")
	}
}

func TestTranslateNoPaging(t *testing.T) {
	m := newMem(1 << 16)
	c := &CPU{CR0: CR0_PE}
	wantGPA(t, m, c, 0x1234, 0x1234)
	wantGPA(t, m, c, 0x1_0000_1234, 0x1234) // 32-bit linear addresses
	c.CR0 = 0
	wantGPA(t, m, c, 0xffff_fff0, 0xffff_fff0)
}

func TestTranslateLong4K(t *testing.T) {
	m := newMem(1 << 20)
	pt := newLong4(m)
	c := cpuLong(pt.cr3, 0)
	pt.mapPage(0x0000_7fff_1234_5000, 0x2_0000, 1<<12)
	pt.mapPage(0xffff_ffff_ffff_f000, 0xa_b000, 1<<12) // last page of the address space
	wantGPA(t, m, c, 0x0000_7fff_1234_5678, 0x2_0678)
	wantGPA(t, m, c, 0xffff_ffff_ffff_ffff, 0xa_bfff)
	wantFault(t, m, c, 0x0000_7fff_1234_6000, FaultNotPresent, 1) // same PT, next entry
	wantFault(t, m, c, 0x0000_7fff_1260_0000, FaultNotPresent, 2) // same PD
	wantFault(t, m, c, 0x0000_7fff_4000_0000, FaultNotPresent, 3) // same PDPT
	wantFault(t, m, c, 0x0000_1000_0000_0000, FaultNotPresent, 4)
}

func TestTranslateLongLarge(t *testing.T) {
	m := newMem(1 << 20)
	pt := newLong4(m)
	c := cpuLong(pt.cr3, 0)
	pt.mapPage(0xffff_8000_0020_0000, 0x4000_0000, 1<<21)
	pt.mapPage(0x4000_0000, 0x1_4000_0000, 1<<30)
	pt.mapPage(0x7f_c000_0000, 0x000f_ffff_c000_0000, 1<<30) // highest 52-bit physical address
	wantGPA(t, m, c, 0xffff_8000_0021_2345, 0x4001_2345)
	wantGPA(t, m, c, 0x4000_0000, 0x1_4000_0000)
	wantGPA(t, m, c, 0x7fff_ffff, 0x1_7fff_ffff)
	wantGPA(t, m, c, 0x7f_ffff_ffff, 0x000f_ffff_ffff_ffff)
}

func TestTranslateLongReserved(t *testing.T) {
	m := newMem(1 << 20)
	pt := newLong4(m)
	c := cpuLong(pt.cr3, 0)
	pt.mapPage(0x20_0000, 0x20_0000, 1<<21)
	pt.mapPage(0x40_0000, 0x5000, 1<<12)
	pt.mapPage(0x8000_0000, 0x8000_0000, 1<<30)
	pml4e := pt.cr3
	pdpt := m.get64(pml4e) & pageAddrMask64
	pd := m.get64(pdpt) & pageAddrMask64
	pde2M := pd + 8
	pt4K := m.get64(pd+2*8) & pageAddrMask64
	pdpe1G := pdpt + 2*8

	set := func(gpa, bits uint64) func() {
		old := m.get64(gpa)
		m.put64(gpa, old|bits)
		return func() { m.put64(gpa, old) }
	}
	for _, tc := range []struct {
		name  string
		entry uint64
		bits  uint64
		nxe   bool
		lin   uint64
		level int
	}{
		{"PS in PML4E", pml4e, PTE_PS, true, 0x20_0000, 4},
		{"NX in PML4E without NXE", pml4e, PTE_NX, false, 0x20_0000, 4},
		{"NX in PTE without NXE", pt4K, PTE_NX, false, 0x40_0000, 1},
		{"2M PDE bit 13", pde2M, 1 << 13, true, 0x20_0000, 2},
		{"1G PDPE bit 29", pdpe1G, 1 << 29, true, 0x8000_0000, 3},
		{"1G PDPE NX without NXE", pdpe1G, PTE_NX, false, 0x8000_0000, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restore := set(tc.entry, tc.bits)
			defer restore()
			c.EFER = EFER_LME | EFER_LMA
			if tc.nxe {
				c.EFER |= EFER_NXE
			}
			wantFault(t, m, c, tc.lin, FaultReserved, tc.level)
		})
	}
	// Allowed: NX with NXE=1, PAT in a 2M PDE, available bits 62:52 in long mode.
	c.EFER = EFER_LME | EFER_LMA | EFER_NXE
	defer set(pde2M, PTE_NX|1<<12|0x7ff<<52)()
	defer set(pt4K, PTE_NX|PTE_PS)() // PAT bit in a 4K PTE
	wantGPA(t, m, c, 0x20_1234, 0x20_1234)
	wantGPA(t, m, c, 0x40_0123, 0x5123)
}

func TestTranslateLongErrors(t *testing.T) {
	m := newMem(1 << 16)
	pt := newLong4(m)
	c := cpuLong(pt.cr3, 0)
	if _, err := Translate(m, c, 0x0000_8000_0000_0000); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("non-canonical: err = %v", err)
	}
	if _, err := Translate(m, c, 0xffff_7fff_ffff_ffff); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("non-canonical: err = %v", err)
	}
	c.CR4 |= CR4_LA57
	if _, err := Translate(m, c, 0); !errors.Is(err, ErrLA57) {
		t.Errorf("LA57: err = %v", err)
	}
	// A page table outside guest memory: the memory's error, not a #PF.
	c = cpuLong(0x100_0000, 0)
	_, err := Translate(m, c, 0)
	var pf *PageFault
	if !errors.Is(err, errUnbacked) || errors.As(err, &pf) {
		t.Errorf("unbacked PML4: err = %v", err)
	}
}

func TestTranslatePAE(t *testing.T) {
	m := newMem(1 << 20)
	pt := newPAE(m)
	c := &CPU{CR0: cr0PG, CR3: pt.cr3, CR4: CR4_PAE, CSAttrib: csCode32}
	pt.mapPage(0xc000_1000, 0x7000, 1<<12)
	pt.mapPage(0x0060_0000, 0xf_ffe0_0000, 1<<21) // above 4 GiB
	wantGPA(t, m, c, 0xc000_1abc, 0x7abc)
	wantGPA(t, m, c, 0x0061_0001, 0xf_ffe1_0001)
	wantGPA(t, m, c, 0x1_c000_1abc, 0x7abc) // 32-bit linear address
	wantFault(t, m, c, 0xc000_2000, FaultNotPresent, 1)
	wantFault(t, m, c, 0xc020_0000, FaultNotPresent, 2)
	wantFault(t, m, c, 0x4000_0000, FaultNotPresent, 3)

	pdpte := pt.cr3 + 3*8
	old := m.get64(pdpte)
	m.put64(pdpte, old|PTE_RW) // reserved in a legacy-PAE PDPTE
	wantFault(t, m, c, 0xc000_1000, FaultReserved, 3)
	m.put64(pdpte, old)

	pde := m.get64(pt.cr3)&pageAddrMask64 + 3*8
	old = m.get64(pde)
	m.put64(pde, old|1<<52) // bits 62:52 reserved in legacy PAE
	wantFault(t, m, c, 0x0060_0000, FaultReserved, 2)
	m.put64(pde, old|PTE_NX) // NX without NXE
	wantFault(t, m, c, 0x0060_0000, FaultReserved, 2)
	c.EFER = EFER_NXE
	wantGPA(t, m, c, 0x0060_0000, 0xf_ffe0_0000)
}

func TestTranslateLegacy(t *testing.T) {
	m := newMem(1 << 20)
	pt := newLegacy32(m)
	c := &CPU{CR0: cr0PG, CR3: pt.cr3, CSAttrib: csCode32}
	pt.mapPage(0x8048_3000, 0x9000, 1<<12)
	wantGPA(t, m, c, 0x8048_3fff, 0x9fff)
	wantFault(t, m, c, 0x8048_4000, FaultNotPresent, 1)
	wantFault(t, m, c, 0x0000_0000, FaultNotPresent, 2)

	// 4-Mbyte pages with PSE-40 address bits.
	c.CR4 = CR4_PSE
	pt.mapPage(0xc040_0000, 0x12_0080_0000, 1<<22)
	wantGPA(t, m, c, 0xc045_6789, 0x12_0085_6789)
	pde := pt.cr3 + (0xc040_0000>>22)*4
	m.put32(pde, m.get32(pde)|1<<21)
	wantFault(t, m, c, 0xc040_0000, FaultReserved, 2)

	// Without CR4.PSE, PS is ignored: the PDE points to a page table.
	ptPage := m.page()
	m.put32(ptPage+5*4, 0xa000|tflags)
	m.put32(pde, uint32(ptPage)|tflags|PTE_PS)
	c.CR4 = 0
	wantGPA(t, m, c, 0xc040_5004, 0xa004)
}
