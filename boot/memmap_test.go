package boot

import (
	"encoding/binary"
	"errors"
	"sort"
	"strings"
	"testing"
)

// e820 encodes entries as QEMU's etc/e820 file.
func e820(entries ...E820Entry) []byte {
	var b []byte
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e.Addr)
		b = binary.LittleEndian.AppendUint64(b, e.Len)
		b = binary.LittleEndian.AppendUint32(b, e.Type)
	}
	return b
}

const (
	miB = 1 << 20
	giB = 1 << 30
)

// Memory maps for the tests. qemu2G is the classic PC map for -m 2G as a
// firmware reports it (low RAM, EBDA, BIOS area, RAM from 1 MiB, KVM's
// identity-map pages, BIOS flash); the microvm ones are what QEMU 7.2's
// microvm machine publishes in etc/e820 under TCG.
var (
	qemu2G = []E820Entry{
		{0, 0x9fc00, E820Usable},
		{0x9fc00, 0x400, E820Reserved},
		{0xf0000, 0x10000, E820Reserved},
		{0x100000, 2*giB - 0x100000, E820Usable},
		{0xfeffc000, 0x4000, E820Reserved},
		{0xfffc0000, 0x40000, E820Reserved},
	}
	microvm = func(ram uint64) []E820Entry { return []E820Entry{{0, ram, E820Usable}} }
)

func TestPoolEnd(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []E820Entry
		want    uint64 // pool end; 0: refused
		errText string // refusal must name this
	}{
		{"qemu -m 2G", qemu2G, 2 * giB, ""},
		{"microvm -m 2G", microvm(2 * giB), 2 * giB, ""},
		{"qemu -m 1G", []E820Entry{
			{0, 0x9fc00, E820Usable},
			{0x100000, giB - 0x100000, E820Usable},
			{0xfeffc000, 0x4000, E820Reserved},
		}, giB, ""},
		{"pool start is the end of RAM", microvm(PoolStart), 0, "guest pool start"},
		{"pool start not RAM", []E820Entry{
			{0, PoolStart, E820Usable},
			{PoolStart + 16*miB, giB, E820Usable},
		}, 0, "guest pool start [0x34000000, 0x34001000) is not usable RAM in the memory map: 0x34000000 is not in usable RAM"},
		{"pool less than a page", microvm(PoolStart + poolPage - 1), 0, "guest pool start"},
		{"DMA region cut (-m 800M)", microvm(800 * miB), 0,
			"DMA region [0x30000000, 0x34000000) is not usable RAM in the memory map: usable RAM from 0x30000000 ends at 0x32000000"},
		{"runtime cut (-m 512M)", microvm(512 * miB), 0, "TamaGo runtime [0x10000000, 0x30000000)"},
		{"reserved inside runtime", append(microvm(2*giB), E820Entry{RuntimeStart + miB, poolPage, E820Reserved}), 0,
			"TamaGo runtime [0x10000000, 0x30000000) is not usable RAM in the memory map: usable RAM from 0x10000000 ends at 0x10100000"},
		{"ACPI data over the DMA start", append(microvm(2*giB), E820Entry{DMAStart - poolPage, 2 * poolPage, E820ACPI}), 0,
			"TamaGo runtime"},
		{"NVS at the DMA start", append(microvm(2*giB), E820Entry{DMAStart, poolPage, E820NVS}), 0,
			"DMA region [0x30000000, 0x34000000) is not usable RAM in the memory map: 0x30000000 is not in usable RAM"},
		{"unknown type counts as not RAM", append(microvm(2*giB), E820Entry{PoolStart, poolPage, 12}), 0, "guest pool start"},
		{"reserved hole inside the pool", append(microvm(2*giB), E820Entry{giB + 0x800, 0x1000, E820Reserved}), giB, ""},
		{"unusable RAM inside the pool", append(microvm(2*giB), E820Entry{1536 * miB, miB, E820Unusable}), 1536 * miB, ""},
		{"adjacent usable entries merge", []E820Entry{
			{0, 512 * miB, E820Usable},
			{512 * miB, 512 * miB, E820Usable},
			{giB, giB, E820Usable},
		}, 2 * giB, ""},
		{"overlapping usable entries merge", []E820Entry{
			{0, 900 * miB, E820Usable},
			{800 * miB, 700 * miB, E820Usable},
			{1400 * miB, 100 * miB, E820Usable},
			{1400 * miB, 50 * miB, E820Usable},
		}, 1500 * miB, ""},
		{"reserved overlapping the end of RAM", []E820Entry{
			{0, 2 * giB, E820Usable},
			{2*giB - miB, 2 * miB, E820Reserved},
		}, 2*giB - miB, ""},
		{"unsorted", []E820Entry{
			{giB, giB, E820Usable},
			{0xfeffc000, 0x4000, E820Reserved},
			{0x100000, giB - 0x100000, E820Usable},
			{0x9fc00, 0x400, E820Reserved},
			{0, 0x9fc00, E820Usable},
		}, 2 * giB, ""},
		{"gap after the pool start", []E820Entry{
			{0, giB, E820Usable},
			{giB + miB, giB, E820Usable},
		}, giB, ""},
		{"unaligned end of RAM", microvm(giB + 0x123), giB, ""},
		{"RAM above 4 GiB (microvm -m 4G) capped", []E820Entry{
			{0, 3 * giB, E820Usable},
			{4 * giB, giB, E820Usable},
		}, 3 * giB, ""},
		{"contiguous RAM across 4 GiB capped", microvm(8 * giB), PoolLimit, ""},
		{"empty entries ignored", append(microvm(2*giB), E820Entry{PoolStart, 0, E820Reserved}, E820Entry{2 * giB, 0, E820Usable}), 2 * giB, ""},
		{"no map", nil, 0, "TamaGo runtime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := ParseE820(e820(tc.entries...))
			if len(tc.entries) == 0 {
				if err == nil {
					t.Fatal("empty map parsed")
				}
			} else if err != nil {
				t.Fatal(err)
			}
			end, err := PoolEnd(entries)
			switch {
			case tc.want == 0 && err == nil:
				t.Fatalf("accepted, pool end %#x", end)
			case tc.want == 0 && (!errors.Is(err, ErrNotRAM) || !strings.Contains(err.Error(), tc.errText)):
				t.Fatalf("error %q, want one with %q", err, tc.errText)
			case tc.want != 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case end != tc.want:
				t.Fatalf("pool end %#x, want %#x", end, tc.want)
			}
		})
	}
}

