package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"tamavisor/svm"
)

func TestParseImageValid(t *testing.T) {
	payload := []byte{0xfa, 0xf4, 0xeb, 0xfd}
	for _, c := range []struct {
		mode             uint32
		load, entry, mem uint64
		hsize            uint32
		name, wantName   string
	}{
		{Mode16, 0x7c00, 0x7c00, 0x10000, 64, "real", "real"},
		{Mode16, 0, 0xffff, 0x100000, 64, "", "guest"},
		{Mode32, 0x100000, 0x100002, 2 << 20, 64, "flat32", "flat32"},
		{Mode32, 0x518, 0x518, 0x1000, 64, "justafter", "justafter"}, // right after the GDT
		{Mode32, 0, 0, 0x1000, 64, "below", "below"},                 // payload ends before 0x500
		{Mode64, 0x4000, 0x4000, 0x5000, 128, "long", "long"},
		{Mode64, 0x200000, 0x200003, MaxGuestRAM, 64, "0123456789abcdef", "0123456789abcdef"},
	} {
		h := header(c.mode, c.load, c.entry, c.mem, c.name)
		h.HeaderSize = c.hsize
		b := h.bytes(payload)
		if c.mode == Mode32 && c.load == 0 {
			b = h.bytes(make([]byte, 0x500))
		}
		img, err := ParseImage(b)
		if err != nil {
			t.Errorf("mode %d load %#x: %v", c.mode, c.load, err)
			continue
		}
		if img.Mode != c.mode || img.LoadGPA != c.load || img.Entry != c.entry || img.MemSize != c.mem || img.Name != c.wantName {
			t.Errorf("mode %d: parsed %+v", c.mode, img)
		}
		if !bytes.Equal(img.Payload, b[c.hsize:]) {
			t.Errorf("mode %d: payload % x, want % x", c.mode, img.Payload, b[c.hsize:])
		}
	}
}

func TestParseImageRefusals(t *testing.T) {
	le := binary.LittleEndian
	valid := func() []byte { return buildImage(Mode32, 0x10000, 0x10000, 1<<20, "x", []byte{0xf4}) }
	patch32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint32(b[off:], v); return b }
	}
	patch64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint64(b[off:], v); return b }
	}
	img := func(mode uint32, load, entry, mem uint64, n int) func([]byte) []byte {
		return func([]byte) []byte { return buildImage(mode, load, entry, mem, "x", make([]byte, n)) }
	}
	for _, c := range []struct {
		name string
		mk   func([]byte) []byte
		want string
	}{
		{"empty", func([]byte) []byte { return nil }, "shorter than"},
		{"short", func(b []byte) []byte { return b[:63] }, "shorter than"},
		{"magic", func(b []byte) []byte { b[7] = 'X'; return b }, "bad magic"},
		{"magic lowercase", func(b []byte) []byte { copy(b, "tamavgst"); return b }, "bad magic"},
		{"version 0", patch32(8, 0), "version 0"},
		{"version 3", patch32(8, 3), "version 3"},
		{"header_size 63", patch32(12, 63), "header_size 63"},
		{"header_size 0", patch32(12, 0), "header_size 0"},
		{"header_size > len", patch32(12, 66), "header_size 66"},
		{"header_size huge", patch32(12, 0xffffffff), "header_size"},
		{"flags", patch32(20, 1), "flags"},
		{"flags high", patch32(20, 1<<31), "flags"},
		{"mode 0", patch32(16, 0), "mode 0"},
		{"mode 8", patch32(16, 8), "mode 8"},
		{"mode 33", patch32(16, 33), "mode 33"},
		{"mem_size 0", patch64(40, 0), "mem_size"},
		{"mem_size unaligned", patch64(40, 1<<20+1), "mem_size"},
		{"mem_size 2048", patch64(40, 2048), "mem_size"},
		{"mem_size too big", patch64(40, MaxGuestRAM+4096), "mem_size"},
		{"mem_size huge", patch64(40, 1<<63), "mem_size"},
		{"payload beyond mem_size", img(Mode32, 1<<20-1, 0x10000, 1<<20, 2), "does not fit"},
		{"payload at mem_size", img(Mode32, 1<<20, 0x10000, 1<<20, 1), "does not fit"},
		{"load_gpa+len overflows", img(Mode32, ^uint64(0)-1, 0x10000, 1<<20, 4), "does not fit"},
		{"load_gpa max, empty payload", img(Mode32, ^uint64(0), 0x10000, 1<<20, 0), "does not fit"},
		{"entry at mem_size", patch64(32, 1<<20), "entry"},
		{"entry huge", patch64(32, ^uint64(0)), "entry"},
		{"real-mode entry above 64 KiB", img(Mode16, 0x20000, 0x10000, 1<<20, 1), "real-mode entry"},
		{"mode 32 payload on GDT", img(Mode32, 0x510, 0x510, 1<<20, 1), "overlaps"},
		{"mode 32 payload across GDT", img(Mode32, 0, 0, 1<<20, 0x1000), "overlaps"},
		{"mode 32 payload ends in GDT", img(Mode32, 0x400, 0x400, 1<<20, 0x101), "overlaps"},
		{"mode 64 payload on PD", img(Mode64, 0x3fff, 0x3fff, 1<<20, 1), "overlaps"},
		{"mode 64 payload on GDT", img(Mode64, 0x500, 0x500, 1<<20, 1), "overlaps"},
		{"mode 64 payload across tables", img(Mode64, 0, 0x10, 1<<20, 0x8000), "overlaps"},
		{"mode 64 RAM below tables", img(Mode64, 0, 0, 0x3000, 0x10), "too small"},
	} {
		b := c.mk(valid())
		img, err := ParseImage(b)
		var ie *ImageError
		switch {
		case err == nil:
			t.Errorf("%s: accepted: %+v", c.name, img)
		case !errors.As(err, &ie):
			t.Errorf("%s: error %T %v, want *ImageError", c.name, err, err)
		case !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: error %q, want it to mention %q", c.name, err, c.want)
		case img != nil:
			t.Errorf("%s: image returned with error", c.name)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "guest image refused: ") {
			t.Errorf("%s: error %q lacks the prefix", c.name, err)
		}
	}
	// Mode 16 has no boot structures: a payload at 0 is fine.
	if _, err := ParseImage(buildImage(Mode16, 0, 0, 0x1000, "x", make([]byte, 0x1000))); err != nil {
		t.Errorf("mode 16 payload over [0, 4 KiB): %v", err)
	}
}

