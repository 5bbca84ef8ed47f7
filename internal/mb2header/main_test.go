package main

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tamavisor/boot"
)

// testELF describes a small ELF64 x86-64 executable for the tests: the ELF
// header, one program header, the section header table right after it,
// zero padding up to .text, then the symbol and string tables.
type testELF struct {
	base     uint64 // vaddr of file offset 0
	physBase uint64 // paddr of file offset 0
	textOff  uint64 // file offset of .text
	textLen  uint64
	flags    elf.ProgFlag // of the PT_LOAD
	symName  string
	symValue uint64
	noSymtab bool
	note     [2]uint64 // a PT_NOTE segment's file range, if note[1] > note[0]
	dirty    [2]int    // non-zero bytes in [dirty[0], dirty[1])
}

const testEntry = "tamavisor/boot.multiboot2Entry.abi0"

func defaultELF() testELF {
	return testELF{base: 0x1000f000, physBase: 0x1000f000, textOff: 0x1000, textLen: 0x100,
		flags: elf.PF_R | elf.PF_X, symName: testEntry, symValue: 0x1000f000 + 0x1040}
}

func (c testELF) build(t *testing.T) []byte {
	t.Helper()
	le := binary.LittleEndian
	const ehsize, phsize, shsize, symsize = 64, 56, 64, 24
	nprog := 1
	if c.note[1] > c.note[0] {
		nprog++
	}
	phoff := uint64(ehsize)
	shoff := phoff + uint64(nprog*phsize)
	file := make([]byte, c.textOff+c.textLen)
	for i := c.textOff; i < c.textOff+c.textLen; i++ {
		file[i] = 0xcc
	}

	shstr := []byte("\x00.text\x00.symtab\x00.strtab\x00.shstrtab\x00")
	name := func(s string) uint32 { return uint32(bytes.Index(shstr, []byte("\x00"+s+"\x00")) + 1) }
	strtab := append([]byte{0}, append([]byte(c.symName), 0)...)
	var symtab bytes.Buffer
	binary.Write(&symtab, le, elf.Sym64{})
	binary.Write(&symtab, le, elf.Sym64{Name: 1, Info: elf.ST_INFO(elf.STB_GLOBAL, elf.STT_FUNC), Shndx: 1, Value: c.symValue})

	secs := []elf.Section64{{}, {Name: name(".text"), Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC | elf.SHF_EXECINSTR),
		Addr: c.base + c.textOff, Off: c.textOff, Size: c.textLen, Addralign: 16}}
	appendSec := func(s elf.Section64, data []byte) {
		s.Off = uint64(len(file))
		s.Size = uint64(len(data))
		file = append(file, data...)
		secs = append(secs, s)
	}
	if !c.noSymtab {
		appendSec(elf.Section64{Name: name(".symtab"), Type: uint32(elf.SHT_SYMTAB), Link: 3, Info: 1, Entsize: symsize, Addralign: 8}, symtab.Bytes())
		appendSec(elf.Section64{Name: name(".strtab"), Type: uint32(elf.SHT_STRTAB), Addralign: 1}, strtab)
	}
	appendSec(elf.Section64{Name: name(".shstrtab"), Type: uint32(elf.SHT_STRTAB), Addralign: 1}, shstr)

	var hdr bytes.Buffer
	binary.Write(&hdr, le, elf.Header64{
		Ident: [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)},
		Type:  uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Entry: c.base + c.textOff, Phoff: phoff, Shoff: shoff, Ehsize: ehsize,
		Phentsize: phsize, Phnum: uint16(nprog), Shentsize: shsize, Shnum: uint16(len(secs)), Shstrndx: uint16(len(secs) - 1),
	})
	binary.Write(&hdr, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(c.flags), Off: 0,
		Vaddr: c.base, Paddr: c.physBase, Filesz: c.textOff + c.textLen, Memsz: c.textOff + c.textLen, Align: 0x1000})
	if c.note[1] > c.note[0] {
		binary.Write(&hdr, le, elf.Prog64{Type: uint32(elf.PT_NOTE), Flags: uint32(elf.PF_R), Off: c.note[0],
			Vaddr: c.base + c.note[0], Paddr: c.physBase + c.note[0], Filesz: c.note[1] - c.note[0], Memsz: c.note[1] - c.note[0], Align: 4})
	}
	for _, s := range secs {
		binary.Write(&hdr, le, s)
	}
	if uint64(hdr.Len()) > c.textOff {
		t.Fatalf("test ELF: headers (%d bytes) overlap .text at %#x", hdr.Len(), c.textOff)
	}
	copy(file, hdr.Bytes())
	for i := c.dirty[0]; i < c.dirty[1]; i++ {
		file[i] = 0x5a
	}
	if _, err := elf.NewFile(bytes.NewReader(file)); err != nil {
		t.Fatalf("test ELF unreadable: %v", err)
	}
	return file
}

// headerEnd is where the test ELF's section header table ends.
func headerEnd(c testELF) int {
	n := 5
	if c.noSymtab {
		n = 3
	}
	p := 1
	if c.note[1] > c.note[0] {
		p++
	}
	return 64 + 56*p + 64*n
}

