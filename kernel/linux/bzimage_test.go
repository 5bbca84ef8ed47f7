package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// hdr describes a synthetic bzImage; bytes writes it at the boot.rst
// offsets, spelled out here independently of the parser's constants.
type hdr struct {
	setupSects  uint8
	bootFlag    uint16
	jump        [2]byte
	magic       string
	version     uint16
	loadflags   uint8
	xlf         uint16
	align       uint32
	reloc       uint8
	pref        uint64
	initSize    uint32
	cmdlineSize uint32
	initrdMax   uint32
	syssize     uint32 // 0: the payload length / 16
	setupData   uint64
}

func defHdr() hdr {
	return hdr{
		setupSects: 4, bootFlag: 0xAA55, jump: [2]byte{0xEB, 0x6A}, magic: "HdrS",
		version: 0x020F, loadflags: 0x01, xlf: 0x03, align: 0x200000, reloc: 1,
		pref: 0x1000000, initSize: 0x800000, cmdlineSize: 2047, initrdMax: 0x7FFFFFFF,
	}
}

func (h hdr) bytes(payload []byte) []byte {
	sects := int(h.setupSects)
	if sects == 0 {
		sects = 4
	}
	b := make([]byte, (sects+1)*512, (sects+1)*512+len(payload))
	le := binary.LittleEndian
	b[0x1F1] = h.setupSects
	ss := h.syssize
	if ss == 0 {
		ss = uint32(len(payload) / 16)
	}
	le.PutUint32(b[0x1F4:], ss)
	le.PutUint16(b[0x1FE:], h.bootFlag)
	copy(b[0x200:], h.jump[:])
	copy(b[0x202:0x206], h.magic)
	le.PutUint16(b[0x206:], h.version)
	b[0x211] = h.loadflags
	le.PutUint32(b[0x22C:], h.initrdMax)
	le.PutUint32(b[0x230:], h.align)
	b[0x234] = h.reloc
	b[0x235] = 21
	le.PutUint16(b[0x236:], h.xlf)
	le.PutUint32(b[0x238:], h.cmdlineSize)
	le.PutUint64(b[0x250:], h.setupData)
	le.PutUint64(b[0x258:], h.pref)
	le.PutUint32(b[0x260:], h.initSize)
	return append(b, payload...)
}

var testPayload = bytes.Repeat([]byte{0x90, 0xCC, 0xF4, 0x00}, 1024) // 4 KiB

func validImage() []byte { return defHdr().bytes(testPayload) }

