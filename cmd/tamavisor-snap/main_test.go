package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runTool(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := run(args, &out, &errb)
	return rc, out.String() + errb.String()
}

func TestToolOnDemoDisk(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if rc, out := runTool(t, "demo", "--size", "2MiB", disk); rc != 0 {
		t.Fatalf("demo: %d %s", rc, out)
	}
	rc, out := runTool(t, "inspect", disk)
	if rc != 0 {
		t.Fatalf("inspect: %d %s", rc, out)
	}
	for _, want := range []string{"slot 1: commit record valid (newest)", "generation 2", "device uart16550 instance 0 state v1 required",
		"dev:uart16550", "manifest", "256 stored, 256 zero elided"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	rc, out = runTool(t, "inspect", "--json", disk)
	var rep struct {
		Slots []struct {
			Newest bool
			Commit struct{ Generation uint64 }
			Chunks []struct {
				Type   string
				Offset int64
				Length uint64
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); rc != 0 || err != nil || len(rep.Slots) != 2 || !rep.Slots[1].Newest {
		t.Fatalf("inspect --json: %d %v\n%s", rc, err, out)
	}
	if rc, out := runTool(t, "verify", disk); rc != 0 || !strings.Contains(out, "ok slot 1 generation 2 (newest)") {
		t.Fatalf("verify: %d %s", rc, out)
	}
	ramOut := filepath.Join(dir, "ram.bin")
	if rc, out := runTool(t, "extract-ram", disk, ramOut); rc != 0 {
		t.Fatalf("extract-ram: %d %s", rc, out)
	}
	ram, _ := os.ReadFile(ramOut)
	if want := demoGuest(2<<20, 2).b; !bytes.Equal(ram, want) {
		t.Errorf("extracted RAM (%d bytes) differs from the guest", len(ram))
	}

	// Corrupt one byte of the newest snapshot's uart state.
	var off int64 = -1
	for _, c := range rep.Slots[1].Chunks {
		if c.Type == "dev:uart16550" {
			off = c.Offset + 48 + 1
		}
	}
	img, _ := os.ReadFile(disk)
	base := int64(8192) + (int64(len(img))-8192)/2/4096*4096 // slot 1
	img[base+off] ^= 0x40
	os.WriteFile(disk, img, 0o644)
	rc, out = runTool(t, "verify", disk)
	if rc != 1 || !strings.Contains(out, `chunk "dev:uart16550" (index 2): checksum mismatch`) {
		t.Errorf("verify after corruption: %d %s", rc, out)
	}
	// Loading (extract-ram) falls back to generation 1.
	if rc, out := runTool(t, "extract-ram", disk, ramOut); rc != 0 || !strings.Contains(out, "generation 1") {
		t.Errorf("extract-ram after corruption: %d %s", rc, out)
	}
}

func TestToolUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"verify"}, {"inspect", "a", "b"}, {"bench", "--size", "3"}} {
		if rc, _ := runTool(t, args...); rc != 2 {
			t.Errorf("%q: exit %d, want 2", args, rc)
		}
	}
	if rc, _ := runTool(t, "verify", filepath.Join(t.TempDir(), "missing.img")); rc != 1 {
		t.Errorf("missing disk: exit %d", rc)
	}
}

func TestBenchRuns(t *testing.T) {
	rc, out := runTool(t, "bench", "--size", "4MiB", "--dir", t.TempDir())
	if rc != 0 {
		t.Fatalf("bench: %d %s", rc, out)
	}
	for _, want := range []string{"plain sequential write", "encode", "decode", "load (verify + restore)", "vs plain write"} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"256MiB": 256 << 20, "1GiB": 1 << 30, "4M": 4 << 20, "2097152": 2 << 20} {
		if got, err := parseSize(in, 0); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"x", "-1MiB", "1KiB", "2097153"} {
		if _, err := parseSize(in, 0); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
