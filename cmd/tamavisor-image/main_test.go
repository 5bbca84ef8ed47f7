package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tamavisor/kernel"
)

func TestStampThenCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "g.bin")
	b := kernel.EncodeImage(&kernel.Image{Mode: kernel.Mode16, LoadGPA: 0x1000, Entry: 0x1000, MemSize: 0x10000,
		Name: "g", Payload: []byte{0xf4}})
	binary.LittleEndian.PutUint64(b[64:], 0) // as an assembler leaves it
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	if s := run([]string{"check", file}, &out, &errs); s != 1 || !strings.Contains(errs.String(), "payload") {
		t.Fatalf("check before stamp: status %d, %q", s, errs.String())
	}
	if s := run([]string{"stamp", file}, &out, &errs); s != 0 {
		t.Fatalf("stamp: status %d, %q", s, errs.String())
	}
	out.Reset()
	if s := run([]string{"check", file}, &out, &errs); s != 0 || !strings.Contains(out.String(), `"g", 16-bit, 1 bytes at 0x1000`) {
		t.Fatalf("check: status %d, %q", s, out.String())
	}
	if s := run(nil, &out, &errs); s != 2 {
		t.Errorf("no arguments: status %d, want 2", s)
	}
	out.Reset()
	if s := run([]string{"--help"}, &out, &errs); s != 0 || !strings.Contains(out.String(), "usage") {
		t.Errorf("--help: status %d, %q", s, out.String())
	}
}
