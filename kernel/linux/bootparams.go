package linux

import (
	"encoding/binary"
	"slices"
)

// struct boot_params, the zero page (zero-page.rst).
const (
	ZeroPageSize = 4096

	bpAcpiRsdpAddr    = 0x070 // acpi_rsdp_addr, 8
	bpExtRamdiskImage = 0x0C0 // ext_ramdisk_image, 4: bits 63:32
	bpExtRamdiskSize  = 0x0C4 // ext_ramdisk_size, 4
	bpExtCmdLinePtr   = 0x0C8 // ext_cmd_line_ptr, 4
	bpE820Entries     = 0x1E8 // e820_entries, 1
	bpHdr             = 0x1F1 // hdr: the setup header
	bpHdrEnd          = 0x290 // edd_mbr_sig_buffer follows the header
	bpE820Table       = 0x2D0 // e820_table, E820Max entries

	E820Max       = 128
	e820EntrySize = 20 // addr 8, size 8, type 4
)

// Address range types of the e820 table (ACPI 6.x, 15.1 "INT 15H E820H").
const (
	E820_RAM      = 1
	E820_RESERVED = 2
	E820_ACPI     = 3
	E820_NVS      = 4
	E820_UNUSABLE = 5
)

// E820Entry is one range of the guest's memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// DefaultMemoryMap is the map of a VM with ram bytes of RAM at GPA 0: RAM
// below the EBDA, the EBDA and BIOS area reserved (ACPI tables live there),
// RAM from 1 MiB, and the I/O APIC and local APIC pages reserved.
func DefaultMemoryMap(ram uint64) ([]E820Entry, error) {
	if ram <= HighMemStart || ram > MaxRAM {
		return nil, refuse("guest RAM %#x outside (1 MiB, %#x]", ram, uint64(MaxRAM))
	}
	return []E820Entry{
		{0, LowRAMEnd, E820_RAM},
		{LowRAMEnd, HighMemStart - LowRAMEnd, E820_RESERVED},
		{HighMemStart, ram - HighMemStart, E820_RAM},
		{IOAPICBase, apicSize, E820_RESERVED},
		{LAPICBase, apicSize, E820_RESERVED},
	}, nil
}

// BuildBootParams writes the zero page for img placed by l: the setup
// header from the image at 0x1F1 with the loader's fields filled in
// (boot.rst, "Details of Header Fields", types write and modify), the e820
// map (sorted by address) and, if rsdp is not 0, acpi_rsdp_addr. Every
// region of l must lie in one RAM range of the map.
func BuildBootParams(img *BzImage, l *Layout, memMap []E820Entry, rsdp uint64) ([]byte, error) {
	if len(img.Header) < hdrMinEnd-bpHdr || len(img.Header) > bpHdrEnd-bpHdr {
		return nil, refuse("setup header of %d bytes, want %d to %d", len(img.Header), hdrMinEnd-bpHdr, bpHdrEnd-bpHdr)
	}
	if len(memMap) > E820Max {
		return nil, refuse("memory map has %d entries, boot_params holds %d", len(memMap), E820Max)
	}
	m := slices.Clone(memMap)
	slices.SortFunc(m, func(a, b E820Entry) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	for i, e := range m {
		if e.Size == 0 || e.Addr+e.Size < e.Addr {
			return nil, refuse("memory map entry [%#x, +%#x) is empty or wraps", e.Addr, e.Size)
		}
		if i > 0 && m[i-1].Addr+m[i-1].Size > e.Addr {
			return nil, refuse("memory map entries at %#x and %#x overlap", m[i-1].Addr, e.Addr)
		}
	}
	for _, r := range l.Regions() {
		if !inRAM(m, r.Start, r.End) {
			return nil, refuse("%s [%#x, %#x) is not inside one RAM range of the memory map", r.Name, r.Start, r.End)
		}
	}

	le := binary.LittleEndian
	bp := make([]byte, ZeroPageSize)
	copy(bp[bpHdr:], img.Header)
	bp[offTypeOfLoader] = TypeOfLoader
	// No 16-bit setup runs, so no heap for it; the kernel is loaded high.
	bp[offLoadflags] = bp[offLoadflags]&^CAN_USE_HEAP | LOADED_HIGH
	le.PutUint16(bp[offHeapEndPtr:], 0)
	le.PutUint32(bp[offCmdLinePtr:], uint32(l.Cmdline))
	le.PutUint32(bp[bpExtCmdLinePtr:], uint32(l.Cmdline>>32))
	le.PutUint32(bp[offRamdiskImage:], uint32(l.Initrd))
	le.PutUint32(bp[bpExtRamdiskImage:], uint32(l.Initrd>>32))
	le.PutUint32(bp[offRamdiskSize:], uint32(l.InitrdSize))
	le.PutUint32(bp[bpExtRamdiskSize:], uint32(l.InitrdSize>>32))
	// A PC (hardware_subarch 0) with no setup_data list, whatever the
	// file held.
	le.PutUint32(bp[offHardwareSubarch:], 0)
	le.PutUint64(bp[offHardwareSubarchData:], 0)
	le.PutUint64(bp[offSetupData:], 0)
	le.PutUint64(bp[bpAcpiRsdpAddr:], rsdp)

	bp[bpE820Entries] = uint8(len(m))
	for i, e := range m {
		o := bpE820Table + i*e820EntrySize
		le.PutUint64(bp[o:], e.Addr)
		le.PutUint64(bp[o+8:], e.Size)
		le.PutUint32(bp[o+16:], e.Type)
	}
	return bp, nil
}

// inRAM reports whether [start, end) lies inside one RAM entry of m.
func inRAM(m []E820Entry, start, end uint64) bool {
	for _, e := range m {
		if e.Type == E820_RAM && e.Addr <= start && end <= e.Addr+e.Size && start <= end {
			return true
		}
	}
	return false
}
