package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// checkPieces: every region of l lies in RAM outside [0x9FC00, 1 MiB), no
// two overlap, every piece fits its region.
func checkPieces(t testing.TB, l *Layout, p []Piece) {
	t.Helper()
	regs := l.Regions()
	for i, r := range regs {
		if r.Start >= r.End || r.End > l.RAMSize {
			t.Fatalf("%s [%#x, %#x) empty or beyond RAM %#x", r.Name, r.Start, r.End, l.RAMSize)
		}
		if r.Start < 0x100000 && r.End > 0x9FC00 {
			t.Fatalf("%s [%#x, %#x) in the EBDA/BIOS area", r.Name, r.Start, r.End)
		}
		for _, o := range regs[:i] {
			if r.Start < o.End && o.Start < r.End {
				t.Fatalf("%s [%#x, %#x) overlaps %s [%#x, %#x)", r.Name, r.Start, r.End, o.Name, o.Start, o.End)
			}
		}
	}
	if l.Initrd%0x1000 != 0 {
		t.Fatalf("initrd %#x not page-aligned", l.Initrd)
	}
	for _, pc := range p {
		var r *Region
		for i := range regs {
			if regs[i].Name == pc.Name {
				r = &regs[i]
			}
		}
		if r == nil {
			t.Fatalf("piece %q has no region", pc.Name)
		}
		if pc.GPA != r.Start || uint64(len(pc.Data)) > r.End-r.Start {
			t.Fatalf("piece %s [%#x, +%#x) outside its region [%#x, %#x)", pc.Name, pc.GPA, len(pc.Data), r.Start, r.End)
		}
		if pc.Name == "command line" && string(pc.Data) != l.CommandLine+"\x00" {
			t.Fatalf("command line piece %q", pc.Data)
		}
	}
}

func TestPlan(t *testing.T) {
	img := mustParse(t, validImage())
	const ram = 64 << 20
	l, err := Plan(ram, img, 1<<20+5, "console=ttyS0")
	if err != nil {
		t.Fatal(err)
	}
	want := Layout{RAMSize: ram, GDT: 0x500, ZeroPage: 0x7000, StackTop: 0x9000, PageTables: 0x9000, Cmdline: 0x20000,
		MapBytes: 4 << 30, CommandLine: "console=ttyS0", Kernel: 0x1000000, KernelEnd: 0x1800000,
		Initrd: ram - 1<<20 - 4096, InitrdSize: 1<<20 + 5}
	if *l != want {
		t.Errorf("layout %+v\nwant   %+v", *l, want)
	}
	if e := l.Entry(); e.RIP != 0x1000200 || e.RSI != 0x7000 || e.CR3 != 0x9000 {
		t.Errorf("entry RIP %#x RSI %#x CR3 %#x", e.RIP, e.RSI, e.CR3)
	}
	// The fixed low structures keep clear of each other.
	if end := PageTablesAddr + PageTablesSize(IdentityMapBytes); end != 0xF000 || end > CmdlineAddr {
		t.Errorf("page tables end at %#x", end)
	}
	if CmdlineAddr+CmdlineMax > LowRAMEnd || GDTAddr+GDTSize > ZeroPageAddr || ZeroPageAddr+ZeroPageSize > StackTop-stackSize {
		t.Error("low structures overlap")
	}

	for _, c := range []struct {
		name            string
		mod             func(*hdr)
		ram, initrd     uint64
		kernel, initrdA uint64
	}{
		{"no initrd", nil, ram, 0, 0x1000000, 0},
		{"initrd exactly in the top page", nil, ram, 4096, 0x1000000, ram - 4096},
		{"initrd fills RAM above the kernel", nil, ram, ram - 0x1800000, 0x1000000, 0x1800000},
		{"initrd below the kernel", nil, 0x1800000 + 4096, 1 << 20, 0x1000000, 0x1000000 - 1<<20},
		{"unaligned pref_address aligned up", func(h *hdr) { h.pref = 0x1000001 }, ram, 0, 0x1200000, 0},
		{"pref_address 0 raised to 1 MiB, aligned", func(h *hdr) { h.pref = 0 }, ram, 0, 0x200000, 0},
		{"pref_address 0, 4 KiB alignment", func(h *hdr) { h.pref, h.align = 0, 4096 }, ram, 0, 0x100000, 0},
		{"not relocatable: pref_address as is", func(h *hdr) { h.reloc, h.pref = 0, 0x1001000 }, ram, 0, 0x1001000, 0},
		{"initrd_addr_max below RAM end", func(h *hdr) { h.xlf, h.initrdMax = 1, 0x2FFFFFF }, ram, 4096, 0x1000000, 0x2FFF000},
		{"initrd_addr_max pushes it under the kernel", func(h *hdr) { h.xlf, h.initrdMax = 1, 0x17FFFFF }, ram, 8192, 0x1000000, 0x1000000 - 8192},
		{"above-4G kernel ignores initrd_addr_max", func(h *hdr) { h.initrdMax = 0x2FFFFFF }, ram, 4096, 0x1000000, ram - 4096},
		{"payload longer than init_size", func(h *hdr) { h.initSize = 16 }, ram, 4096, 0x1000000, ram - 4096},
	} {
		h := defHdr()
		if c.mod != nil {
			c.mod(&h)
		}
		img := mustParse(t, h.bytes(testPayload))
		l, err := Plan(c.ram, img, c.initrd, "")
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if l.Kernel != c.kernel || l.Initrd != c.initrdA || l.InitrdSize != c.initrd {
			t.Errorf("%s: kernel %#x initrd %#x+%#x, want %#x, %#x", c.name, l.Kernel, l.Initrd, l.InitrdSize, c.kernel, c.initrdA)
		}
		if l.KernelEnd != l.Kernel+max(uint64(h.initSize), uint64(len(testPayload))) {
			t.Errorf("%s: kernel end %#x", c.name, l.KernelEnd)
		}
		checkPieces(t, l, nil)
	}
}

