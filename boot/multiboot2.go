package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Multiboot2 (The Multiboot2 Specification, version 2.0): how GRUB hands
// tamavisor.elf the machine on UEFI boards. The OS image carries a header
// in its first 32 KiB (written after the link by internal/mb2header); the
// boot loader enters the OS in 32-bit protected mode, paging off, with
// EAX = Multiboot2BootMagic and EBX = the physical address of the boot
// information, a list of tags (section 3.6).
const (
	// Header (section 3.1).
	MB2HeaderMagic = 0xe85250d6
	MB2ArchI386    = 0     // architecture: 32-bit protected mode of i386
	MB2Search      = 32768 // the header lies within the image's first bytes
	MB2Align       = 8     // header and tags are 8-byte aligned
	MB2HeaderLen   = 16    // magic, architecture, header_length, checksum

	// Header tags (section 3.1.3 onwards): type and flags are u16, size u32.
	MB2HeaderTagEnd         = 0
	MB2HeaderTagInfoRequest = 1 // u32 tag types the OS needs
	MB2HeaderTagEntry       = 3 // u32 physical entry address (i386 state)
	MB2TagHeaderLen         = 8 // type, flags, size

	// Multiboot2BootMagic is EAX at the OS entry (section 3.2).
	Multiboot2BootMagic = 0x36d76289

	// Boot information (section 3.6): u32 total_size, u32 reserved, then
	// tags of u32 type, u32 size (header included), 8-byte aligned.
	MB2InfoHeaderLen = 8
	MB2TagEnd        = 0
	MB2TagCmdline    = 1  // zero-terminated UTF-8
	MB2TagLoaderName = 2  // zero-terminated UTF-8
	MB2TagMmap       = 6  // u32 entry_size, u32 entry_version, entries
	MB2TagACPIOld    = 14 // copy of the ACPI 1.0 RSDP
	MB2TagACPINew    = 15 // copy of the ACPI 2.0+ RSDP (XSDP)

	// Memory map entries (section 3.6.8): u64 base_addr, u64 length, u32
	// type, u32 reserved. Types are those of e820 (E820Usable...).
	mb2MmapHeaderLen = 16 // type, size, entry_size, entry_version
	mb2MmapEntryMin  = 24
	mb2MmapLenOff    = 8
	mb2MmapTypeOff   = 16

	// MaxMB2MapEntries bounds the memory map: UEFI maps are longer than
	// BIOS ones (GRUB merges neighbours of one type).
	MaxMB2MapEntries = 1024
)

// MB2Header returns a Multiboot2 header asking for the memory map and
// naming entry as the 32-bit entry point: the ELF is loaded by its
// program headers (no address tag), then GRUB jumps to entry.
func MB2Header(entry uint32) []byte {
	var tags []byte
	tag := func(typ uint16, body []byte) {
		size := MB2TagHeaderLen + len(body)
		tags = binary.LittleEndian.AppendUint16(tags, typ)
		tags = binary.LittleEndian.AppendUint16(tags, 0) // flags: required
		tags = binary.LittleEndian.AppendUint32(tags, uint32(size))
		tags = append(tags, body...)
		for len(tags)%MB2Align != 0 {
			tags = append(tags, 0)
		}
	}
	tag(MB2HeaderTagInfoRequest, binary.LittleEndian.AppendUint32(nil, MB2TagMmap))
	tag(MB2HeaderTagEntry, binary.LittleEndian.AppendUint32(nil, entry))
	tag(MB2HeaderTagEnd, nil)

	length := uint32(MB2HeaderLen + len(tags))
	h := binary.LittleEndian.AppendUint32(nil, MB2HeaderMagic)
	h = binary.LittleEndian.AppendUint32(h, MB2ArchI386)
	h = binary.LittleEndian.AppendUint32(h, length)
	h = binary.LittleEndian.AppendUint32(h, -(MB2HeaderMagic + MB2ArchI386 + length))
	return append(h, tags...)
}

