//go:build e2e

package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// First-use tests (issue 11): what a new user meets with `make qemu` and
// the README's commands: make builds what it runs, says in one line how
// the run ended and fails unless tamavisor's status is 0, the README's
// save/restore walkthrough, restoring a chosen generation, the snapshot
// key variables, and the CPU name and default CPU model.

// makeRun is one run of make in the repository root.
type makeRun struct {
	out    string // stdout (the console and make's own lines)
	stderr string
	ok     bool // make exited 0
}

// runMake runs make with args in the repository root. respond, if not nil,
// sees each stdout line as it arrives and returns what to type on QEMU's
// console (""; nothing); without it stdin is /dev/null. The whole process
// group is killed after timeout.
func runMake(t *testing.T, timeout time.Duration, respond func(line string) string, args ...string) makeRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append([]string{"-C", "..", "--no-print-directory"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var stdin io.WriteCloser
	if respond != nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		out.WriteString(l + "\n")
		if respond != nil {
			if in := respond(l); in != "" {
				stdin.Write([]byte(in))
			}
		}
	}
	if stdin != nil {
		stdin.Close()
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("make %v timed out after %v; output:\n%s\nstderr:\n%s", args, timeout, out.String(), stderr.String())
	}
	return makeRun{out: out.String(), stderr: stderr.String(), ok: err == nil}
}

// expectMake checks that the run printed every string in want (stdout or
// stderr) and that make succeeded or failed as ok says.
func expectMake(t *testing.T, r makeRun, ok bool, want ...string) {
	t.Helper()
	all := r.out + r.stderr
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("make output lacks %q", w)
		}
	}
	if r.ok != ok {
		t.Errorf("make succeeded: %v, want %v", r.ok, ok)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", r.out, r.stderr)
	}
}

// TestFirstUseMakeBuildsWhatItRuns: make qemu builds the guest it is given
// when it is one of guests/build/, every guest anyway, and creates a
// snapshot disk under out/ (dry runs: nothing is built or created).
func TestFirstUseMakeBuildsWhatItRuns(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		// -W: as if the source had changed.
		{[]string{"-W", "guests/long64.asm", "qemu", "GUEST=guests/build/long64.bin"}, "-o guests/build/long64.bin guests/long64.asm"},
		{[]string{"-W", "guests/long64.asm", "qemu", "GUEST=" + root + "/guests/build/long64.bin"}, "-o guests/build/long64.bin guests/long64.asm"},
		{[]string{"-W", "guests/long64.asm", "qemu-gdb", "GUEST=./guests/build/long64.bin"}, "-o guests/build/long64.bin guests/long64.asm"},
		{[]string{"-W", "guests/long64.asm", "qemu-linux", "GUEST=guests/build/long64.bin"}, "-o guests/build/long64.bin guests/long64.asm"},
		// make qemu builds all guests, so that the README's next command works.
		{[]string{"-W", "guests/ticker.asm", "qemu"}, "-o guests/build/ticker.bin guests/ticker.asm"},
		{[]string{"qemu", "DISK=out/firstuse-never-created.img"}, "truncate -s 2G out/firstuse-never-created.img"},
		{[]string{"qemu-gdb"}, "waiting for gdb on :1234"},
	} {
		r := runMake(t, 5*time.Minute, nil, append([]string{"-n"}, c.args...)...)
		expectMake(t, r, true, c.want)
	}
	if _, err := os.Stat(filepath.Join(root, "out/firstuse-never-created.img")); err == nil {
		t.Error("make -n created the disk")
	}
}

