//go:build e2e

package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// End-to-end tests of an unmodified Linux guest: Debian's cloud kernel and
// a busybox initramfs, fetched and cached by guests/linux/fetch.sh (make
// test-e2e runs it; LINUX_DIR says where).

// linuxGuest returns the cached kernel, initramfs and kernel version.
func linuxGuest(t *testing.T) (kernel, initrd, version string) {
	t.Helper()
	dir := os.Getenv("LINUX_DIR")
	if dir == "" {
		t.Fatal("LINUX_DIR not set: run through make test-e2e")
	}
	kernel, initrd = filepath.Join(dir, "bzImage"), filepath.Join(dir, "initramfs.cpio.gz")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("Linux guest file missing (guests/linux/fetch.sh fetches it): %v", err)
		}
	}
	v, err := os.ReadFile(filepath.Join(dir, "kernel-version"))
	if err != nil {
		t.Fatal(err)
	}
	return kernel, initrd, strings.TrimSpace(string(v))
}

// script types on the console: each step waits for a console line that
// matches (exactly, or by prefix when the pattern ends in "*") and then
// types its input. Lines are recorded with their arrival times.
type script struct {
	mu    sync.Mutex
	steps []scriptStep
	seen  map[string]time.Time // step wait patterns seen, when
}

type scriptStep struct{ wait, typ string }

func newScript(steps ...scriptStep) *script {
	return &script{steps: steps, seen: map[string]time.Time{}}
}

func matches(line, pat string) bool {
	if p, ok := strings.CutSuffix(pat, "*"); ok {
		return strings.HasPrefix(line, p)
	}
	if p, ok := strings.CutPrefix(pat, "*"); ok {
		return strings.HasSuffix(line, p)
	}
	return line == pat
}

func (s *script) respond(l Line) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.steps) == 0 || !matches(l.Text, s.steps[0].wait) {
		return ""
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	s.seen[st.wait] = l.At
	return st.typ
}

// linuxBoot boots the Linux guest with cfg's extras and the script.
func linuxBoot(t *testing.T, cfg Config, s *script) *Result {
	t.Helper()
	if cfg.Mode != "restore" {
		cfg.Kernel, cfg.Initrd, _ = linuxGuest(t)
	}
	cfg.Respond = s.respond
	cfg.Timeout = 4 * time.Minute
	r := boot(t, cfg)
	if len(s.steps) > 0 {
		t.Errorf("the guest never printed %q (the step typing %q)", s.steps[0].wait, s.steps[0].typ)
	}
	return r
}

// interruptCounts parses "LOC:" and "ttyS0" lines of /proc/interrupts
// printed between two marker lines.
func interruptCounts(t *testing.T, r *Result, from, to string) (loc, tty int) {
	t.Helper()
	in := false
	for _, l := range r.Lines {
		switch {
		case l.Text == from:
			in = true
		case l.Text == to:
			return loc, tty
		case in:
			f := strings.Fields(l.Text)
			if len(f) < 2 {
				continue
			}
			n, err := strconv.Atoi(f[1])
			if err != nil {
				continue
			}
			if f[0] == "LOC:" {
				loc = n
			}
			if strings.HasSuffix(l.Text, "ttyS0") {
				tty = n
			}
		}
	}
	t.Errorf("no interrupt counts between %q and %q", from, to)
	return 0, 0
}

