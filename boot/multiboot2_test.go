package boot

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestMB2Header(t *testing.T) {
	const entry = 0x100bb940
	h := MB2Header(entry)
	le := binary.LittleEndian
	if len(h)%MB2Align != 0 {
		t.Errorf("header of %d bytes, not a multiple of %d", len(h), MB2Align)
	}
	magic, arch, length, sum := le.Uint32(h), le.Uint32(h[4:]), le.Uint32(h[8:]), le.Uint32(h[12:])
	if magic != MB2HeaderMagic || arch != MB2ArchI386 {
		t.Errorf("magic %#x architecture %d, want %#x %d", magic, arch, MB2HeaderMagic, MB2ArchI386)
	}
	if int(length) != len(h) {
		t.Errorf("header_length %d, header is %d bytes", length, len(h))
	}
	if magic+arch+length+sum != 0 {
		t.Errorf("checksum %#x: the four fields sum to %#x, not 0", sum, magic+arch+length+sum)
	}
	// Walk the tags as GRUB does: each 8-byte aligned, up to the end tag.
	var got []uint16
	var entryAddr uint32
	var requests []uint32
	off := MB2HeaderLen
	for {
		if off+MB2TagHeaderLen > len(h) {
			t.Fatalf("tags run past the header at %d", off)
		}
		typ, flags, size := le.Uint16(h[off:]), le.Uint16(h[off+2:]), le.Uint32(h[off+4:])
		if flags != 0 {
			t.Errorf("tag %d flags %#x: tamavisor's tags are required", typ, flags)
		}
		got = append(got, typ)
		body := h[off+MB2TagHeaderLen : off+int(size)]
		switch typ {
		case MB2HeaderTagEntry:
			entryAddr = le.Uint32(body)
		case MB2HeaderTagInfoRequest:
			for i := 0; i+4 <= len(body); i += 4 {
				requests = append(requests, le.Uint32(body[i:]))
			}
		}
		if typ == MB2HeaderTagEnd {
			if size != MB2TagHeaderLen || off+int(size) != len(h) {
				t.Errorf("end tag of size %d at %d, header ends at %d", size, off, len(h))
			}
			break
		}
		off += (int(size) + MB2Align - 1) &^ (MB2Align - 1)
	}
	if want := []uint16{MB2HeaderTagInfoRequest, MB2HeaderTagEntry, MB2HeaderTagEnd}; !equal(got, want) {
		t.Errorf("tags %v, want %v (no address tag: GRUB loads the ELF by its program headers)", got, want)
	}
	if entryAddr != entry {
		t.Errorf("entry tag %#x, want %#x", entryAddr, entry)
	}
	if !equal(requests, []uint32{MB2TagMmap}) {
		t.Errorf("information request %v, want the memory map (%d)", requests, MB2TagMmap)
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// mb2 builds boot information from tags (type, body), closing with the
// end tag unless noEnd.
type mb2Tag struct {
	typ  uint32
	body []byte
}

func mb2Info(noEnd bool, tags ...mb2Tag) []byte {
	le := binary.LittleEndian
	b := make([]byte, MB2InfoHeaderLen)
	if !noEnd {
		tags = append(tags, mb2Tag{MB2TagEnd, nil})
	}
	for _, tg := range tags {
		b = le.AppendUint32(b, tg.typ)
		b = le.AppendUint32(b, uint32(MB2TagHeaderLen+len(tg.body)))
		b = append(b, tg.body...)
		for len(b)%MB2Align != 0 {
			b = append(b, 0)
		}
	}
	le.PutUint32(b, uint32(len(b)))
	return b
}

// mmapTag is a memory map tag body with entries of entrySize bytes.
func mmapTag(entrySize uint32, entries ...E820Entry) mb2Tag {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, entrySize)
	b = le.AppendUint32(b, 0) // entry_version
	for _, e := range entries {
		r := make([]byte, max(entrySize, mb2MmapEntryMin))
		le.PutUint64(r, e.Addr)
		le.PutUint64(r[8:], e.Len)
		le.PutUint32(r[16:], e.Type)
		b = append(b, r[:entrySize]...)
	}
	return mb2Tag{MB2TagMmap, b}
}

// ovmf2G is the map GRUB passed under QEMU q35 + OVMF with -m 2G (a part).
var ovmf2G = []E820Entry{
	{0, 0xa0000, E820Usable},
	{0x100000, 0x706000, E820Usable},
	{0x806000, 0x2000, E820NVS},
	{0x900000, 0x7e1a0000, E820Usable},
	{0x7eaa0000, 0x102000, E820Reserved},
	{0x7f76c000, 0x12000, E820ACPI},
	{0xb0000000, 0x10000000, E820Reserved},
}

func TestParseMultiboot2(t *testing.T) {
	rsdp1 := []byte("RSD PTR \x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c")
	rsdp2 := append([]byte("RSD PTR "), make([]byte, 28)...)
	info, err := ParseMultiboot2(mb2Info(false,
		mb2Tag{MB2TagCmdline, []byte("console=ttyS0\x00")},
		mb2Tag{MB2TagLoaderName, []byte("GRUB 2.06-13+deb12u2\x00")},
		mb2Tag{99, []byte("an unknown tag is skipped")},
		mmapTag(24, ovmf2G...),
		mb2Tag{MB2TagACPIOld, rsdp1},
		mb2Tag{MB2TagACPINew, rsdp2},
		mb2Tag{MB2TagACPIOld, rsdp1}, // the 2.0 RSDP stays preferred
	))
	if err != nil {
		t.Fatal(err)
	}
	if info.Loader != "GRUB 2.06-13+deb12u2" || info.Cmdline != "console=ttyS0" {
		t.Errorf("loader %q cmdline %q", info.Loader, info.Cmdline)
	}
	if !equal(info.Memory, ovmf2G) {
		t.Errorf("memory map\n%s\nwant\n%s", FormatE820(info.Memory), FormatE820(ovmf2G))
	}
	if info.RSDPTag != MB2TagACPINew || !bytes.Equal(info.RSDP, rsdp2) {
		t.Errorf("RSDP tag %d %q, want the ACPI 2.0 one", info.RSDPTag, info.RSDP)
	}
	if end, err := PoolEnd(info.Memory); err != nil || end != 0x7eaa0000 {
		t.Errorf("PoolEnd = %#x, %v; want the end of RAM below the reserved range, 0x7eaa0000", end, err)
	}

	// A larger entry_size (a later version of the entry) is stepped over.
	info, err = ParseMultiboot2(mb2Info(false, mmapTag(32, ovmf2G...), mb2Tag{MB2TagACPIOld, rsdp1}))
	if err != nil || !equal(info.Memory, ovmf2G) || info.RSDPTag != MB2TagACPIOld {
		t.Errorf("entry_size 32: %v, %v, RSDP tag %d", info, err, info.RSDPTag)
	}

	// Without a memory map the parse succeeds; the caller refuses.
	info, err = ParseMultiboot2(mb2Info(false))
	if err != nil || info.Memory != nil || info.RSDP != nil {
		t.Errorf("empty information: %+v, %v", info, err)
	}
}

func TestParseMultiboot2Refuses(t *testing.T) {
	good := mb2Info(false, mmapTag(24, ovmf2G...))
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		b    []byte
		errs string
	}{
		{"shorter than its header", []byte{1, 2, 3}, "less than its 8-byte header"},
		{"total_size beyond the buffer", func() []byte {
			b := bytes.Clone(good)
			le.PutUint32(b, uint32(len(b)+8))
			return b
		}(), "total_size"},
		{"total_size too small", func() []byte {
			b := bytes.Clone(good)
			le.PutUint32(b, 8)
			return b
		}(), "total_size 8"},
		{"no end tag", mb2Info(true, mb2Tag{MB2TagLoaderName, []byte("x\x00")}), "no end tag"},
		{"tag past the end", func() []byte {
			b := bytes.Clone(good)
			le.PutUint32(b[12:], uint32(len(b))) // the memory map tag's size
			return b
		}(), "size"},
		{"tag smaller than its header", func() []byte {
			b := bytes.Clone(good)
			le.PutUint32(b[12:], 4)
			return b
		}(), "size 4"},
		{"two memory maps", mb2Info(false, mmapTag(24, ovmf2G...), mmapTag(24, ovmf2G...)), "two memory map"},
		{"entry_size too small", mb2Info(false, mmapTag(16, ovmf2G...)), "entry_size 16"},
		{"entry_size unaligned", mb2Info(false, mmapTag(28, ovmf2G...)), "entry_size 28"},
		{"empty map", mb2Info(false, mmapTag(24)), "empty"},
		{"mmap tag without its header", mb2Info(false, mb2Tag{MB2TagMmap, []byte{24, 0, 0, 0}}), "less than its 16-byte header"},
		{"entry wraps", mb2Info(false, mmapTag(24, E820Entry{^uint64(0) - 10, 100, E820Usable})), "wraps"},
		{"too many entries", mb2Info(false, mmapTag(24, make([]E820Entry, MaxMB2MapEntries+1)...)), "more than the 1024 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMultiboot2(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.errs) {
				t.Errorf("error %v, want one containing %q", err, tc.errs)
			}
		})
	}
}