func mustParse(t testing.TB, b []byte) *BzImage {
	t.Helper()
	img, err := ParseBzImage(b)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestParseBzImageValid(t *testing.T) {
	b := validImage()
	img := mustParse(t, b)
	if !bytes.Equal(img.Header, b[0x1F1:0x26C]) {
		t.Errorf("header is %d bytes from %#x, want [0x1F1, 0x26C)", len(img.Header), 0x1F1)
	}
	if !bytes.Equal(img.Payload, testPayload) {
		t.Errorf("payload of %d bytes, want the %d after 5 sectors", len(img.Payload), len(testPayload))
	}
	want := BzImage{Version: 0x020F, SetupSects: 4, Loadflags: 1, Xloadflags: 3, KernelAlignment: 0x200000,
		Relocatable: true, PrefAddress: 0x1000000, InitSize: 0x800000, CmdlineSize: 2047, InitrdAddrMax: 0x7FFFFFFF}
	got := *img
	got.Header, got.Payload = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed %+v\nwant   %+v", got, want)
	}

	// setup_sects 0 means 4; other counts move the payload.
	for _, c := range []struct {
		sects uint8
		want  int
	}{{0, 4}, {1, 1}, {30, 30}, {255, 255}} {
		h := defHdr()
		h.setupSects = c.sects
		b := h.bytes(testPayload)
		img := mustParse(t, b)
		if img.SetupSects != c.want || !bytes.Equal(img.Payload, testPayload) || &img.Payload[0] != &b[(c.want+1)*512] {
			t.Errorf("setup_sects %d: SetupSects %d, payload at the wrong offset", c.sects, img.SetupSects)
		}
	}
	// Protocol 2.12 exactly, a header reaching only to init_size, a
	// non-relocatable kernel with no alignment, a payload longer than
	// syssize (an appended signature).
	for name, mod := range map[string]func(*hdr){
		"2.12":            func(h *hdr) { h.version = 0x020C },
		"short header":    func(h *hdr) { h.jump[1] = 0x62 },
		"longest header":  func(h *hdr) { h.jump[1] = 0x7F },
		"not relocatable": func(h *hdr) { h.reloc, h.align = 0, 0 },
		"short syssize":   func(h *hdr) { h.syssize = 1 },
		"future version":  func(h *hdr) { h.version = 0x0300 },
	} {
		h := defHdr()
		mod(&h)
		if _, err := ParseBzImage(h.bytes(testPayload)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseBzImageRefusals(t *testing.T) {
	with := func(mod func(*hdr)) func() []byte {
		return func() []byte { h := defHdr(); mod(&h); return h.bytes(testPayload) }
	}
	cut := func(n int) func() []byte { return func() []byte { return validImage()[:n] } }
	for _, c := range []struct {
		name string
		mk   func() []byte
		want string
	}{
		{"empty", cut(0), "truncated: 0 bytes, shorter than the 512-byte boot sector"},
		{"511 bytes", cut(511), "truncated: 511 bytes"},
		{"boot flag", with(func(h *hdr) { h.bootFlag = 0x55AA }), "not a bzImage: boot flag 0x55aa at 0x1fe (want 0xaa55)"},
		{"cut before version", cut(0x205), "truncated: setup header needs 520 bytes, file has 517"},
		{"no magic", with(func(h *hdr) { h.magic = "HdrZ" }), "not a bzImage: no HdrS magic at 0x202"},
		{"zero magic", with(func(h *hdr) { h.magic = "\x00\x00\x00\x00" }), "no HdrS magic"},
		{"protocol 2.11", with(func(h *hdr) { h.version = 0x020B }), "boot protocol 2.11 too old (need 2.12)"},
		{"protocol 2.0", with(func(h *hdr) { h.version = 0x0200 }), "boot protocol 2.0 too old"},
		{"protocol 1.255", with(func(h *hdr) { h.version = 0x01FF }), "boot protocol 1.255 too old"},
		{"no jump", with(func(h *hdr) { h.jump[0] = 0xE9 }), "not a short jump"},
		{"header before init_size", with(func(h *hdr) { h.jump[1] = 0x61 }), "setup header ends at 0x263, before the end of init_size (0x264)"},
		{"negative header length", with(func(h *hdr) { h.jump[1] = 0x80 }), "setup header ends at 0x182"},
		{"cut in header", cut(0x260), "truncated: setup header needs 620 bytes, file has 608"},
		{"cut in setup", cut(0x400), "truncated: setup needs 2560 bytes, file has 1024"},
		{"cut in setup, 0 sects", func() []byte { h := defHdr(); h.setupSects = 0; return h.bytes(nil)[:2559] }, "truncated: setup needs 2560 bytes, file has 2559"},
		{"no payload", func() []byte { return defHdr().bytes(nil) }, "no protected-mode kernel after the 2560-byte setup"},
		{"payload shorter than syssize", func() []byte { return validImage()[:2560+4096-16] }, "truncated: syssize says the kernel is 4096 bytes, file has 4080 after setup"},
		{"huge syssize", with(func(h *hdr) { h.syssize = 0xFFFFFFFF }), "truncated: syssize says the kernel is 68719476720 bytes"},
		{"zImage", with(func(h *hdr) { h.loadflags = 0x80 }), "not a bzImage: LOADED_HIGH clear"},
		{"32-bit", with(func(h *hdr) { h.xlf = 0x02 }), "not a 64-bit kernel (XLF_KERNEL_64 clear)"},
		{"alignment 0", with(func(h *hdr) { h.align = 0 }), "kernel_alignment 0x0 is not a power of two"},
		{"alignment 3 MiB", with(func(h *hdr) { h.align = 0x300000 }), "kernel_alignment 0x300000"},
		{"alignment 2 GiB", with(func(h *hdr) { h.align = 1 << 31 }), "kernel_alignment 0x80000000"},
		{"init_size 0", with(func(h *hdr) { h.initSize = 0 }), "init_size is 0"},
	} {
		img, err := ParseBzImage(c.mk())
		var le *Error
		switch {
		case err == nil:
			t.Errorf("%s: accepted: %+v", c.name, img)
		case !errors.As(err, &le):
			t.Errorf("%s: error %T, want *Error", c.name, err)
		case !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: error %q, want it to contain %q", c.name, err, c.want)
		case img != nil:
			t.Errorf("%s: image returned with the error", c.name)
		}
	}
}

// TestRealBzImage checks a real kernel, e.g. Debian's: extract
// boot/vmlinuz-* from linux-image-*-cloud-amd64 and point
// TAMAVISOR_TEST_BZIMAGE at it.
func TestRealBzImage(t *testing.T) {
	path := os.Getenv("TAMAVISOR_TEST_BZIMAGE")
	if path == "" {
		t.Skip("TAMAVISOR_TEST_BZIMAGE not set")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img := mustParse(t, b)
	t.Logf("protocol %d.%d, setup_sects %d, payload %d bytes, loadflags %#x, xloadflags %#x, kernel_alignment %#x, relocatable %v, pref_address %#x, init_size %#x, cmdline_size %d, initrd_addr_max %#x",
		img.Version>>8, img.Version&0xff, img.SetupSects, len(img.Payload), img.Loadflags, img.Xloadflags,
		img.KernelAlignment, img.Relocatable, img.PrefAddress, img.InitSize, img.CmdlineSize, img.InitrdAddrMax)
	if setup := (img.SetupSects + 1) * 512; &img.Payload[0] != &b[setup] || len(img.Payload) != len(b)-setup {
		t.Error("payload is not the rest of the file")
	}
	const ram = 512 << 20
	initrd := make([]byte, 8<<20+123)
	l, err := Plan(ram, img, uint64(len(initrd)), "console=ttyS0 earlyprintk=serial panic=-1")
	if err != nil {
		t.Fatal(err)
	}
	mm, err := DefaultMemoryMap(ram)
	if err != nil {
		t.Fatal(err)
	}
	bp, err := BuildBootParams(img, l, mm, 0xE0000)
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Pieces(img, initrd, bp)
	if err != nil {
		t.Fatal(err)
	}
	checkPieces(t, l, p)
	t.Logf("kernel [%#x, %#x), initrd at %#x, entry %#x", l.Kernel, l.KernelEnd, l.Initrd, l.Entry().RIP)
}