func TestPlanRefusals(t *testing.T) {
	img := func(mod func(*hdr)) *BzImage {
		h := defHdr()
		if mod != nil {
			mod(&h)
		}
		return mustParse(t, h.bytes(testPayload))
	}
	long := strings.Repeat("x", 2048)
	for _, c := range []struct {
		name    string
		img     *BzImage
		ram, rd uint64
		cmdline string
		want    string
	}{
		{"RAM unaligned", img(nil), 64<<20 + 1, 0, "", "guest RAM 0x4000001 must be a multiple of 4 KiB"},
		{"RAM 1 MiB", img(nil), 1 << 20, 0, "", "guest RAM 0x100000"},
		{"RAM 0", img(nil), 0, 0, "", "guest RAM 0x0"},
		{"RAM over the IOAPIC", img(nil), 0xFEC01000, 0, "", "(1 MiB, 0xfec00000]"},
		{"cmdline NUL", img(nil), 64 << 20, 0, "a\x00b", "command line contains a NUL byte"},
		{"cmdline over cmdline_size", img(nil), 64 << 20, 0, long, "command line is 2048 bytes, the kernel takes at most 2047 (cmdline_size)"},
		{"cmdline over the reserve", img(func(h *hdr) { h.cmdlineSize = 1 << 30 }), 64 << 20, 0, strings.Repeat("y", 0x10000), "at most 65535 fit at 0x20000"},
		{"cmdline_size 0", img(func(h *hdr) { h.cmdlineSize = 0 }), 64 << 20, 0, "a", "at most 0"},
		{"kernel beyond RAM", img(nil), 0x1000000 + 0x7FF000, 0, "", "kernel needs [0x1000000, 0x1000000+0x800000) (init_size), guest RAM ends at 0x17ff000"},
		{"pref_address beyond RAM", img(func(h *hdr) { h.pref = 1 << 40 }), 64 << 20, 0, "", "kernel needs [0x10000000000"},
		{"pref_address wraps when aligned", img(func(h *hdr) { h.pref = ^uint64(0) - 5 }), 64 << 20, 0, "", "overflows"},
		{"not relocatable below 1 MiB", img(func(h *hdr) { h.reloc, h.pref = 0, 0x10000 }), 64 << 20, 0, "", "pref_address 0x10000 is below 1 MiB"},
		{"init_size huge", img(func(h *hdr) { h.initSize = 0xFFFFFFFF }), 64 << 20, 0, "", "init_size"},
		{"initrd too big", img(nil), 64 << 20, 64 << 20, "", "initrd of 67108864 bytes fits neither"},
		{"initrd in no gap", img(nil), 0x1800000 + 4096, 0xF00000 + 1, "", "fits neither"},
		{"initrd_addr_max under 1 MiB", img(func(h *hdr) { h.xlf, h.initrdMax = 1, 0xFFFFF }), 64 << 20, 4096, "", "fits neither"},
		{"initrd_addr_max 0", img(func(h *hdr) { h.xlf, h.initrdMax = 1, 0 }), 64 << 20, 1, "", "under 0x1"},
	} {
		l, err := Plan(c.ram, c.img, c.rd, c.cmdline)
		var le *Error
		switch {
		case err == nil:
			t.Errorf("%s: planned %+v", c.name, l)
		case !errors.As(err, &le) || !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: error %q, want %q", c.name, err, c.want)
		case l != nil:
			t.Errorf("%s: layout with error", c.name)
		}
	}
}