// area builds the entry stub's save area.
func area(magic, addr uint32, info []byte, total uint32) []byte {
	a := make([]byte, mb2AreaLen)
	le := binary.LittleEndian
	le.PutUint32(a[mb2AreaMagic:], magic)
	le.PutUint32(a[mb2AreaTotal:], total)
	le.PutUint32(a[mb2AreaAddr:], addr)
	copy(a[mb2AreaInfo:], info)
	return a
}

func TestMultiboot2FromArea(t *testing.T) {
	info := mb2Info(false, mb2Tag{MB2TagLoaderName, []byte("GRUB\x00")}, mmapTag(24, ovmf2G...))
	got, addr, err := multiboot2FromArea(area(Multiboot2BootMagic, 0x1a8000, info, uint32(len(info))))
	if err != nil || addr != 0x1a8000 || got.Loader != "GRUB" || !equal(got.Memory, ovmf2G) {
		t.Errorf("saved information: %+v at %#x, %v", got, addr, err)
	}
	// Never entered through multiboot2 (QEMU's PVH entry): the area is zero.
	if _, _, err := multiboot2FromArea(make([]byte, mb2AreaLen)); err != ErrNotMultiboot2 {
		t.Errorf("zero area: %v, want ErrNotMultiboot2", err)
	}
	// PVH's EAX (0x2badb002, the multiboot v1 value) is not multiboot2.
	if _, _, err := multiboot2FromArea(area(0x2badb002, 0x1000, info, uint32(len(info)))); err != ErrNotMultiboot2 {
		t.Errorf("multiboot v1 magic: %v, want ErrNotMultiboot2", err)
	}
	// Information larger than the copy is refused, naming both sizes.
	_, _, err = multiboot2FromArea(area(Multiboot2BootMagic, 0x1a8000, info, MB2InfoMax+1))
	if err == nil || !strings.Contains(err.Error(), "65537 bytes, more than the 65536 copied") {
		t.Errorf("oversized information: %v", err)
	}
}