func TestParseImageNames(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{"hello", "hello"},
		{"", "guest"},
		{"\x00hidden", "guest"},
		{"a\x00b", "a"},
		{"tab\there", "tab?here"},
		{"esc\x1b[2J", "esc?[2J"},
		{"\x7f\x80\xff", "???"},
		{"0123456789abcdefXYZ", "0123456789abcdef"}, // 16 bytes, no NUL
	} {
		img, err := ParseImage(buildImage(Mode16, 0x1000, 0x1000, 0x2000, c.raw, nil))
		if err != nil {
			t.Fatalf("%q: %v", c.raw, err)
		}
		if img.Name != c.want {
			t.Errorf("name %q parsed as %q, want %q", c.raw, img.Name, c.want)
		}
	}
	_, err := ParseImage([]byte("\x1b[31mEVIL!\x00" + strings.Repeat("\x00", 60)))
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\x00") {
		t.Errorf("bad magic error %q must be printable", err)
	}
}

// FuzzParseImage: ParseImage never panics, and what it accepts cannot make
// load write outside guest RAM.
func FuzzParseImage(f *testing.F) {
	f.Add(buildImage(Mode16, 0x7c00, 0x7c00, 0x10000, "boot", []byte{0xf4}))
	f.Add(buildImage(Mode32, 0x518, 0x518, 0x1000, "flat", []byte{0xf4}))
	f.Add(buildImage(Mode64, 0x4000, 0x4000, 0x5000, "long", []byte{0xf4}))
	f.Add(buildImage(Mode64, ^uint64(0)-1, 0, 0x5000, "wrap", []byte{1, 2, 3}))
	f.Add(EncodeImage(&Image{Mode: Mode32, LoadGPA: 0x1000, Entry: 0x1000, MemSize: 0x2000, Name: "v2", Payload: []byte{0xf4}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := ParseImage(b)
		if err != nil {
			if img != nil {
				t.Fatal("image with error")
			}
			var ie *ImageError
			if !errors.As(err, &ie) {
				t.Fatalf("error %T", err)
			}
			return
		}
		end := img.LoadGPA + uint64(len(img.Payload))
		switch {
		case img.Mode != Mode16 && img.Mode != Mode32 && img.Mode != Mode64:
			t.Fatalf("mode %d", img.Mode)
		case img.MemSize == 0 || img.MemSize%svm.PageSize != 0 || img.MemSize > MaxGuestRAM:
			t.Fatalf("mem_size %#x", img.MemSize)
		case end < img.LoadGPA || end > img.MemSize:
			t.Fatalf("payload [%#x, %#x) outside mem_size %#x", img.LoadGPA, end, img.MemSize)
		case img.Entry >= img.MemSize:
			t.Fatalf("entry %#x outside mem_size %#x", img.Entry, img.MemSize)
		case img.Mode == Mode16 && img.Entry > 0xffff:
			t.Fatalf("real-mode entry %#x", img.Entry)
		case img.Mode == Mode32 && img.LoadGPA < bootGDTEnd && end > bootGDT:
			t.Fatalf("mode 32 payload [%#x, %#x) over the GDT", img.LoadGPA, end)
		case img.Mode == Mode64 && (img.LoadGPA < bootTableEnd && end > bootGDT || img.MemSize < bootTableEnd):
			t.Fatalf("mode 64 payload [%#x, %#x) / mem_size %#x vs boot tables", img.LoadGPA, end, img.MemSize)
		case img.Name == "":
			t.Fatal("empty name")
		}
		for _, c := range []byte(img.Name) {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("unprintable name %q", img.Name)
			}
		}
		// Loading the image into RAM of its size succeeds.
		if img.MemSize <= 1<<20 {
			mem := GuestMemory{Size: img.MemSize, ram: make([]byte, img.MemSize)}
			var s svm.StateSaveArea
			if err := img.load(&mem, &s); err != nil {
				t.Fatalf("load: %v", err)
			}
			if !bytes.Equal(mem.ram[img.LoadGPA:end], img.Payload) {
				t.Fatal("payload not loaded")
			}
		}
	})
}

