//go:build e2e

package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// End-to-end tests: boot the real tamavisor.elf in QEMU (make test-e2e sets
// TAMAVISOR_ELF and GUESTS_DIR) and check what the hypervisor and guests
// print and how QEMU exits.

var cpus = []string{"EPYC,+svm", "max"} // no NRIP save / with VGIF etc.

func boot(t *testing.T, cfg Config) *Result {
	t.Helper()
	cfg.ELF = os.Getenv("TAMAVISOR_ELF")
	cfg.QEMU = os.Getenv("QEMU")
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.ELF == "" {
		t.Fatal("TAMAVISOR_ELF not set: run through make test-e2e")
	}
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.TimedOut {
		t.Fatalf("QEMU timed out; output:\n%s", res.Output())
	}
	return res
}

func guest(t *testing.T, name string) string {
	dir := os.Getenv("GUESTS_DIR")
	if dir == "" {
		t.Fatal("GUESTS_DIR not set: run through make test-e2e")
	}
	return filepath.Join(dir, name+".bin")
}

func expect(t *testing.T, r *Result, status int, lines ...string) {
	t.Helper()
	out := r.Output()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("output lacks %q", l)
		}
	}
	// status -1: the run was killed on purpose; no status to check.
	if s, ok := r.Status(); status >= 0 && (!ok || s != status) {
		t.Errorf("QEMU exit %d (status %d, %v), want tamavisor status %d", r.ExitCode, s, ok, status)
	}
	if t.Failed() {
		t.Logf("output:\n%s\nstderr:\n%s", out, r.Stderr)
	}
}

func TestGuestsPass(t *testing.T) {
	for _, cpu := range cpus {
		for _, g := range []string{"real16", "prot32", "long64"} {
			t.Run(cpu+"/"+g, func(t *testing.T) {
				r := boot(t, Config{CPU: cpu, Guest: guest(t, g)})
				expect(t, r, 0, g+": start", g+": hello via CONSOLE_WRITE", g+": PASS",
					"vm "+g+": exited with status 0")
				if _, bad := r.Find(g + ": FAIL"); bad {
					t.Error("guest reported a failed check")
				}
			})
		}
	}
}

func TestDemoGuest(t *testing.T) {
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) {
			r := boot(t, Config{CPU: cpu})
			expect(t, r, 0, "SVM enabled", "running the built-in demo guest",
				"demo: cpu vendor: AuthenticAMD", "demo: hypervisor: TamaVisorHV", "vm demo: exited with status 0")
		})
	}
}

func TestInstructionLengthSource(t *testing.T) {
	// Under TCG neither model has NRIP save: tamavisor must say it decodes.
	// Under KVM on a real AMD host, it must use NextRIP.
	r := boot(t, Config{CPU: "EPYC,+svm"})
	want := "decoded from guest bytes"
	if Accel() == "kvm" {
		want = "from NextRIP"
	}
	expect(t, r, 0, "instruction length: "+want)
}

// TestConsoleInput types on the console: the bytes reach the guest through
// the hypervisor's UART model.
func TestConsoleInput(t *testing.T) {
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "echo"), Input: "hello tamavisor\nquit\n"})
	expect(t, r, 0, "echo: ready", "echo: got hello tamavisor", "echo: bye")
}

func TestNoSVM(t *testing.T) {
	for _, cpu := range []string{"qemu64,-svm,+pdpe1gb,+rdrand", "qemu64,+svm,+pdpe1gb,+rdrand"} {
		t.Run(cpu, func(t *testing.T) {
			r := boot(t, Config{CPU: cpu})
			expect(t, r, 110, "tamavisor: error: SVM not available")
			if _, ran := r.Find("vm demo: starting"); ran {
				t.Error("a guest started without SVM")
			}
		})
	}
}

func TestMisbehavingGuests(t *testing.T) {
	cases := []struct{ guest, first, report string }{
		{"npf", "npf: touching unbacked memory", "stopped: nested page fault: guest touched guest-physical address 0x200000"},
		{"triple", "triple: faulting", "stopped: triple fault (shutdown)"},
	}
	for _, cpu := range cpus {
		for _, c := range cases {
			t.Run(cpu+"/"+c.guest, func(t *testing.T) {
				r := boot(t, Config{CPU: cpu, Guest: guest(t, c.guest)})
				expect(t, r, 100, c.first, "vm "+c.guest+": "+c.report,
					"hypervisor still running", "alive: ok", "vm alive: exited with status 0")
			})
		}
	}
}

func TestBadImage(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.bin")
	if err := os.WriteFile(bad, []byte("this is not a guest image, just text padded out to sixty-four bytes."), 0o644); err != nil {
		t.Fatal(err)
	}
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: bad})
	expect(t, r, 101, "guest image refused: bad magic")
}

// TestClock checks time.Sleep on the calibrated TSC against the host's
// clock: two markers 2 s apart by the hypervisor's clock must arrive 2 s
// apart within 5%.
func TestClock(t *testing.T) {
	r := boot(t, Config{CPU: "EPYC,+svm", Mode: "clock"})
	m0, ok0 := r.Find("clock: mark 0")
	m1, ok1 := r.Find("clock: mark 1")
	if !ok0 || !ok1 {
		t.Fatalf("markers missing:\n%s", r.Output())
	}
	gap := m1.At.Sub(m0.At)
	if ratio := gap.Seconds() / 2; ratio < 0.95 || ratio > 1.05 {
		t.Errorf("2 s of hypervisor time took %v of host time (ratio %.3f)", gap, ratio)
	}
	t.Logf("2 s sleep measured on the host as %v", gap.Round(time.Millisecond))
}

func TestBenchMode(t *testing.T) {
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "bench"), Mode: "bench"})
	expect(t, r, 0, "bare VMRUN/#VMEXIT floor", "CPUID exit, full Go exit path",
		"port I/O exit to UART model", "VM creation to guest first instruction")
}

// TestMakeQemu runs the README's command for running tamavisor, with and
// without the optional variables.
func TestMakeQemu(t *testing.T) {
	disk := newDisk(t, 64<<20)
	for _, args := range [][]string{
		{"qemu"},
		{"qemu", "GUEST=guests/build/long64.bin", "DISK=" + disk, "CTL=" + filepath.Join(t.TempDir(), "ctl.sock")},
	} {
		cmd := exec.Command("make", append([]string{"-C", "..", "--no-print-directory"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %v: %v\n%s", args, err, out)
		}
		want := "demo: bye"
		if len(args) > 1 {
			want = "long64: PASS"
		}
		if !strings.Contains(string(out), want) || !strings.Contains(string(out), "tamavisor status 0") {
			t.Errorf("make %v output lacks %q or status 0:\n%s", args, want, out)
		}
	}
}