// The GDT the stub builds must describe flat 32-bit segments (checked
// here on the constants the assembly uses).
func TestMB2GDT(t *testing.T) {
	desc := func(lo, hi uint32) (base, limit uint32, typ, flags uint8) {
		base = lo>>16 | (hi&0xff)<<16 | hi&0xff000000
		limit = lo&0xffff | hi&0xf0000
		return base, limit, uint8(hi >> 8), uint8(hi >> 20 & 0xf)
	}
	for _, d := range []struct {
		name   string
		lo, hi uint32
		typ    uint8
	}{{"code", mb2Code32Lo, mb2Code32Hi, 0x9b}, {"data", mb2Data32Lo, mb2Data32Hi, 0x93}} {
		base, limit, typ, flags := desc(d.lo, d.hi)
		if base != 0 || limit != 0xfffff || typ != d.typ || flags != 0xc {
			t.Errorf("%s descriptor: base %#x limit %#x type %#x flags %#x", d.name, base, limit, typ, flags)
		}
	}
	if mb2AreaGDT+mb2SelData+8 > mb2AreaGDTR || mb2AreaGDTR+6 > mb2AreaInfo || mb2GDTLimit+1 != mb2SelData+8 {
		t.Error("the area's GDT, GDTR and copy overlap, or the limit does not cover the data selector")
	}
}

func FuzzParseMultiboot2(f *testing.F) {
	f.Add(mb2Info(false, mb2Tag{MB2TagLoaderName, []byte("GRUB\x00")}, mmapTag(24, ovmf2G...),
		mb2Tag{MB2TagACPINew, []byte("RSD PTR ")}))
	f.Add(mb2Info(true, mmapTag(32, ovmf2G...)))
	f.Add([]byte{16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := ParseMultiboot2(b)
		if err != nil {
			return
		}
		if len(info.Memory) > MaxMB2MapEntries {
			t.Fatalf("%d map entries", len(info.Memory))
		}
		for _, e := range info.Memory {
			if e.end() < e.Addr {
				t.Fatalf("entry %+v wraps", e)
			}
		}
		if info.RSDP != nil && info.RSDPTag != MB2TagACPINew && info.RSDPTag != MB2TagACPIOld {
			t.Fatalf("RSDP from tag %d", info.RSDPTag)
		}
		PoolEnd(info.Memory) // must not panic on any accepted map
	})
}