// loadState loads an image into fresh RAM and returns RAM and state.
func loadState(t *testing.T, mode uint32, mem uint64) (*GuestMemory, *svm.StateSaveArea) {
	t.Helper()
	entry := uint64(0x7000)
	img, err := ParseImage(buildImage(mode, 0x6000, entry, mem, "s", bytes.Repeat([]byte{0xcc}, 0x1000)))
	if err != nil {
		t.Fatal(err)
	}
	gm := &GuestMemory{Size: mem, ram: make([]byte, mem)}
	s := &svm.StateSaveArea{RAX: 0x1234, CR2: 5, CPL: 3} // load must reset everything
	if err := img.load(gm, s); err != nil {
		t.Fatal(err)
	}
	if s.RIP != entry || s.RSP != 0 || s.RAX != 0 || s.CR2 != 0 || s.CPL != 0 {
		t.Errorf("mode %d: RIP %#x RSP %#x RAX %#x CR2 %#x CPL %d", mode, s.RIP, s.RSP, s.RAX, s.CR2, s.CPL)
	}
	if s.RFLAGS != svm.RFLAGSFixed {
		t.Errorf("mode %d: RFLAGS %#x, want only the fixed bit (IF=0)", mode, s.RFLAGS)
	}
	if s.GPAT != 0x0007040600070406 || s.DR6 != 0xffff0ff0 || s.DR7 != 0x400 {
		t.Errorf("mode %d: PAT %#x DR6 %#x DR7 %#x", mode, s.GPAT, s.DR6, s.DR7)
	}
	if gm.ram[0x6000] != 0xcc || gm.ram[0x6fff] != 0xcc || gm.ram[0x5fff] != 0 || gm.ram[0x7000] != 0 {
		t.Errorf("mode %d: payload not at [0x6000, 0x7000)", mode)
	}
	return gm, s
}