// Multiboot2Info is what tamavisor takes from the boot information.
type Multiboot2Info struct {
	Loader  string      // boot loader name (tag 2), "" if absent
	Cmdline string      // command line (tag 1)
	Memory  []E820Entry // memory map (tag 6), nil if absent
	RSDP    []byte      // ACPI RSDP copy: tag 15 if present, else tag 14
	RSDPTag uint32      // MB2TagACPINew or MB2TagACPIOld, 0 without RSDP
}

// ParseMultiboot2 decodes the boot information b (total_size bytes from
// its start). Unknown tags are skipped; a tag running past the end, a
// missing end tag or a malformed memory map is refused.
func ParseMultiboot2(b []byte) (*Multiboot2Info, error) {
	if len(b) < MB2InfoHeaderLen {
		return nil, fmt.Errorf("multiboot2: %d bytes of boot information, less than its %d-byte header", len(b), MB2InfoHeaderLen)
	}
	total := binary.LittleEndian.Uint32(b)
	if total < MB2InfoHeaderLen+MB2TagHeaderLen || uint64(total) > uint64(len(b)) {
		return nil, fmt.Errorf("multiboot2: total_size %d outside [%d, %d]", total, MB2InfoHeaderLen+MB2TagHeaderLen, len(b))
	}
	b = b[:total]
	info := &Multiboot2Info{}
	for off := MB2InfoHeaderLen; ; {
		if len(b)-off < MB2TagHeaderLen {
			return nil, fmt.Errorf("multiboot2: no end tag within total_size %d", total)
		}
		typ := binary.LittleEndian.Uint32(b[off:])
		size := binary.LittleEndian.Uint32(b[off+4:])
		if size < MB2TagHeaderLen || uint64(size) > uint64(len(b)-off) {
			return nil, fmt.Errorf("multiboot2: tag type %d at offset %d: size %d outside [%d, %d]",
				typ, off, size, MB2TagHeaderLen, len(b)-off)
		}
		body := b[off+MB2TagHeaderLen : off+int(size)]
		switch typ {
		case MB2TagEnd:
			return info, nil
		case MB2TagCmdline:
			info.Cmdline = cString(body)
		case MB2TagLoaderName:
			info.Loader = cString(body)
		case MB2TagMmap:
			if info.Memory != nil {
				return nil, fmt.Errorf("multiboot2: two memory map tags (second at offset %d)", off)
			}
			m, err := parseMB2Mmap(b[off : off+int(size)])
			if err != nil {
				return nil, err
			}
			info.Memory = m
		case MB2TagACPINew:
			info.RSDP, info.RSDPTag = body, MB2TagACPINew
		case MB2TagACPIOld:
			if info.RSDPTag != MB2TagACPINew {
				info.RSDP, info.RSDPTag = body, MB2TagACPIOld
			}
		}
		// The next tag starts at the next 8-byte boundary; size <= len(b)-off
		// keeps this within the slice or one alignment past it.
		off += (int(size) + MB2Align - 1) &^ (MB2Align - 1)
		if off > len(b) {
			return nil, fmt.Errorf("multiboot2: no end tag within total_size %d", total)
		}
	}
}