func TestDefaultMemoryMap(t *testing.T) {
	m, err := DefaultMemoryMap(256 << 20)
	if err != nil {
		t.Fatal(err)
	}
	want := []E820Entry{
		{0, 0x9FC00, 1},
		{0x9FC00, 0x60400, 2},
		{0x100000, 255 << 20, 1},
		{0xFEC00000, 0x1000, 2},
		{0xFEE00000, 0x1000, 2},
	}
	if len(m) != len(want) {
		t.Fatalf("map %+v", m)
	}
	for i := range want {
		if m[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, m[i], want[i])
		}
	}
	for _, ram := range []uint64{0, 1 << 20, 0xFEC00000 + 4096, 1 << 40} {
		if _, err := DefaultMemoryMap(ram); err == nil {
			t.Errorf("RAM %#x accepted", ram)
		}
	}
	if _, err := DefaultMemoryMap(0xFEC00000); err != nil {
		t.Errorf("RAM up to the IOAPIC: %v", err)
	}
}

func TestBuildBootParams(t *testing.T) {
	h := defHdr()
	h.setupData = 0xDEAD000 // a file's setup_data must not reach the kernel
	file := h.bytes(testPayload)
	le := binary.LittleEndian
	le.PutUint32(file[0x23C:], 3)      // hardware_subarch
	le.PutUint16(file[0x224:], 0x1234) // heap_end_ptr
	file[0x211] |= 0x80                // CAN_USE_HEAP
	img := mustParse(t, file)
	const ram = 0x4000_0000
	l, err := Plan(ram, img, 0x12345, "console=ttyS0 quiet")
	if err != nil {
		t.Fatal(err)
	}
	mm, _ := DefaultMemoryMap(ram)
	// Out of order on purpose: the table comes out sorted.
	mm[0], mm[4] = mm[4], mm[0]
	bp, err := BuildBootParams(img, l, mm, 0xE0000)
	if err != nil {
		t.Fatal(err)
	}
	if len(bp) != 4096 {
		t.Fatalf("%d bytes", len(bp))
	}
	u8 := func(o int) uint64 { return uint64(bp[o]) }
	u16 := func(o int) uint64 { return uint64(le.Uint16(bp[o:])) }
	u32 := func(o int) uint64 { return uint64(le.Uint32(bp[o:])) }
	u64 := func(o int) uint64 { return le.Uint64(bp[o:]) }
	initrd := uint64(ram - 0x13000)
	for _, c := range []struct {
		name string
		got  uint64
		want uint64
	}{
		{"acpi_rsdp_addr 0x070", u64(0x070), 0xE0000},
		{"ext_ramdisk_image 0x0C0", u32(0x0C0), 0},
		{"ext_ramdisk_size 0x0C4", u32(0x0C4), 0},
		{"ext_cmd_line_ptr 0x0C8", u32(0x0C8), 0},
		{"e820_entries 0x1E8", u8(0x1E8), 5},
		{"sentinel 0x1EF", u8(0x1EF), 0},
		{"setup_sects 0x1F1", u8(0x1F1), 4},
		{"boot_flag 0x1FE", u16(0x1FE), 0xAA55},
		{"header 0x202", u32(0x202), 0x53726448}, // "HdrS"
		{"version 0x206", u16(0x206), 0x020F},
		{"type_of_loader 0x210", u8(0x210), 0xFF},
		{"loadflags 0x211", u8(0x211), 0x01},
		{"ramdisk_image 0x218", u32(0x218), initrd},
		{"ramdisk_size 0x21C", u32(0x21C), 0x12345},
		{"heap_end_ptr 0x224", u16(0x224), 0},
		{"cmd_line_ptr 0x228", u32(0x228), 0x20000},
		{"initrd_addr_max 0x22C", u32(0x22C), 0x7FFFFFFF},
		{"xloadflags 0x236", u16(0x236), 3},
		{"cmdline_size 0x238", u32(0x238), 2047},
		{"hardware_subarch 0x23C", u32(0x23C), 0},
		{"setup_data 0x250", u64(0x250), 0},
		{"pref_address 0x258", u64(0x258), 0x1000000},
		{"init_size 0x260", u32(0x260), 0x800000},
		{"after the header 0x26C", u32(0x26C), 0},
		{"e820[0].addr", u64(0x2D0), 0},
		{"e820[0].size", u64(0x2D8), 0x9FC00},
		{"e820[0].type", u32(0x2E0), 1},
		{"e820[1].type", u32(0x2E4 + 16), 2},
		{"e820[2].addr", u64(0x2D0 + 40), 0x100000},
		{"e820[2].size", u64(0x2D0 + 48), ram - 0x100000},
		{"e820[4].addr", u64(0x2D0 + 80), 0xFEE00000},
		{"e820[4].size", u64(0x2D0 + 88), 0x1000},
		{"e820[4].type", u32(0x2D0 + 96), 2},
		{"e820[5] empty", u64(0x2D0 + 100), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	// Outside the header and the fields above, the page is zero.
	zero := append(append([]byte{}, bp[:0x070]...), bp[0x078:0x0C0]...)
	zero = append(zero, bp[0x290:0x2D0]...)
	zero = append(zero, bp[0x2D0+5*20:]...)
	if !bytes.Equal(zero, make([]byte, len(zero))) {
		t.Error("stray bytes in boot_params")
	}
	if u64(0x070) != 0xE0000 {
		t.Error("acpi_rsdp_addr")
	}
	if bp2, _ := BuildBootParams(img, l, mm, 0); le.Uint64(bp2[0x070:]) != 0 {
		t.Error("acpi_rsdp_addr set without an RSDP")
	}

	// A layout above 4 GiB splits into ext_ fields.
	l2 := *l
	l2.Initrd, l2.Cmdline = 0x1_2345_6000, 0x2_0002_0000
	big := []E820Entry{{0, 0x9FC00, 1}, {0x100000, 0x3_0000_0000, 1}}
	bp, err = BuildBootParams(img, &l2, big, 0)
	if err != nil {
		t.Fatal(err)
	}
	if u32(0x218) != 0x2345_6000 || u32(0x0C0) != 1 || u32(0x228) != 0x20000 || u32(0x0C8) != 2 {
		t.Errorf("ext fields: ramdisk %#x/%#x cmdline %#x/%#x", u32(0x218), u32(0x0C0), u32(0x228), u32(0x0C8))
	}
}

func TestBuildBootParamsRefusals(t *testing.T) {
	img := mustParse(t, validImage())
	const ram = 64 << 20
	l, err := Plan(ram, img, 4096, "x")
	if err != nil {
		t.Fatal(err)
	}
	std, _ := DefaultMemoryMap(ram)
	many := make([]E820Entry, 129)
	for i := range many {
		many[i] = E820Entry{uint64(i) << 32, 4096, 2}
	}
	for _, c := range []struct {
		name string
		m    []E820Entry
		want string
	}{
		{"129 entries", many, "memory map has 129 entries, boot_params holds 128"},
		{"empty map", nil, "GDT [0x500, 0x520) is not inside one RAM range"},
		{"empty entry", append(std, E820Entry{0xFFFF0000, 0, 2}), "memory map entry [0xffff0000, +0x0) is empty"},
		{"wrapping entry", append(std, E820Entry{0xFFFFFFFF_FFFFF000, 0x2000, 2}), "wraps"},
		{"overlap", append(std, E820Entry{0x9F000, 0x2000, 2}), "memory map entries at 0x0 and 0x9f000 overlap"},
		{"RAM short of the initrd", []E820Entry{{0, 0x9FC00, 1}, {0x100000, ram - 0x200000, 1}}, "initrd [0x3fff000, 0x4000000) is not inside"},
		{"kernel in reserved", []E820Entry{{0, 0x9FC00, 1}, {0x100000, 0x1000000, 1}, {0x1100000, 0x100000, 2}, {0x1200000, ram - 0x1200000, 1}}, "kernel [0x1000000, 0x1800000)"},
		{"stack not RAM", []E820Entry{{0, 0x8000, 1}, {0x8000, 0x1000, 2}, {0x9000, 0x96C00, 1}, {0x100000, ram - 0x100000, 1}}, "boot stack [0x8000, 0x9000)"},
		{"cmdline not RAM", []E820Entry{{0, 0x10000, 1}, {0x100000, ram - 0x100000, 1}}, "command line [0x20000, 0x20002)"},
	} {
		bp, err := BuildBootParams(img, l, c.m, 0)
		if err == nil || !strings.Contains(err.Error(), c.want) || bp != nil {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	bad := *img
	bad.Header = bad.Header[:0x20]
	if _, err := BuildBootParams(&bad, l, std, 0); err == nil || !strings.Contains(err.Error(), "setup header of 32 bytes") {
		t.Errorf("short header: %v", err)
	}
}

func TestPieces(t *testing.T) {
	img := mustParse(t, validImage())
	const ram = 128 << 20
	initrd := bytes.Repeat([]byte{0xAB}, 10000)
	l, err := Plan(ram, img, uint64(len(initrd)), "root=/dev/ram0 console=ttyS0")
	if err != nil {
		t.Fatal(err)
	}
	mm, _ := DefaultMemoryMap(ram)
	bp, err := BuildBootParams(img, l, mm, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Pieces(img, initrd, bp)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 6 {
		t.Fatalf("%d pieces", len(p))
	}
	checkPieces(t, l, p)
	got := map[string]Piece{}
	for _, pc := range p {
		got[pc.Name] = pc
	}
	if pc := got["kernel"]; pc.GPA != 0x1000000 || !bytes.Equal(pc.Data, testPayload) {
		t.Errorf("kernel piece at %#x", pc.GPA)
	}
	if pc := got["initrd"]; pc.GPA != ram-3*4096 || !bytes.Equal(pc.Data, initrd) {
		t.Errorf("initrd piece at %#x", pc.GPA)
	}
	if pc := got["boot_params"]; pc.GPA != 0x7000 || !bytes.Equal(pc.Data, bp) {
		t.Errorf("boot_params piece at %#x", pc.GPA)
	}
	if pc := got["page tables"]; pc.GPA != 0x9000 || len(pc.Data) != 0x6000 {
		t.Errorf("page tables piece at %#x, %#x bytes", pc.GPA, len(pc.Data))
	}
	if _, err := l.Pieces(img, initrd[1:], bp); err == nil {
		t.Error("initrd of another length accepted")
	}
	if _, err := l.Pieces(img, initrd, bp[1:]); err == nil {
		t.Error("short boot_params accepted")
	}
}