func TestImageLoadMode16(t *testing.T) {
	gm, s := loadState(t, Mode16, 0x10000)
	if s.CR0 != svm.CR0ET || s.CR3 != 0 || s.CR4 != 0 || s.EFER != svm.EFERSVME {
		t.Errorf("CR0 %#x CR3 %#x CR4 %#x EFER %#x", s.CR0, s.CR3, s.CR4, s.EFER)
	}
	for name, seg := range map[string]svm.Segment{"CS": s.CS, "DS": s.DS, "ES": s.ES, "SS": s.SS, "FS": s.FS, "GS": s.GS} {
		if seg.Selector != 0 || seg.Base != 0 || seg.Limit != 0xffff || seg.Attrib&svm.SegP == 0 || seg.Attrib&(svm.SegDB|svm.SegL|svm.SegG) != 0 {
			t.Errorf("%s = %+v, want a 16-bit segment at 0, limit 0xffff", name, seg)
		}
	}
	if s.CS.Attrib&svm.SegCode == 0 || s.DS.Attrib&svm.SegCode != 0 {
		t.Errorf("CS attrib %#x DS attrib %#x", s.CS.Attrib, s.DS.Attrib)
	}
	if s.IDTR.Base != 0 || s.IDTR.Limit != 0xffff {
		t.Errorf("real-mode IDTR %+v, want the IVT (base 0, limit 0xffff)", s.IDTR)
	}
	if !bytes.Equal(gm.ram[:0x6000], make([]byte, 0x6000)) {
		t.Error("mode 16 wrote boot structures")
	}
}

// wantGDT checks the flat GDT at 0x500.
func wantGDT(t *testing.T, gm *GuestMemory, s *svm.StateSaveArea, code uint64) {
	t.Helper()
	le := binary.LittleEndian
	if s.GDTR.Base != 0x500 || s.GDTR.Limit != 0x17 {
		t.Errorf("GDTR %+v, want base 0x500 limit 0x17", s.GDTR)
	}
	if s.IDTR.Limit != 0 {
		t.Errorf("IDTR limit %#x, want 0", s.IDTR.Limit)
	}
	gdt := gm.ram[0x500:0x518]
	// Flat 4 GiB descriptors: limit 0xfffff, base 0, G=1, present, DPL 0.
	const data32 = 0x00cf93000000ffff // data, RW, accessed, D/B=1
	if got := le.Uint64(gdt[0:]); got != 0 {
		t.Errorf("GDT null descriptor %#016x", got)
	}
	if got := le.Uint64(gdt[8:]); got != code {
		t.Errorf("GDT code descriptor %#016x, want %#016x", got, code)
	}
	if got := le.Uint64(gdt[16:]); got != data32 {
		t.Errorf("GDT data descriptor %#016x, want %#016x", got, data32)
	}
	// The VMCB's hidden segment state matches the descriptors.
	if s.CS.Selector != 0x08 || s.CS.Base != 0 || s.CS.Limit != 0xffffffff {
		t.Errorf("CS %+v", s.CS)
	}
	if want := uint16(code>>40&0xff | code>>52&0xf<<8); s.CS.Attrib != want {
		t.Errorf("CS attrib %#x, descriptor says %#x", s.CS.Attrib, want)
	}
	for name, seg := range map[string]svm.Segment{"DS": s.DS, "ES": s.ES, "SS": s.SS, "FS": s.FS, "GS": s.GS} {
		if seg.Selector != 0x10 || seg.Base != 0 || seg.Limit != 0xffffffff || seg.Attrib != 0xc93 {
			t.Errorf("%s = %+v, want flat data selector 0x10 attrib 0xc93", name, seg)
		}
	}
}

func TestImageLoadMode32(t *testing.T) {
	gm, s := loadState(t, Mode32, 0x10000)
	if s.CR0 != svm.CR0ET|svm.CR0PE || s.CR4 != 0 || s.CR3 != 0 || s.EFER != svm.EFERSVME {
		t.Errorf("CR0 %#x CR3 %#x CR4 %#x EFER %#x", s.CR0, s.CR3, s.CR4, s.EFER)
	}
	wantGDT(t, gm, s, 0x00cf9b000000ffff) // code, readable, accessed, D=1
	if s.CS.Attrib&svm.SegL != 0 {
		t.Error("mode 32 CS has L set")
	}
	if !bytes.Equal(gm.ram[0x1000:0x4000], make([]byte, 0x3000)) {
		t.Error("mode 32 wrote page tables")
	}
}