// TestLinuxShell boots Linux to its busybox shell under both CPU models,
// types commands and checks their output, the interrupt counters, the
// guest's sleep against host time, and a clean poweroff.
func TestLinuxShell(t *testing.T) {
	_, _, version := linuxGuest(t)
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) {
			// Markers are computed by the shell ($((...))), so that the
			// terminal's echo of the typed line never matches them.
			s := newScript(
				scriptStep{"tamavisor-linux: init*", "uname -r; echo R=$((6*7))\n"},
				scriptStep{"R=42", "echo I$((1)); cat /proc/interrupts; sleep 1; echo I$((2)); cat /proc/interrupts; echo I$((3))\n"},
				scriptStep{"I3", "echo S$((1)); sleep 2; echo S$((2))\n"},
				scriptStep{"S1", ""},
				scriptStep{"S2", "grep -c -w avx2 /proc/cpuinfo | sed s/^/AVX2=/\n"},
				scriptStep{"AVX2=*", "poweroff\n"},
			)
			r := linuxBoot(t, Config{CPU: cpu}, s)
			expect(t, r, 0, version, "R=42", "AVX2=1", "tamavisor-linux: powering off", "the guest powered off by ACPI S5")
			loc1, tty1 := interruptCounts(t, r, "I1", "I2")
			loc2, tty2 := interruptCounts(t, r, "I2", "I3")
			if loc2 <= loc1 || tty2 <= tty1 {
				t.Errorf("interrupts did not rise over a second: timer %d -> %d, ttyS0 %d -> %d", loc1, loc2, tty1, tty2)
			}
			if a, b := s.seen["S1"], s.seen["S2"]; !a.IsZero() && !b.IsZero() {
				d := b.Sub(a)
				t.Logf("sleep 2 took %v of host time", d.Round(time.Millisecond))
				if d < 1600*time.Millisecond || d > 2400*time.Millisecond {
					t.Errorf("sleep 2 took %v of host time, want 2 s within 20%%", d)
				}
			}
			for _, l := range r.Lines {
				for _, bad := range []string{"Oops", "BUG:", "WARNING:", "Call Trace", "unchecked MSR access"} {
					// QEMU's own q35 machine with -cpu EPYC prints the
					// SRSO warning too: the model lacks the mitigation bits.
					if strings.Contains(l.Text, bad) && !(cpu == "EPYC,+svm" && strings.Contains(l.Text, "Speculative Return Stack Overflow")) {
						t.Errorf("the kernel reported a problem: %q", l.Text)
					}
				}
			}
		})
	}
}

// TestLinuxPanic: a kernel that panics (no init) is reported as a stopped
// guest and the hypervisor runs its health check after it.
func TestLinuxPanic(t *testing.T) {
	r := linuxBoot(t, Config{CPU: "EPYC,+svm", Cmdline: "console=ttyS0 panic=-1 reboot=t rdinit=/nonexistent init=/nonexistent"},
		newScript())
	expect(t, r, 100, "Kernel panic", "vm linux: stopped:", "alive: ok")
}

// TestLinuxSnapshot saves a running Linux from the control channel while a
// background loop prints the time, kills QEMU, and restores the snapshot
// in a fresh QEMU: a shell variable set before the save is still set, the
// loop keeps printing, the guest's clock never goes back, and new
// commands work.
func TestLinuxSnapshot(t *testing.T) {
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) { linuxSnapshot(t, cpu) })
	}
}

func linuxSnapshot(t *testing.T, cpu string) {
	disk := newDisk(t, 512<<20)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ctl := tool(t, "tamavisor")
	var answer string
	s := newScript(
		scriptStep{"tamavisor-linux: init*", "X=kept$((40+2)); (while true; do echo T=$(date +%s); sleep 1; done) &\n"},
		scriptStep{"T=*", ""},
		scriptStep{"T=*", ""},
	)
	r1 := linuxBoot(t, Config{CPU: cpu, Disk: disk, Control: sock,
		OnLine: func(l Line) bool {
			if answer == "" && strings.HasPrefix(l.Text, "T=") && len(s.steps) == 0 {
				out, err := runTool(ctl, "snapshot", "--socket", sock, "--timeout", "3m")
				answer = out
				if err != nil {
					answer += "\nexit: " + err.Error()
				}
				return true
			}
			return false
		}}, s)
	m := regexp.MustCompile(`snapshot saved: generation (\d+)`).FindStringSubmatch(answer)
	if m == nil || strings.Contains(answer, "exit:") {
		t.Fatalf("tamavisor snapshot answered %q; output:\n%s", answer, r1.Output())
	}
	before := times(r1)
	s2 := newScript(
		scriptStep{"tamavisor: vm linux: restored from*", ""},
		scriptStep{"T=*", "echo V=$X\n"},
		scriptStep{"V=kept42", ""},
		scriptStep{"T=*", ""},
		scriptStep{"T=*", "poweroff\n"},
	)
	r2 := linuxBoot(t, Config{CPU: cpu, Mode: "restore", Disk: disk}, s2)
	expect(t, r2, 0, "restored from generation "+m[1], "V=kept42", "the guest powered off by ACPI S5")
	after := times(r2)
	if len(before) == 0 || len(after) < 3 {
		t.Fatalf("time lines before %v, after %v", before, after)
	}
	all := append(before, after...)
	for i := 1; i < len(all); i++ {
		if all[i] < all[i-1] {
			t.Errorf("the guest's clock went back: %v", all)
			break
		}
	}
}

func runTool(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// times returns the T=<unix seconds> values a run printed.
func times(r *Result) []int64 {
	var ts []int64
	for _, l := range r.Lines {
		if v, ok := strings.CutPrefix(l.Text, "T="); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				ts = append(ts, n)
			}
		}
	}
	return ts
}
