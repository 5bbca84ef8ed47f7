//go:build e2e

package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// End-to-end save/restore: the counter guest (guests/counter.asm) counts
// 1..15, snapshots itself after every 5th count, and checks that its TSC
// never goes backwards and its 48 MiB memory pattern survives.

// newDisk makes an empty raw disk image of size bytes.
func newDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// killOn returns an OnLine that kills QEMU at the first line containing s.
func killOn(s string) func(Line) bool {
	return func(l Line) bool { return strings.Contains(l.Text, s) }
}

// guestStream is what the guest printed: hypervisor messages (which start
// with "tamavisor:", possibly after a partial guest line) are cut out, so
// a line the guest was printing when a snapshot was taken joins up.
func guestStream(lines []Line) string {
	var b strings.Builder
	for _, l := range lines {
		if i := strings.Index(l.Text, "tamavisor:"); i >= 0 {
			b.WriteString(l.Text[:i])
			continue
		}
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// upTo returns the lines up to and including the first containing s.
func upTo(t *testing.T, r *Result, s string) []Line {
	t.Helper()
	for i, l := range r.Lines {
		if strings.Contains(l.Text, s) {
			return r.Lines[:i+1]
		}
	}
	t.Fatalf("no line with %q in:\n%s", s, r.Output())
	return nil
}

// after returns the lines after the first containing s.
func after(t *testing.T, r *Result, s string) []Line {
	t.Helper()
	for i, l := range r.Lines {
		if strings.Contains(l.Text, s) {
			return r.Lines[i+1:]
		}
	}
	t.Fatalf("no line with %q in:\n%s", s, r.Output())
	return nil
}

var countRE = regexp.MustCompile(`(?m)^count: (\d+)$`)

// counts lists the "count: N" lines of a guest stream.
func counts(stream string) []int {
	var n []int
	for _, m := range countRE.FindAllStringSubmatch(stream, -1) {
		v, _ := strconv.Atoi(m[1])
		n = append(n, v)
	}
	return n
}

func expectSequence(t *testing.T, got []int, first, last int) {
	t.Helper()
	ok := len(got) == last-first+1
	for i := 0; ok && i < len(got); i++ {
		ok = got[i] == first+i
	}
	if !ok {
		t.Errorf("count sequence %v, want %d..%d without gap or repeat", got, first, last)
	}
}

func noFailures(t *testing.T, r *Result) {
	t.Helper()
	if l, bad := r.Find("FAIL"); bad {
		t.Errorf("guest failed: %q", l.Text)
	}
}

// TestSaveRestoreCycles saves at 5, kills QEMU, restores in a fresh QEMU
// (no guest given: the disk is all it needs), saves at 10, kills, restores
// again and runs to the end: the guest's count continues with no gap or
// repeat, its TSC never goes backwards and its memory is intact.
func TestSaveRestoreCycles(t *testing.T) {
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) {
			disk := newDisk(t, 256<<20)
			r1 := boot(t, Config{CPU: cpu, Guest: guest(t, "counter"), Disk: disk, OnLine: killOn("counter: saved at 5")})
			if !r1.Killed {
				t.Fatalf("first run was not killed after its save:\n%s", r1.Output())
			}
			expect(t, r1, -1, "snapshot disk: virtio-blk", "snapshot saved: generation 1")

			r2 := boot(t, Config{CPU: cpu, Mode: "restore", Disk: disk, OnLine: killOn("counter: saved at 10")})
			if !r2.Killed {
				t.Fatalf("second run was not killed after its save:\n%s", r2.Output())
			}
			expect(t, r2, -1, "restored from generation 1", "counter: resumed at 5", "snapshot saved: generation 2")

			r3 := boot(t, Config{CPU: cpu, Mode: "restore", Disk: disk})
			expect(t, r3, 0, "restored from generation 2", "counter: resumed at 10", "counter: saved at 15",
				"counter: done, memory intact", "vm counter: exited with status 0")

			stream := guestStream(upTo(t, r1, "snapshot saved: generation 1")) +
				guestStream(after(t, r2, "restored from generation 1")[:len(upTo(t, &Result{Lines: after(t, r2, "restored from generation 1")}, "snapshot saved: generation 2"))]) +
				guestStream(after(t, r3, "restored from generation 2"))
			expectSequence(t, counts(stream), 1, 15)
			for _, r := range []*Result{r1, r2, r3} {
				noFailures(t, r)
			}
		})
	}
}

// TestRestoreRefusesCorruption flips one byte of the saved snapshot's
// RAM block table on the disk image: the (lazy) restore refuses, naming
// the chunk, before the guest runs, and the hypervisor stays up (it runs
// its health-check guest). Damage to page data is found when its block
// is filled: TestLazyRestoreCorruptBlock.
func TestRestoreRefusesCorruption(t *testing.T) {
	disk := newDisk(t, 256<<20)
	boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, OnLine: killOn("counter: saved at 5")})
	_, bodyEnd := ramLayout(t, disk)
	flipByte(t, disk, bodyEnd-5) // a block sum: covered by the chunk's CRC, digest and HMAC
	r := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk})
	expect(t, r, 102, "restore refused", `chunk "ram"`, "checksum", "alive: ok")
	if _, resumed := r.Find("counter: resumed"); resumed {
		t.Error("a corrupt snapshot was resumed")
	}
}