// TestFirstUseStatusLine: every make qemu run ends with one line telling a
// QEMU start-up failure, a machine that reset without a status, and each
// tamavisor status apart; make fails unless the status is 0.
func TestFirstUseStatusLine(t *testing.T) {
	tmp := t.TempDir()
	for _, c := range []struct {
		args []string
		ok   bool
		want []string
	}{
		{[]string{"GUEST=" + tmp + "/missing.bin"}, false, []string{"can't load", "make qemu: QEMU failed to start (exit 1)"}},
		{[]string{"DISK=" + tmp + "/missing/disk.img"}, false, []string{"Could not open", "make qemu: QEMU failed to start (exit 1)"}},
		{[]string{"CTL=" + tmp + "/missing/ctl.sock"}, false, []string{"Failed to bind socket", "make qemu: QEMU failed to start (exit 1)"}},
		{[]string{"EXTRA=-no-such-option"}, false, []string{"invalid option", "make qemu: QEMU failed to start (exit 1)"}},
		{[]string{"CPU=qemu64"}, false, []string{"make qemu: QEMU exited without a tamavisor status", "triple fault"}},
		{[]string{"CPU=max,-svm"}, false, []string{"SVM not available", "make qemu: tamavisor status 110: SVM not available on CPU model max,-svm"}},
		{[]string{"GUEST=guests/build/npf.bin"}, false, []string{"alive: ok", "make qemu: tamavisor status 100: a VM was stopped by the hypervisor"}},
		{[]string{"KEY=too short"}, false, []string{"unusable: 9 bytes", "make qemu: tamavisor status 101: guest image or configuration refused"}},
		{[]string{"RESTORE=1"}, false, []string{"RESTORE needs the snapshot disk: give DISK=file"}},
		{[]string{"MODE=bogus"}, false, []string{"MODE=bogus: make qemu knows MODE=clock and MODE=bench"}},
		{[]string{"RESTORE=3"}, false, []string{"RESTORE=3: say RESTORE=1 (or newest)", "RESTORE_GEN=<generation>"}},
		{[]string{"KEY=0123456789abcdef", "KEYFILE=/dev/null"}, false, []string{"KEY= and KEYFILE= both given"}},
		{[]string{"GUEST=guests/build/long64.bin"}, true, []string{"long64: PASS", "make qemu: tamavisor status 0: powered off: guest exit status 0"}},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := runMake(t, 5*time.Minute, nil, append([]string{"qemu"}, c.args...)...)
			expectMake(t, r, c.ok, c.want...)
			if n := strings.Count(r.out, "make qemu: "); strings.HasPrefix(c.want[len(c.want)-1], "make qemu: ") && n != 1 {
				t.Errorf("%d status lines, want 1", n)
			}
			if strings.Contains(r.out, "qemu exited with") {
				t.Error("the old status line is still printed")
			}
		})
	}
}

// TestFirstUseDefaultCPU: the default CPU model of make qemu boots without
// QEMU's warnings under TCG, keeps the decode path (no NRIP save) and XSAVE,
// and the tests' EPYC,+svm still boots.
func TestFirstUseDefaultCPU(t *testing.T) {
	r := runMake(t, 5*time.Minute, nil, "qemu")
	want := []string{"demo: bye", "XSAVE enabled", "make qemu: tamavisor status 0"}
	if Accel() == "tcg" {
		want = append(want, "instruction length: decoded from guest bytes")
		if strings.Contains(r.stderr, "warning") {
			t.Errorf("QEMU warns with the default CPU model:\n%s", r.stderr)
		}
	}
	expectMake(t, r, true, want...)
	r = runMake(t, 5*time.Minute, nil, "qemu", "CPU=EPYC,+svm")
	expectMake(t, r, true, "demo: bye", "make qemu: tamavisor status 0")
}

// TestFirstUseCPUName: a CPU model without a brand string (its maximum
// extended leaf is below 0x8000_0004) is named by its vendor, not by
// whatever the leaves past the maximum return.
func TestFirstUseCPUName(t *testing.T) {
	for _, c := range []struct{ cpu, name string }{
		{"max,-svm", "AuthenticAMD (no brand string)"},
		{"EPYC,+svm", "AMD EPYC"},
	} {
		r := boot(t, Config{CPU: c.cpu})
		l, ok := r.Find("tamavisor: starting on ")
		if !ok {
			t.Fatalf("%s: no start line:\n%s", c.cpu, r.Output())
		}
		for _, b := range []byte(l.Text) {
			if b < 0x20 || b > 0x7e {
				t.Errorf("%s: start line has byte %#x: %q", c.cpu, b, l.Text)
				break
			}
		}
		if !strings.Contains(l.Text, "starting on "+c.name) {
			t.Errorf("%s: start line %q, want the name %q", c.cpu, l.Text, c.name)
		}
	}
}

var tickRE = regexp.MustCompile(`^ticker: tick (\d+)$`)