func TestPatch(t *testing.T) {
	c := defaultELF()
	b := c.build(t)
	off, entry, err := Patch(b, testEntry)
	if err != nil {
		t.Fatal(err)
	}
	want := (headerEnd(c) + boot.MB2Align - 1) &^ (boot.MB2Align - 1)
	if off != want {
		t.Errorf("header at %#x, want the first aligned free offset %#x", off, want)
	}
	if entry != uint32(c.symValue) {
		t.Errorf("entry %#x, want %#x", entry, c.symValue)
	}
	h := boot.MB2Header(entry)
	if !bytes.Equal(b[off:off+len(h)], h) {
		t.Errorf("file holds % x, want the header % x", b[off:off+len(h)], h)
	}
	if o, ok := findHeader(b); !ok || o != off {
		t.Errorf("findHeader = %#x, %v; want %#x", o, ok, off)
	}
	// The patched file is still the same ELF.
	if _, err := elf.NewFile(bytes.NewReader(b)); err != nil {
		t.Errorf("patched file unreadable: %v", err)
	}
}

func TestPatchPhysicalEntry(t *testing.T) {
	c := defaultELF()
	c.base, c.physBase = 0xffffffff80000000, 0x200000
	c.symValue = c.base + 0x1040
	_, entry, err := Patch(c.build(t), testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if entry != 0x201040 {
		t.Errorf("entry %#x, want the physical address 0x201040", entry)
	}
}

func TestPatchSkipsNote(t *testing.T) {
	c := defaultELF()
	end := headerEnd(c)
	c.note = [2]uint64{uint64(end), uint64(end + 0x18)}
	b := c.build(t)
	for i := c.note[0]; i < c.note[1]; i++ {
		b[i] = 0 // a note of zero bytes must still not be overwritten
	}
	off, _, err := Patch(b, testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(off) < c.note[1] {
		t.Errorf("header at %#x overlaps the note [%#x, %#x)", off, c.note[0], c.note[1])
	}
}

// TestPatchStepsOverData: a non-zero byte in the padding is not
// overwritten; the header goes past it.
func TestPatchStepsOverData(t *testing.T) {
	c := defaultELF()
	c.dirty = [2]int{headerEnd(c) + 20, headerEnd(c) + 21}
	b := c.build(t)
	off, _, err := Patch(b, testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if off <= c.dirty[0] {
		t.Errorf("header at %#x covers the byte at %#x", off, c.dirty[0])
	}
	if b[c.dirty[0]] != 0x5a {
		t.Error("the byte was overwritten")
	}
}

func TestPatchRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(*testELF)
		input  func([]byte) []byte
		symbol string
		errs   string
	}{
		{name: "padding not zero", mod: func(c *testELF) { c.dirty = [2]int{headerEnd(*c), int(c.textOff)} }, errs: "are not zero (first at"},
		{name: "no room in the first 32 KiB", mod: func(c *testELF) {
			c.textOff = uint64(headerEnd(*c) + boot.MB2HeaderLen) // a gap shorter than the header
			c.symValue = c.base + c.textOff
		}, errs: "ELF headers and sections fill them"},
		{name: "zero padding only beyond 32 KiB", mod: func(c *testELF) {
			c.textOff = boot.MB2Search + 0x100
			c.symValue = c.base + c.textOff
			c.dirty = [2]int{headerEnd(*c), boot.MB2Search}
		}, errs: "are not zero"},
		{name: "stripped", mod: func(c *testELF) { c.noSymtab = true }, errs: "no symbol table"},
		{name: "entry symbol missing", symbol: "tamavisor/boot.other", errs: "not linked in"},
		{name: "entry not executable", mod: func(c *testELF) { c.flags = elf.PF_R }, errs: "no executable loaded segment"},
		{name: "entry outside segments", mod: func(c *testELF) { c.symValue = 0x1000 }, errs: "no executable loaded segment"},
		{name: "entry above 4 GiB", mod: func(c *testELF) {
			c.base, c.physBase = 0x100000000, 0x100000000
			c.symValue = c.base + 0x1040
		}, errs: "above 4 GiB"},
		{name: "already patched", input: func(b []byte) []byte {
			copy(b[0x800:], boot.MB2Header(0x1234))
			return b
		}, errs: "already has a Multiboot2 header at file offset 0x800"},
		{name: "not ELF", input: func([]byte) []byte { return []byte("#!/bin/sh\necho not a kernel\n") }, errs: "not an ELF file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultELF()
			if tc.mod != nil {
				tc.mod(&c)
			}
			b := c.build(t)
			if tc.input != nil {
				b = tc.input(b)
			}
			before := bytes.Clone(b)
			sym := testEntry
			if tc.symbol != "" {
				sym = tc.symbol
			}
			_, _, err := Patch(b, sym)
			if err == nil || !strings.Contains(err.Error(), tc.errs) {
				t.Fatalf("Patch error %v, want one containing %q", err, tc.errs)
			}
			if !bytes.Equal(b, before) {
				t.Error("a refused patch changed the file")
			}
		})
	}
}

// TestRun: the command writes the output file only when it patched.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.elf"), filepath.Join(dir, "out.elf")
	os.WriteFile(in, defaultELF().build(t), 0o644)
	var stdout, stderr strings.Builder
	if code := run([]string{"-entry", testEntry, "-o", out, in}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findHeader(b); !ok {
		t.Error("output has no Multiboot2 header")
	}
	// Patching the output again is refused and leaves no file behind.
	again := filepath.Join(dir, "again.elf")
	stderr.Reset()
	if code := run([]string{"-o", again, out}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "already has") {
		t.Errorf("second patch: exit %d, %q", code, stderr.String())
	}
	if _, err := os.Stat(again); err == nil {
		t.Error("a refused patch wrote its output")
	}
	if code := run([]string{in}, &stdout, &stderr); code != 2 {
		t.Errorf("without -o: exit %d, want 2 (usage)", code)
	}
}
