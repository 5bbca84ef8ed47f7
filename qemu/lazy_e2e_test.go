//go:build e2e

package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// Lazy restore (docs/snapshot-format.md, 3.3): mode restore resumes the
// guest before its RAM is read; blocks of page data are read, checked
// and mapped as the guest touches them and in the background.

// firstInsnLine is main.go's report of a restore.
var firstInsnLine = regexp.MustCompile(`restored from generation \d+ .*\(lazily, (\d+) of (\d+) blocks .*time to the guest's first instruction ([0-9.]+) ms`)

// Layout of a version 2 RAM chunk body of one range (docs/snapshot-format.md,
// 3 and 3.1): chunk header, body header, nonce, range header, data bitmap,
// then the page data.
const (
	chunkHeaderSize = 48
	ramBodyHeader   = 56
	ramNonce        = 16
	ramRangeHeader  = 32
	blockSize       = 1 << 20
	pageSize        = 4096
)

// ramLayout reads the newest snapshot's RAM chunk from the disk with
// tamavisor-snap inspect --json: the device offsets of its page data and
// of its body's end (the block table's last byte is just before it).
func ramLayout(t *testing.T, disk string) (pageData, bodyEnd int64) {
	t.Helper()
	out, err := exec.Command(tool(t, "tamavisor-snap"), "inspect", "--json", disk).Output()
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	var doc struct {
		Slots []struct {
			Newest bool `json:"newest"`
			Commit *struct {
				Offset int64 `json:"offset"`
			} `json:"commit"`
			Chunks []struct {
				Type   string `json:"type"`
				Offset int64  `json:"offset"`
				Length int64  `json:"length"`
			} `json:"chunks"`
			RAM *struct {
				Ranges []struct {
					Pages int64 `json:"pages"`
				} `json:"ranges"`
			} `json:"ram"`
		} `json:"slots"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("inspect --json: %v", err)
	}
	for _, s := range doc.Slots {
		if !s.Newest || s.Commit == nil || s.RAM == nil || len(s.RAM.Ranges) != 1 {
			continue
		}
		for _, c := range s.Chunks {
			if c.Type == "ram" {
				body := s.Commit.Offset + c.Offset + chunkHeaderSize
				bitmap := (s.RAM.Ranges[0].Pages + 7) / 8
				return body + ramBodyHeader + ramNonce + ramRangeHeader + bitmap, body + c.Length
			}
		}
	}
	t.Fatalf("no one-range RAM chunk in the newest snapshot:\n%s", out)
	return 0, 0
}

// flipByte changes one byte of the file at off.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestLazyRestore: the counter guest saved at 5 resumes lazily (the
// report gives the time to its first instruction, with every block still
// on the disk), its RAM arrives in the background, and it runs to its end
// with its 48 MiB pattern intact, saving at 10 and 15 on the way (the
// first of them while blocks may still be missing).
func TestLazyRestore(t *testing.T) {
	disk := newDisk(t, 256<<20)
	boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, OnLine: killOn("counter: saved at 5")})
	r := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk})
	expect(t, r, 0, "restored from generation 1", "counter: resumed at 5", "lazy restore: all RAM present",
		"snapshot saved: generation 2", "counter: done, memory intact")
	noFailures(t, r)
	m := firstInsnLine.FindStringSubmatch(r.Output())
	if m == nil {
		t.Fatalf("no lazy restore report in:\n%s", r.Output())
	}
	if m[1] != m[2] || m[1] == "0" {
		t.Errorf("blocks filled before the guest ran: %s", m[0])
	}
	t.Logf("%s", m[0])
	if l, ok := r.Find("all RAM present"); ok {
		t.Logf("%s", l.Text)
	}
}

// TestLazyRestoreCorruptBlock: a byte changed in one block of the page
// data is not seen by the restore's open (the guest resumes), but the
// block fails its check when it is filled: the VM stops naming the block
// before the guest reads it (the guest never reports its memory intact),
// and the hypervisor stays up.
func TestLazyRestoreCorruptBlock(t *testing.T) {
	disk := newDisk(t, 256<<20)
	boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, OnLine: killOn("counter: saved at 5")})
	pageData, _ := ramLayout(t, disk)
	const bad = 20
	flipByte(t, disk, pageData+bad*blockSize+3*pageSize+123)
	r := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk})
	expect(t, r, 100, "restored from generation 1", fmt.Sprintf("RAM block %d (guest-physical", bad),
		"checksum mismatch", "the VM is stopped before the guest sees it", "alive: ok")
	if _, done := r.Find("counter: done"); done {
		t.Error("the guest ran to its end on a corrupt snapshot")
	}
}

// TestLazyRestoreChain: the counter guest's last save (at 15, an
// increment on its full save at 10) is a chain of two streams; it
// resumes lazily, not eagerly, and runs to its end with its 48 MiB
// pattern intact.
func TestLazyRestoreChain(t *testing.T) {
	disk := newDisk(t, 256<<20)
	boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, OnLine: killOn("counter: saved at 15")})
	r := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk})
	expect(t, r, 0, "restored from generation 3", "counter: resumed at 15", "lazy restore: all RAM present",
		"from 2 streams", "counter: done, memory intact")
	noFailures(t, r)
	if l, eager := r.Find("restoring it eagerly"); eager {
		t.Fatalf("the chain was restored eagerly: %s", l.Text)
	}
	m := firstInsnLine.FindStringSubmatch(r.Output())
	if m == nil {
		t.Fatalf("no lazy restore report in:\n%s", r.Output())
	}
	if m[1] != m[2] || m[1] == "0" {
		t.Errorf("blocks filled before the guest ran: %s", m[0])
	}
	t.Logf("%s", m[0])
	if l, ok := r.Find("all RAM present"); ok {
		t.Logf("%s", l.Text)
	}
}