func TestImageLoadMode64(t *testing.T) {
	gm, s := loadState(t, Mode64, 0x10000)
	if s.CR0 != svm.CR0ET|svm.CR0PE|svm.CR0PG || s.CR4 != svm.CR4PAE || s.CR3 != 0x1000 {
		t.Errorf("CR0 %#x CR3 %#x CR4 %#x", s.CR0, s.CR3, s.CR4)
	}
	if s.EFER != svm.EFERSVME|svm.EFERLME|svm.EFERLMA {
		t.Errorf("EFER %#x, want SVME|LME|LMA", s.EFER)
	}
	wantGDT(t, gm, s, 0x00af9b000000ffff) // code, L=1, D=0
	le := binary.LittleEndian
	pte := func(gpa uint64) uint64 { return le.Uint64(gm.ram[gpa:]) }
	const pw = 3 // present, writable
	if got := pte(0x1000); got != 0x2000|pw {
		t.Errorf("PML4[0] %#x", got)
	}
	for i := uint64(1); i < 512; i++ {
		if pte(0x1000+8*i) != 0 || pte(0x2000+8*i) != 0 {
			t.Fatalf("PML4/PDPT entry %d not empty", i)
		}
	}
	if got := pte(0x2000); got != 0x3000|pw {
		t.Errorf("PDPT[0] %#x", got)
	}
	for _, i := range []uint64{0, 1, 5, 511} {
		if got, want := pte(0x3000+8*i), i<<21|pw|0x80; got != want {
			t.Errorf("PD[%d] %#x, want %#x (%d MiB, PS)", i, got, want, 2*i)
		}
	}
	if got := pte(0x3000 + 8*5); got&^0xfff != 10<<20 {
		t.Errorf("PD[5] maps %#x, want 10 MiB", got&^0xfff)
	}
}

// TestVMCBConsistency: the VMCB NewVM builds passes svm.Check in every mode.
func TestVMCBConsistency(t *testing.T) {
	for _, mode := range []uint32{Mode16, Mode32, Mode64} {
		e := newEnv(t, featNRIP)
		vm := e.boot(mode)
		if r := svm.Check(vm.VCPU.VMCB()); len(r) != 0 {
			t.Errorf("mode %d: VMCB fails checks: %q", mode, r)
		}
		// The check itself sees a broken VMCB.
		vm.VCPU.VMCB().State.EFER &^= svm.EFERSVME
		if r := svm.Check(vm.VCPU.VMCB()); len(r) == 0 {
			t.Errorf("mode %d: check missed a clear EFER.SVME", mode)
		}
		vm.Destroy()
	}
}

// TestImageVersion2: the payload size and CRC-32C of a version 2 image are
// checked (a truncated, padded or damaged file is refused) and its entry
// must lie in the payload; EncodeImage and StampImage write them.
func TestImageVersion2(t *testing.T) {
	img := &Image{Mode: Mode32, LoadGPA: 0x1000, Entry: 0x1002, MemSize: 0x10000, Name: "v2",
		Payload: []byte{0x90, 0x90, 0xf4, 0xeb, 0xfd}}
	b := EncodeImage(img)
	got, err := ParseImage(b)
	if err != nil || !bytes.Equal(got.Payload, img.Payload) || got.Entry != img.Entry {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated", b[:len(b)-1], "payload is 4 bytes, the header says 5"},
		{"padded", append(append([]byte(nil), b...), 0), "payload is 6 bytes, the header says 5"},
		{"damaged", func() []byte { c := append([]byte(nil), b...); c[len(c)-1] ^= 1; return c }(), "CRC-32C"},
		{"entry outside the payload", EncodeImage(&Image{Mode: Mode32, LoadGPA: 0x1000, Entry: 0x2000, MemSize: 0x10000,
			Payload: []byte{0xf4}}), "entry 0x2000 outside the payload"},
		{"header too short", func() []byte { c := append([]byte(nil), b...); binary.LittleEndian.PutUint32(c[12:], 64); return c }(), "header_size 64"},
	} {
		_, err := ParseImage(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	// An assembler's header with zeros where size and checksum go.
	raw := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(raw[imagePayloadSize:], 0)
	if _, err := ParseImage(raw); err == nil {
		t.Fatal("unstamped image accepted")
	}
	if err := StampImage(raw); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, b) {
		t.Error("StampImage wrote other bytes than EncodeImage")
	}
	if err := StampImage(raw[:10]); err == nil {
		t.Error("StampImage accepted 10 bytes")
	}
}
