// Package guests holds tamavisor's test guests (nasm sources) and a host
// test that checks the headers of the assembled images.
package guests

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tamavisor/kernel"
)

// expected describes what each guest's header must say.
var expected = map[string]struct {
	mode    uint32
	maxSize uint64 // upper bound on mem_size, to keep guests small
}{
	"real16":  {16, 1 << 20},
	"prot32":  {32, 1 << 20},
	"long64":  {64, 1 << 20},
	"demo":    {64, 1 << 20},
	"alive":   {16, 1 << 20},
	"npf":     {32, 64 << 10},
	"triple":  {32, 1 << 20},
	"bench":   {64, 1 << 20},
	"echo":    {16, 64 << 10},
	"counter": {64, 64 << 20},
	"fill":    {64, 258 << 20},
	"spin":    {16, 64 << 10},
	"avx":     {64, 2 << 20},
	"ticker":  {64, 1 << 20},
	"live":    {64, 64 << 20},
}

const headerSize = 128 // GUEST_HEADER_SIZE in common.inc

func TestGuestHeaders(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("build", "*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skip("no guests/build/*.bin: build them with the guests.mk rules (GUESTS_BIN) first")
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bin")
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			img, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			checkHeader(t, name, img)
		})
	}
	for name := range expected {
		if !seen[name] {
			t.Errorf("guest %s was not built", name)
		}
	}
}

func checkHeader(t *testing.T, name string, img []byte) {
	t.Helper()
	if len(img) < headerSize {
		t.Fatalf("image is %d bytes, shorter than the header", len(img))
	}
	le := binary.LittleEndian
	if got := string(img[0:8]); got != "TAMAVGST" {
		t.Errorf("magic %q", got)
	}
	if v := le.Uint32(img[8:]); v != kernel.ImageVersion {
		t.Errorf("version %d, want %d", v, kernel.ImageVersion)
	}
	if _, err := kernel.ParseImage(img); err != nil {
		t.Errorf("tamavisor refuses it: %v", err)
	}
	hsize := le.Uint32(img[12:])
	if hsize != headerSize {
		t.Errorf("header_size %d, want %d", hsize, headerSize)
	}
	mode := le.Uint32(img[16:])
	if flags := le.Uint32(img[20:]); flags != 0 {
		t.Errorf("flags %#x, want 0", flags)
	}
	load := le.Uint64(img[24:])
	entry := le.Uint64(img[32:])
	mem := le.Uint64(img[40:])
	hname := string(bytes.TrimRight(img[48:64], "\x00"))
	if hname != name {
		t.Errorf("name %q, want %q", hname, name)
	}
	if strings.ContainsRune(hname, 0) {
		t.Errorf("name %q has a NUL before its padding", hname)
	}

	want, ok := expected[name]
	if !ok {
		t.Fatalf("unknown guest %q: add it to expected", name)
	}
	if mode != want.mode {
		t.Errorf("mode %d, want %d", mode, want.mode)
	}
	if mem%4096 != 0 || mem == 0 {
		t.Errorf("mem_size %#x is not a nonzero multiple of 4096", mem)
	}
	if mem > want.maxSize {
		t.Errorf("mem_size %#x, want <= %#x", mem, want.maxSize)
	}

	payload := uint64(len(img)) - uint64(hsize)
	end := load + payload
	if end > mem {
		t.Errorf("payload [%#x, %#x) does not fit in mem_size %#x", load, end, mem)
	}
	if entry < load || entry >= end {
		t.Errorf("entry %#x outside the payload [%#x, %#x)", entry, load, end)
	}
	switch mode {
	case 16:
		// CS is 0 in real mode: the code must be reachable with a 16-bit IP.
		if end > 0x10000 {
			t.Errorf("real-mode payload ends at %#x, beyond 64 KiB", end)
		}
		if load < 0x500 {
			t.Errorf("real-mode payload at %#x overlaps the IVT/BDA", load)
		}
	case 64:
		// The ABI refuses payloads overlapping tamavisor's GDT and tables.
		if load < 0x4000 && end > 0x500 {
			t.Errorf("64-bit payload [%#x, %#x) overlaps 0x500-0x3FFF", load, end)
		}
	case 32:
	default:
		t.Errorf("mode %d is not 16, 32 or 64", mode)
	}
}