// tick returns the tick number of a ticker line, or 0.
func tick(l string) int {
	m := tickRE.FindStringSubmatch(l)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestFirstUseWalkthrough follows README.md's "Saving and restoring a
// guest" with make: the ticker guest, a snapshot from the console monitor
// (with a snapshot key), "q"; then a fresh make qemu RESTORE=1 resumes that
// snapshot (KEYFILE holding the same key): the ticker counts on from where
// it was saved. Without the key the restore is refused.
func TestFirstUseWalkthrough(t *testing.T) {
	tmp := t.TempDir()
	disk := newDisk(t, 64<<20)
	const key = "first use snapshot key"
	keyfile := filepath.Join(tmp, "key")
	if err := os.WriteFile(keyfile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	last, saved := 0, false
	r := runMake(t, 5*time.Minute, func(l string) string {
		switch n := tick(l); {
		case n > 0 && !saved:
			last = n
			if n == 3 {
				return "\x1dsnapshot\ncontinue\n"
			}
		case strings.Contains(l, "snapshot saved: generation 1"):
			saved = true
		case n == last+2 && saved:
			return "q"
		}
		return ""
	}, "qemu", "GUEST=guests/build/ticker.bin", "DISK="+disk, "CTL="+filepath.Join(tmp, "tv.sock"), "KEY="+key)
	expectMake(t, r, true, "snapshots are authenticated", "ticker: counting seconds", "monitor, guest paused",
		"snapshot saved: generation 1", "back to the guest console", "ticker: bye after", "make qemu: tamavisor status 0")
	if !saved || last < 3 {
		t.Fatalf("no snapshot after tick 3 (last tick %d)", last)
	}

	first := 0
	r = runMake(t, 5*time.Minute, func(l string) string {
		if n := tick(l); n > 0 && first == 0 {
			first = n
			return "q"
		}
		return ""
	}, "qemu", "DISK="+disk, "RESTORE=1", "KEYFILE="+keyfile)
	expectMake(t, r, true, "restored from generation 1", "ticker: bye after", "make qemu: tamavisor status 0")
	if first != last+1 {
		t.Errorf("first tick after the restore is %d, want %d (saved after tick %d)", first, last+1, last)
	}

	r = runMake(t, 5*time.Minute, nil, "qemu", "DISK="+disk, "RESTORE=newest")
	expectMake(t, r, false, "restore refused", "authentication", "make qemu: tamavisor status 102")
}

// TestFirstUseRestoreGeneration: RESTORE_GEN=n resumes generation n, not
// only the newest; a generation not on the disk is refused with what the
// disk holds.
func TestFirstUseRestoreGeneration(t *testing.T) {
	disk := newDisk(t, 256<<20)
	// The counter guest saves itself at 5, 10 and 15: generation 1 in
	// slot 0, 2 (full) in slot 1, then 3, an increment chained on 2 in
	// slot 1, whose two commit records name 3 and 2.
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), Disk: disk, Timeout: 3 * time.Minute})
	expect(t, r, 0, "snapshot saved: generation 3, slot 1, increment on generation 2", "counter: done, memory intact")

	m := runMake(t, 5*time.Minute, nil, "qemu", "DISK="+disk, "RESTORE_GEN=7")
	expectMake(t, m, false, "restore refused: generation 7 is not on the snapshot disk",
		"generation 2", "generation 3", "make qemu: tamavisor status 102")

	// Generation 2, the older record of slot 1: the guest resumes at 10.
	// Its own save at 15 cannot be an increment on 2 (3 follows it in the
	// chain): it is a full save into slot 0, over generation 1, which
	// keeps both 2 and 3.
	m = runMake(t, 5*time.Minute, nil, "qemu", "DISK="+disk, "RESTORE_GEN=2")
	expectMake(t, m, true, "restored from generation 2", "counter: resumed at 10", "snapshot saved: generation 4, slot 0, full",
		"counter: done, memory intact", "make qemu: tamavisor status 0")

	m = runMake(t, 5*time.Minute, nil, "qemu", "DISK="+disk, "RESTORE=1")
	expectMake(t, m, true, "restored from generation 4", "counter: resumed at 15",
		"counter: done, memory intact", "make qemu: tamavisor status 0")

	// A generation that is not a number is refused before QEMU starts
	// tamavisor's restore.
	m = runMake(t, 5*time.Minute, nil, "qemu", "DISK="+disk, "RESTORE_GEN=two")
	expectMake(t, m, false, fmt.Sprintf("%q is not a snapshot generation", "two"))
}