// TestKillDuringSave cuts power in the middle of the second save (the
// counter's full save at 10): the first snapshot restores. Disk writes are
// throttled (16 MiB/s: the counter's 48 MiB take 3 s) so that the power
// cut lands in the save, not after it.
func TestKillDuringSave(t *testing.T) {
	disk := newDisk(t, 256<<20)
	saved := false
	r1 := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, DiskWriteBPS: 16 << 20, OnLine: func(l Line) bool {
		if strings.Contains(l.Text, "counter: saved at 5") {
			saved = true
		}
		// Kill while the second snapshot's data is being written.
		return saved && strings.Contains(l.Text, "tamavisor: snapshot 50%")
	}})
	if !r1.Killed {
		t.Fatalf("not killed during the second save:\n%s", r1.Output())
	}
	if _, done := r1.Find("generation 2"); done {
		t.Fatal("the second save completed before the kill")
	}
	r2 := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk, OnLine: killOn("count: 7")})
	expect(t, r2, -1, "restored from generation 1", "counter: resumed at 5", "count: 6")
}

// TestDiskTooSmall: a save that does not fit fails with a clear error and
// the guest keeps running to its end.
func TestDiskTooSmall(t *testing.T) {
	disk := newDisk(t, 8<<20)
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk})
	expect(t, r, 0, "warning: the snapshot disk's slots hold", "snapshot failed, the guest keeps running",
		"counter: snapshot error", "counter: done, memory intact")
}

// TestInspectBareMetalDisk reads the disk the bare-metal code wrote with
// the host tool.
func TestInspectBareMetalDisk(t *testing.T) {
	disk := newDisk(t, 256<<20)
	boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, OnLine: killOn("counter: saved at 5")})
	out, err := exec.Command(tool(t, "tamavisor-snap"), "inspect", disk).CombinedOutput()
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	for _, want := range []string{`vm "counter"`, "generation 1", "dev:uart16550", "vcpu", "ram", "64 MiB"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(tool(t, "tamavisor-snap"), "verify", disk).CombinedOutput(); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}

// TestControlChannel requests a save from the host over the second serial
// port, as bhyvectl does over its socket, then restores it.
func TestControlChannel(t *testing.T) {
	disk := newDisk(t, 256<<20)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ctl := tool(t, "tamavisor")
	answer := make(chan string, 1)
	var got string
	r1 := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, Control: sock,
		OnLine: func(l Line) bool {
			if l.Text == "count: 1" {
				go func() {
					out, err := exec.Command(ctl, "snapshot", "--socket", sock).CombinedOutput()
					if err != nil {
						out = append(out, []byte("\nexit: "+err.Error())...)
					}
					answer <- string(out)
				}()
			}
			// Power off once the host command has its answer.
			select {
			case got = <-answer:
				return true
			default:
				return false
			}
		}})
	if got == "" {
		t.Fatalf("no answer on the control channel:\n%s", r1.Output())
	}
	// The guest's own save at count 5 may come first: find the generation
	// the host's request made.
	m := regexp.MustCompile(`snapshot saved: generation (\d+)`).FindStringSubmatch(got)
	if m == nil || strings.Contains(got, "exit:") {
		t.Fatalf("tamavisor snapshot answered: %q", got)
	}
	gen := "generation " + m[1]
	r2 := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk,
		Extra: []string{"-fw_cfg", "name=opt/tamavisor/restore-generation,string=" + m[1]}})
	expect(t, r2, 0, "restored from "+gen, "counter: done, memory intact")
	// The host's save is live: it holds the guest as it was when the
	// save started, and the guest ran on while it was written.
	stream := guestStream(upTo(t, r1, "snapshot started, live")) + guestStream(after(t, r2, "restored from "+gen))
	seq := counts(stream)
	if len(seq) == 0 {
		t.Fatalf("no counts:\n%s", stream)
	}
	expectSequence(t, seq, 1, 15)
	noFailures(t, r2)
}

// TestMonitor drives the console monitor: escape, info, snapshot, continue.
func TestMonitor(t *testing.T) {
	disk := newDisk(t, 256<<20)
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk,
		Input: "\x1dinfo\nsnapshot\ncontinue\n", OnLine: killOn("count: 3")})
	expect(t, r, -1, "monitor, guest paused", "tamavisor> ", "vm counter:", "snapshot saved: generation 1",
		"back to the guest console", "count: 1")
}

var tools = map[string]string{}

// tool builds a host command of the repository once per test binary.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, ok := tools[name]; ok {
		return p
	}
	p := filepath.Join(os.TempDir(), "tamavisor-e2e-"+name)
	if out, err := exec.Command("go", "build", "-o", p, "../cmd/"+name).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	tools[name] = p
	return p
}

// TestKeyedSnapshot: a snapshot saved with a key restores only with that
// key; without it the restore is refused as unauthenticated.
func TestKeyedSnapshot(t *testing.T) {
	disk := newDisk(t, 256<<20)
	key := []string{"-fw_cfg", "name=opt/tamavisor/snapshot-key,string=correct horse battery staple"}
	boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, Extra: key, OnLine: killOn("counter: saved at 5")})
	r := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk})
	expect(t, r, 102, "restore refused", "authentication")
	r = boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk,
		Extra: []string{"-fw_cfg", "name=opt/tamavisor/snapshot-key,string=wrong horse battery staple"}})
	expect(t, r, 102, "restore refused", "authentication")
	r = boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", Disk: disk, Extra: key, OnLine: killOn("count: 6")})
	expect(t, r, -1, "snapshots are authenticated", "restored from generation 1", "counter: resumed at 5")
	// A key too short to be one is refused, not ignored.
	r = boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk,
		Extra: []string{"-fw_cfg", "name=opt/tamavisor/snapshot-key,string=short"}})
	expect(t, r, 101, "snapshot key opt/tamavisor/snapshot-key unusable: 5 bytes")
}