func TestParseE820Garbage(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"empty", "empty", nil},
		{"partial entry", "whole number", make([]byte, E820EntrySize+7)},
		{"too many", "more than", make([]byte, (MaxE820Entries+1)*E820EntrySize)},
		{"wraps", "wraps", e820(E820Entry{0, 0x1000, E820Usable}, E820Entry{^uint64(0) - 0xfff, 0x1000, E820Usable})},
		{"wraps at once", "entry 0", e820(E820Entry{^uint64(0), ^uint64(0), E820Reserved})},
		{"text", "whole number", []byte("this is not a memory map")},
	} {
		if _, err := ParseE820(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.want)
		}
	}
	ok := e820(make([]E820Entry, MaxE820Entries)...)
	if es, err := ParseE820(ok); err != nil || len(es) != MaxE820Entries {
		t.Errorf("%d entries: %d, %v", MaxE820Entries, len(es), err)
	}
	top := E820Entry{^uint64(0) - 0xfff, 0xfff, E820Reserved} // ends at the last byte
	if es, err := ParseE820(e820(top)); err != nil || es[0] != top {
		t.Errorf("entry ending at 2^64-1: %v %v", es, err)
	}
}

func TestFormatE820(t *testing.T) {
	got := FormatE820(append(qemu2G[:2:2], E820Entry{0x1000, 0, E820Usable}, E820Entry{0xe0000, 0x1000, E820ACPI},
		E820Entry{0xe1000, 0x1000, E820NVS}, E820Entry{0xe2000, 0x1000, E820Unusable}, E820Entry{0xe3000, 0x1000, 7}))
	want := strings.Join([]string{
		"  [0x0000000000000000-0x000000000009fbff] usable",
		"  [0x000000000009fc00-0x000000000009ffff] reserved",
		"  [0x0000000000001000 empty] usable",
		"  [0x00000000000e0000-0x00000000000e0fff] ACPI data",
		"  [0x00000000000e1000-0x00000000000e1fff] ACPI NVS",
		"  [0x00000000000e2000-0x00000000000e2fff] unusable",
		"  [0x00000000000e3000-0x00000000000e3fff] type 7",
	}, "\n")
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// coveredByRAM reports whether every byte of [start, end) is in a usable
// entry and in no other, checked independently of usableEnd: on each
// piece between consecutive entry boundaries.
func coveredByRAM(entries []E820Entry, start, end uint64) bool {
	cuts := []uint64{start}
	for _, e := range entries {
		for _, c := range []uint64{e.Addr, e.end()} {
			if c > start && c < end {
				cuts = append(cuts, c)
			}
		}
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })
	for _, c := range cuts { // each piece [c, next cut) has one type; check its first byte
		ram := false
		for _, e := range entries {
			if e.Addr <= c && c < e.end() {
				if e.Type != E820Usable {
					return false
				}
				ram = true
			}
		}
		if !ram {
			return false
		}
	}
	return true
}

// FuzzParseE820: parsing and the pool computation never panic, and a pool
// PoolEnd accepts lies in usable RAM (as do the runtime and DMA region),
// below PoolLimit.
func FuzzParseE820(f *testing.F) {
	for _, m := range [][]E820Entry{
		qemu2G, microvm(2 * giB), microvm(giB), microvm(800 * miB), microvm(8 * giB),
		append(microvm(2*giB), E820Entry{giB, poolPage, E820Reserved}),
		{{4 * giB, giB, E820Usable}, {0, 3 * giB, E820Usable}},
	} {
		f.Add(e820(m...))
	}
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseE820(b)
		if err != nil {
			if entries != nil {
				t.Fatal("entries with an error")
			}
			return
		}
		if len(entries) == 0 || len(entries) > MaxE820Entries {
			t.Fatalf("%d entries accepted", len(entries))
		}
		_ = FormatE820(entries)
		end, err := PoolEnd(entries)
		if err != nil {
			if !errors.Is(err, ErrNotRAM) {
				t.Fatalf("error %v does not wrap ErrNotRAM", err)
			}
			return
		}
		switch {
		case end <= PoolStart || end > PoolLimit || end%poolPage != 0:
			t.Fatalf("pool end %#x", end)
		case !coveredByRAM(entries, PoolStart, end):
			t.Fatalf("pool [%#x, %#x) not all usable RAM in\n%s", PoolStart, end, FormatE820(entries))
		case !coveredByRAM(entries, RuntimeStart, RuntimeEnd) || !coveredByRAM(entries, DMAStart, DMAStart+DMASize):
			t.Fatalf("runtime or DMA not usable RAM in\n%s", FormatE820(entries))
		}
	})
}
