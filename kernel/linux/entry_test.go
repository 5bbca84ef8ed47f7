package linux

import (
	"encoding/binary"
	"testing"

	"tamavisor/svm"
)

func TestGDT(t *testing.T) {
	g := GDT()
	le := binary.LittleEndian
	want := []uint64{
		0,
		0,
		0x00AF9B000000FFFF, // __BOOT_CS: base 0, limit 0xFFFFF, G, L, P, code exec/read accessed
		0x00CF93000000FFFF, // __BOOT_DS: base 0, limit 0xFFFFF, G, D/B, P, data read/write accessed
	}
	if len(g) != 32 {
		t.Fatalf("GDT of %d bytes", len(g))
	}
	for i, w := range want {
		if got := le.Uint64(g[8*i:]); got != w {
			t.Errorf("GDT[%d] = %#016x, want %#016x", i, got, w)
		}
	}
	// The VMCB attributes are the descriptors' bits 40-47 and 52-55.
	if AttrCode64 != 0xA9B || AttrData != 0xC93 {
		t.Errorf("AttrCode64 %#x AttrData %#x, want 0xA9B 0xC93", AttrCode64, AttrData)
	}
	for sel, attr := range map[int]uint16{BootCS: AttrCode64, BootDS: AttrData} {
		d := le.Uint64(g[sel:])
		if got := uint16(d>>40&0xFF | d>>52&0xF<<8); got != attr {
			t.Errorf("selector %#x: descriptor attributes %#x, constant %#x", sel, got, attr)
		}
	}
	if BootCS != 0x10 || BootDS != 0x18 {
		t.Error("boot.rst: __BOOT_CS is 0x10, __BOOT_DS 0x18")
	}
}

func TestPageTables(t *testing.T) {
	const base = 0x9000
	pt, err := PageTables(base, 4<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(pt) != 6*4096 {
		t.Fatalf("%#x bytes, want 6 pages", len(pt))
	}
	le := binary.LittleEndian
	at := func(gpa uint64) uint64 { return le.Uint64(pt[gpa-base:]) }
	if got := at(0x9000); got != 0xA003 {
		t.Errorf("PML4[0] = %#x, want the PDPT at 0xA000, present, writable", got)
	}
	for i := uint64(0); i < 4; i++ {
		if got, want := at(0xA000+8*i), 0xB003+i*0x1000; got != want {
			t.Errorf("PDPT[%d] = %#x, want %#x", i, got, want)
		}
	}
	for i := uint64(1); i < 512; i++ {
		if at(0x9000+8*i) != 0 || i >= 4 && at(0xA000+8*i) != 0 {
			t.Fatalf("PML4/PDPT entry %d not empty", i)
		}
	}
	// Walk a few addresses: each maps to itself through a 2 MiB page.
	for _, va := range []uint64{0, 0x1000200, 0x7000, 0x3FFFFFFF, 0x40000000, 0xFEE00000, 0xFFFFFFFF} {
		pml4e := at(base + (va>>39&511)*8)
		pdpte := at(pml4e&^0xFFF + (va>>30&511)*8)
		pde := at(pdpte&^0xFFF + (va>>21&511)*8)
		if pml4e&3 != 3 || pdpte&3 != 3 || pde&0x83 != 0x83 {
			t.Fatalf("%#x: entries %#x %#x %#x not present/writable/2 MiB", va, pml4e, pdpte, pde)
		}
		if pa := pde&^0x1FFFFF | va&0x1FFFFF; pa != va {
			t.Errorf("%#x maps to %#x", va, pa)
		}
	}
	// Round up to 1 GiB; the largest map is one full PDPT.
	for _, c := range []struct{ bytes, size uint64 }{{1, 3 * 4096}, {1<<30 + 1, 4 * 4096}, {512 << 30, 514 * 4096}} {
		if pt, err := PageTables(0, c.bytes); err != nil || uint64(len(pt)) != c.size || PageTablesSize(c.bytes) != c.size {
			t.Errorf("map %#x: %#x bytes, %v; want %#x", c.bytes, len(pt), err, c.size)
		}
	}
	for _, c := range []struct{ base, bytes uint64 }{{0x9001, 1 << 30}, {0, 0}, {0, 512<<30 + 1}, {^uint64(0) &^ 0xFFF, 1 << 30}} {
		if _, err := PageTables(c.base, c.bytes); err == nil {
			t.Errorf("PageTables(%#x, %#x) accepted", c.base, c.bytes)
		}
	}
}

// TestEntryState: the 64-bit entry of boot.rst, and a VMCB filled from it
// passes the VMRUN consistency checks tamavisor knows.
func TestEntryState(t *testing.T) {
	l, err := Plan(256<<20, mustParse(t, validImage()), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	e := l.Entry()
	code := svm.Segment{Selector: 0x10, Attrib: 0xA9B, Limit: 0xFFFFFFFF}
	data := svm.Segment{Selector: 0x18, Attrib: 0xC93, Limit: 0xFFFFFFFF}
	want := EntryState{
		RIP: 0x1000200, RSI: 0x7000, RSP: 0x9000, RFLAGS: 0x2,
		CR0: 0x80000011, CR3: 0x9000, CR4: 0x20, EFER: 0x500,
		GDTR: svm.Segment{Base: 0x500, Limit: 31},
		CS:   code, DS: data, ES: data, SS: data, FS: data, GS: data,
	}
	if e != want {
		t.Errorf("entry %+v\nwant  %+v", e, want)
	}

	v := new(svm.VMCB)
	v.Control.InterceptMisc2 = svm.InterceptVMRUN
	v.Control.GuestASID = 1
	v.State.EFER = svm.EFERSVME | svm.EFERNXE
	v.State.RAX, v.State.CPL = 7, 3
	r := svm.Regs{RBX: 1, RSI: 2, R15: 3}
	e.Apply(&v.State, &r)
	if bad := svm.Check(v); len(bad) != 0 {
		t.Errorf("VMCB from EntryState refused: %q", bad)
	}
	s := &v.State
	if s.EFER != svm.EFERSVME|svm.EFERLME|svm.EFERLMA || s.RIP != 0x1000200 || s.CR3 != 0x9000 || s.RAX != 0 || s.CPL != 0 {
		t.Errorf("state EFER %#x RIP %#x CR3 %#x RAX %d CPL %d", s.EFER, s.RIP, s.CR3, s.RAX, s.CPL)
	}
	if s.CS != code || s.SS != data || s.GDTR.Base != 0x500 || s.RFLAGS&svm.RFLAGSIF != 0 {
		t.Errorf("CS %+v SS %+v GDTR %+v RFLAGS %#x", s.CS, s.SS, s.GDTR, s.RFLAGS)
	}
	if r != (svm.Regs{RSI: 0x7000}) {
		t.Errorf("registers %+v, want only RSI = boot_params", r)
	}
}
