//go:build e2e

package qemu

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreemptSpinningGuest: a guest that never exits (`jmp $` with
// interrupts off) is taken back by the host preemption timer. The console
// monitor opens on Ctrl-], shows the guest's state, saves it and quits;
// the control channel answers while it spins; the snapshot restores into a
// guest that spins again and can be quit the same way.
func TestPreemptSpinningGuest(t *testing.T) {
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) {
			disk := newDisk(t, 64<<20)
			sock := filepath.Join(t.TempDir(), "ctl.sock")
			ctl := tool(t, "tamavisor")
			var answer string
			r := boot(t, Config{CPU: cpu, Guest: guest(t, "spin"), Disk: disk, Control: sock,
				Respond: func(l Line) string {
					switch {
					case strings.Contains(l.Text, "spin: start"):
						// While the guest spins: the control channel
						// answers, then Ctrl-] opens the monitor.
						out, err := exec.Command(ctl, "info", "--socket", sock, "--timeout", "30s").CombinedOutput()
						answer = string(out)
						if err != nil {
							answer += "\nexit: " + err.Error()
						}
						return "\x1d"
					case strings.Contains(l.Text, "monitor, guest paused"):
						return "info\nsnapshot\nquit\n"
					}
					return ""
				}})
			expect(t, r, 0, "spin: start", "monitor, guest paused", "snapshot saved: generation 1", "quit from the monitor")
			if !strings.Contains(answer, "vm spin:") || strings.Contains(answer, "exit:") {
				t.Errorf("tamavisor info while the guest spun answered %q", answer)
			}
			r = boot(t, Config{CPU: cpu, Mode: "restore", Disk: disk,
				Respond: func(l Line) string {
					if strings.Contains(l.Text, "resuming") {
						return "\x1d"
					}
					if strings.Contains(l.Text, "monitor, guest paused") {
						return "quit\n"
					}
					return ""
				}})
			expect(t, r, 0, "restored from generation 1", "monitor, guest paused", "quit from the monitor")
		})
	}
}
