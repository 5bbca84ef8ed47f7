package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
)

// The firmware's memory map: QEMU hands it to the firmware as the fw_cfg
// file etc/e820 (QEMU hw/i386/fw_cfg.c; struct e820_entry in
// hw/i386/e820_memory_layout.h), an array of packed little-endian entries
// {u64 address; u64 length; u32 type}, the layout of the BIOS INT 15h
// E820h interface.
const (
	E820EntrySize  = 20  // bytes per entry: address 8, length 8, type 4
	MaxE820Entries = 128 // as Linux's E820_MAX_ENTRIES_ZEROPAGE; QEMU makes a handful
	e820LenOff     = 8
	e820TypeOff    = 16
)

// Address range types (ACPI specification, "System Address Map
// Interfaces", table "Address Range Types"; the e820 convention).
const (
	E820Usable   = 1 // AddressRangeMemory: RAM the OS may use
	E820Reserved = 2 // AddressRangeReserved: in use or reserved by the system
	E820ACPI     = 3 // AddressRangeACPI: ACPI tables, reclaimable after reading them
	E820NVS      = 4 // AddressRangeNVS: ACPI non-volatile storage
	E820Unusable = 5 // AddressRangeUnusable: RAM with detected errors
)

// PoolLimit is where the guest pool ends at the latest: 3 GiB. The host
// reaches the pool through TamaGo's identity map (tamago amd64/init.s: 0-3
// GiB cacheable, 3-4 GiB uncacheable for MMIO, then 4-6 GiB uncacheable),
// and 3-4 GiB holds the local APIC and I/O APIC pages whatever a memory
// map says; RAM above is left unused.
const PoolLimit = 3 << 30

// poolPage is the pool's granularity (the 4 KiB page of the nested page
// tables): the pool's end is rounded down to it, and the pool must hold one.
const poolPage = 4096

// E820Entry is one range of the memory map: [Addr, Addr+Len) of Type.
type E820Entry struct {
	Addr, Len uint64
	Type      uint32
}

// end is the first address after the entry, saturated at 2^64-1 (entries
// from ParseE820 never wrap).
func (e E820Entry) end() uint64 {
	s, carry := bits.Add64(e.Addr, e.Len, 0)
	if carry != 0 {
		return ^uint64(0)
	}
	return s
}

// ErrNotRAM is wrapped by PoolEnd's errors: a range tamavisor needs is not
// usable RAM in the memory map.
var ErrNotRAM = errors.New("not usable RAM")

// ParseE820 decodes QEMU's etc/e820 file.
func ParseE820(b []byte) ([]E820Entry, error) {
	switch {
	case len(b)%E820EntrySize != 0:
		return nil, fmt.Errorf("e820: %d bytes is not a whole number of %d-byte entries", len(b), E820EntrySize)
	case len(b) == 0:
		return nil, errors.New("e820: the memory map is empty")
	case len(b)/E820EntrySize > MaxE820Entries:
		return nil, fmt.Errorf("e820: %d entries, more than the %d allowed", len(b)/E820EntrySize, MaxE820Entries)
	}
	entries := make([]E820Entry, 0, len(b)/E820EntrySize)
	for i := 0; i < len(b); i += E820EntrySize {
		r := b[i : i+E820EntrySize]
		e := E820Entry{
			Addr: binary.LittleEndian.Uint64(r),
			Len:  binary.LittleEndian.Uint64(r[e820LenOff:]),
			Type: binary.LittleEndian.Uint32(r[e820TypeOff:]),
		}
		if _, carry := bits.Add64(e.Addr, e.Len, 0); carry != 0 {
			return nil, fmt.Errorf("e820: entry %d (address %#x, length %#x) wraps past the end of the address space",
				len(entries), e.Addr, e.Len)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// usableEnd returns the end of the usable RAM that starts at addr: the
// union of the usable entries contiguous from addr (adjacent or
// overlapping), cut at the first non-usable entry overlapping it, since a
// reserved range inside usable RAM wins. It returns addr when addr itself
// is not usable RAM. The map need not be sorted.
func usableEnd(entries []E820Entry, addr uint64) uint64 {
	end := addr
	for grown := true; grown; { // each pass grows end or stops: at most len(entries) passes
		grown = false
		for _, e := range entries {
			if e.Type == E820Usable && e.Addr <= end && end < e.end() {
				end, grown = e.end(), true
			}
		}
	}
	for _, e := range entries {
		if e.Type != E820Usable && e.Len != 0 && e.Addr < end && e.end() > addr {
			end = max(addr, e.Addr)
		}
	}
	return end
}

// required is a physical range tamavisor uses before the pool exists.
type required struct {
	name       string
	start, end uint64
}

// PoolEnd checks the memory map against the memory layout and returns the
// end of the guest pool, which starts at PoolStart: the end of the usable
// RAM containing PoolStart, at most PoolLimit, rounded down to a page. It
// refuses, naming the first range at fault, a map in which the TamaGo
// runtime, the DMA region or the pool's first page is not usable RAM.
func PoolEnd(entries []E820Entry) (uint64, error) {
	for _, r := range []required{
		{"TamaGo runtime", RuntimeStart, RuntimeEnd},
		{"DMA region", DMAStart, DMAStart + DMASize},
		{"guest pool start", PoolStart, PoolStart + poolPage},
	} {
		end := usableEnd(entries, r.start)
		if end >= r.end {
			continue
		}
		why := fmt.Sprintf("%#x is not in usable RAM", r.start)
		if end > r.start {
			why = fmt.Sprintf("usable RAM from %#x ends at %#x", r.start, end)
		}
		return 0, fmt.Errorf("%s [%#x, %#x) is %w in the memory map: %s", r.name, r.start, r.end, ErrNotRAM, why)
	}
	return min(usableEnd(entries, PoolStart), PoolLimit) &^ (poolPage - 1), nil
}

// e820TypeName names an address range type.
func e820TypeName(t uint32) string {
	switch t {
	case E820Usable:
		return "usable"
	case E820Reserved:
		return "reserved"
	case E820ACPI:
		return "ACPI data"
	case E820NVS:
		return "ACPI NVS"
	case E820Unusable:
		return "unusable"
	}
	return fmt.Sprintf("type %d", t)
}

// FormatE820 prints the memory map one entry a line, in the map's order,
// as [first-last address] type.
func FormatE820(entries []E820Entry) string {
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteByte('\n')
		}
		if e.Len == 0 {
			fmt.Fprintf(&b, "  [0x%016x empty] %s", e.Addr, e820TypeName(e.Type))
			continue
		}
		fmt.Fprintf(&b, "  [0x%016x-0x%016x] %s", e.Addr, e.end()-1, e820TypeName(e.Type))
	}
	return b.String()
}