// parseMB2Mmap decodes a memory map tag (header included).
func parseMB2Mmap(t []byte) ([]E820Entry, error) {
	if len(t) < mb2MmapHeaderLen {
		return nil, fmt.Errorf("multiboot2: memory map tag of %d bytes, less than its %d-byte header", len(t), mb2MmapHeaderLen)
	}
	esize := binary.LittleEndian.Uint32(t[8:])
	if esize < mb2MmapEntryMin || esize%MB2Align != 0 {
		return nil, fmt.Errorf("multiboot2: memory map entry_size %d (want a multiple of %d, at least %d)", esize, MB2Align, mb2MmapEntryMin)
	}
	body := t[mb2MmapHeaderLen:]
	n := uint64(len(body)) / uint64(esize)
	switch {
	case n == 0:
		return nil, errors.New("multiboot2: the memory map is empty")
	case n > MaxMB2MapEntries:
		return nil, fmt.Errorf("multiboot2: %d memory map entries, more than the %d allowed", n, MaxMB2MapEntries)
	}
	entries := make([]E820Entry, 0, n)
	for i := uint64(0); i < n; i++ {
		r := body[i*uint64(esize):]
		e := E820Entry{
			Addr: binary.LittleEndian.Uint64(r),
			Len:  binary.LittleEndian.Uint64(r[mb2MmapLenOff:]),
			Type: binary.LittleEndian.Uint32(r[mb2MmapTypeOff:]),
		}
		if _, carry := bits.Add64(e.Addr, e.Len, 0); carry != 0 {
			return nil, fmt.Errorf("multiboot2: memory map entry %d (address %#x, length %#x) wraps past the end of the address space",
				i, e.Addr, e.Len)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// cString returns b up to its first zero byte.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// The multiboot2 entry stub (multiboot2_amd64.s) saves what GRUB passed
// into an area of the image's BSS before TamaGo's runtime starts (the
// boot information lies wherever GRUB put it, possibly in memory the
// runtime reuses), and builds there the GDT it switches to. Its layout,
// little-endian, then the copy:
const (
	mb2AreaMagic = 0  // u32 EAX at entry: Multiboot2BootMagic, 0 when not entered through multiboot2
	mb2AreaTotal = 4  // u32 the boot information's total_size
	mb2AreaAddr  = 8  // u32 EBX at entry: where GRUB put it
	mb2AreaGDT   = 16 // 3 descriptors: null, code (mb2SelCode), data (mb2SelData)
	mb2AreaGDTR  = 40 // u16 limit, u32 base: the operand of LGDT
	mb2AreaInfo  = 48 // the copy: min(total_size, MB2InfoMax) bytes
	// MB2InfoMax bounds the copy: GRUB's information on UEFI (memory
	// maps, ELF section headers, ACPI and SMBIOS copies) is a few KiB.
	MB2InfoMax = 64 << 10
	mb2AreaLen = mb2AreaInfo + MB2InfoMax

	// The stub's GDT gives the selectors TamaGo's own GDT (amd64/init.s)
	// uses: GRUB leaves its own in the data segment registers (0x18),
	// which TamaGo never reloads and which IRETQ then checks against
	// TamaGo's 3-entry GDT (#GP). Descriptors (AMD APM vol. 2, 4.7):
	// base 0, limit 4 GiB (G), 32-bit (D/B), present, DPL 0, accessed.
	mb2SelCode  = 0x08
	mb2SelData  = 0x10
	mb2GDTLimit = 3*8 - 1
	mb2Code32Lo = 0x0000ffff // limit 15:0, base 15:0
	mb2Code32Hi = 0x00cf9b00 // G, D, limit 19:16, P, S, type execute/read accessed
	mb2Data32Lo = 0x0000ffff
	mb2Data32Hi = 0x00cf9300 // G, B, limit 19:16, P, S, type read/write accessed
)

// ErrNotMultiboot2 says the kernel was not entered through multiboot2.
var ErrNotMultiboot2 = errors.New("not booted through multiboot2")

// multiboot2FromArea decodes the entry stub's area.
func multiboot2FromArea(a []byte) (*Multiboot2Info, uint32, error) {
	if len(a) < mb2AreaInfo || binary.LittleEndian.Uint32(a[mb2AreaMagic:]) != Multiboot2BootMagic {
		return nil, 0, ErrNotMultiboot2
	}
	addr := binary.LittleEndian.Uint32(a[mb2AreaAddr:])
	total := binary.LittleEndian.Uint32(a[mb2AreaTotal:])
	if uint64(total) > uint64(len(a)-mb2AreaInfo) {
		return nil, addr, fmt.Errorf("multiboot2: boot information at %#x is %d bytes, more than the %d copied", addr, total, len(a)-mb2AreaInfo)
	}
	info, err := ParseMultiboot2(a[mb2AreaInfo:])
	return info, addr, err
}
