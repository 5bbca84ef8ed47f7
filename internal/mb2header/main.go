// Command mb2header is the post-link step of tamavisor.elf: it writes a
// Multiboot2 header (boot.MB2Header) into the zero padding the Go linker
// leaves between the ELF headers and the first section, so that GRUB's
// multiboot2 command loads the same ELF that QEMU boots with -kernel
// (PVH). A Go build cannot place the header itself: the runtime's text
// comes first.
//
//	go run ./internal/mb2header -entry SYMBOL -o OUT IN
//
// The header must lie in the file's first boot.MB2Search bytes, 8-byte
// aligned, over bytes that are zero and belong to no ELF header, program
// header, section header table, section or note; the entry symbol must
// be in an executable loaded segment below 4 GiB. Otherwise the step
// refuses, saying why, and writes nothing. OUT is written whole (through
// a temporary file and a rename).
package main

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"tamavisor/boot"
)

// DefaultEntry is the ABI0 symbol of tamavisor's multiboot2 entry stub
// (boot/multiboot2_amd64.s).
const DefaultEntry = "tamavisor/boot.multiboot2Entry.abi0"

// maxEntryAddr is the highest entry address a 32-bit entry can reach.
const maxEntryAddr = 1<<32 - 1

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mb2header", flag.ContinueOnError)
	fs.SetOutput(stderr)
	entry := fs.String("entry", DefaultEntry, "symbol of the 32-bit multiboot2 entry")
	out := fs.String("o", "", "output file (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *out == "" {
		fmt.Fprintln(stderr, "usage: mb2header [-entry SYMBOL] -o OUT IN")
		return 2
	}
	in := fs.Arg(0)
	b, err := os.ReadFile(in)
	if err != nil {
		fmt.Fprintf(stderr, "mb2header: %v\n", err)
		return 1
	}
	off, addr, err := Patch(b, *entry)
	if err != nil {
		fmt.Fprintf(stderr, "mb2header: %s: %v\n", in, err)
		return 1
	}
	if err := writeFile(*out, b); err != nil {
		fmt.Fprintf(stderr, "mb2header: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "mb2header: %s: Multiboot2 header at file offset %#x, entry %s at %#x\n", *out, off, *entry, addr)
	return 0
}

// writeFile writes b to path through a temporary file in the same
// directory, so that a failed write leaves no half-patched kernel.
func writeFile(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".mb2header-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o755); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// span is a byte range [start, end) of the file.
type span struct {
	what       string
	start, end uint64
}

// Patch writes the Multiboot2 header into the ELF image b (in place) and
// returns its file offset and the entry's physical address.
func Patch(b []byte, entrySym string) (off int, entry uint32, err error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return 0, 0, fmt.Errorf("not an ELF file: %w", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return 0, 0, fmt.Errorf("%v %v ELF, want a 64-bit x86-64 one", f.Class, f.Machine)
	}
	if o, found := findHeader(b); found {
		return 0, 0, fmt.Errorf("already has a Multiboot2 header at file offset %#x (patch the linker's output, once)", o)
	}
	entry, err = entryAddr(f, entrySym)
	if err != nil {
		return 0, 0, err
	}
	hdr := boot.MB2Header(entry)
	off, err = place(b, used(f), len(hdr))
	if err != nil {
		return 0, 0, err
	}
	copy(b[off:], hdr)
	return off, entry, nil
}

// entryAddr returns the physical address of symbol name, which must be in
// an executable PT_LOAD segment below 4 GiB.
func entryAddr(f *elf.File, name string) (uint32, error) {
	syms, err := f.Symbols()
	if err != nil {
		return 0, fmt.Errorf("no symbol table (%v): the post-link step needs an unstripped link (no -s)", err)
	}
	var sym *elf.Symbol
	for i := range syms {
		if syms[i].Name == name {
			sym = &syms[i]
			break
		}
	}
	if sym == nil {
		return 0, fmt.Errorf("no symbol %q: the multiboot2 entry stub is not linked in", name)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 || sym.Value < p.Vaddr || sym.Value >= p.Vaddr+p.Filesz {
			continue
		}
		phys := sym.Value - p.Vaddr + p.Paddr
		if phys > maxEntryAddr {
			return 0, fmt.Errorf("entry %s at physical %#x: above 4 GiB, out of a 32-bit entry's reach", name, phys)
		}
		return uint32(phys), nil
	}
	return 0, fmt.Errorf("entry %s at %#x is in no executable loaded segment", name, sym.Value)
}

// used lists the file ranges the header must not overlap (besides the
// header tables, which tables adds): the ELF header, every section and
// every segment but loadable ones. A PT_LOAD covering the file's start
// spans the padding too; the sections inside it are listed one by one.
func used(f *elf.File) []span {
	const ehdrSize = 0x40 // ELF64 header
	var s []span
	s = append(s, span{"ELF header", 0, ehdrSize})
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		s = append(s, span{fmt.Sprintf("segment %v", p.Type), p.Off, p.Off + p.Filesz})
	}
	for _, sec := range f.Sections {
		if sec.Type == elf.SHT_NOBITS || sec.Type == elf.SHT_NULL || sec.Size == 0 {
			continue
		}
		s = append(s, span{"section " + sec.Name, sec.Offset, sec.Offset + sec.FileSize})
	}
	return s
}

// tables returns the program and section header tables' file ranges,
// read from the ELF64 header in b.
func tables(b []byte) []span {
	const (
		phoffOff     = 0x20
		shoffOff     = 0x28
		phentsizeOff = 0x36
		phnumOff     = 0x38
		shentsizeOff = 0x3a
		shnumOff     = 0x3c
		ehdrSize     = 0x40
	)
	if len(b) < ehdrSize {
		return nil
	}
	le := binary.LittleEndian
	ph, sh := le.Uint64(b[phoffOff:]), le.Uint64(b[shoffOff:])
	phLen := uint64(le.Uint16(b[phentsizeOff:])) * uint64(le.Uint16(b[phnumOff:]))
	shLen := uint64(le.Uint16(b[shentsizeOff:])) * uint64(le.Uint16(b[shnumOff:]))
	return []span{{"program header table", ph, ph + phLen}, {"section header table", sh, sh + shLen}}
}

// place returns the first 8-byte aligned offset in the first MB2Search
// bytes of b where n bytes are zero and overlap none of the used spans.
func place(b []byte, usedSpans []span, n int) (int, error) {
	usedSpans = append(usedSpans, tables(b)...)
	limit := min(len(b), boot.MB2Search)
	var firstNonZero = -1
	for off := 0; off+n <= limit; off += boot.MB2Align {
		if overlaps(usedSpans, uint64(off), uint64(off+n)) {
			continue
		}
		if !allZero(b[off : off+n]) {
			if firstNonZero < 0 {
				firstNonZero = off
			}
			continue
		}
		return off, nil
	}
	if firstNonZero >= 0 {
		return 0, fmt.Errorf("no room for the %d-byte Multiboot2 header in the first %d bytes: the gaps between ELF structures are not zero (first at %#x); the linker's layout changed",
			n, boot.MB2Search, firstNonZero)
	}
	return 0, fmt.Errorf("no room for the %d-byte Multiboot2 header in the first %d bytes: ELF headers and sections fill them; the linker's layout changed",
		n, boot.MB2Search)
}

func overlaps(spans []span, start, end uint64) bool {
	for _, s := range spans {
		if start < s.end && s.start < end {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// findHeader reports a Multiboot2 header (valid checksum, i386) where GRUB
// would look for one.
func findHeader(b []byte) (int, bool) {
	le := binary.LittleEndian
	for off := 0; off+boot.MB2HeaderLen <= min(len(b), boot.MB2Search); off += boot.MB2Align {
		magic, arch := le.Uint32(b[off:]), le.Uint32(b[off+4:])
		length, sum := le.Uint32(b[off+8:]), le.Uint32(b[off+12:])
		if magic == boot.MB2HeaderMagic && magic+arch+length+sum == 0 {
			return off, true
		}
	}
	return 0, false
}
