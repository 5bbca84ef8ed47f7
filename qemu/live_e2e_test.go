//go:build e2e

package qemu

import (
	"regexp"
	"strconv"
	"testing"
)

// liveLine is the hypervisor's report of a live save.
var liveLine = regexp.MustCompile(`snapshot saved: generation (\d+).* live in [0-9.]+ s: guest paused ([0-9.]+) ms at the request, at most ([0-9.]+) ms at a time after \((\d+) turns\), (\d+) pages copied`)

// TestLiveSnapshot: the live guest asks for a live save and writes every
// page of its RAM while the hypervisor saves it. The guest sees its own
// writes, the save copies the pages it wrote ahead of it (the report
// says how many), and a restore resumes the guest with the RAM as it was
// at the request.
func TestLiveSnapshot(t *testing.T) {
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) {
			disk := newDisk(t, 256<<20)
			r := boot(t, Config{CPU: cpu, Guest: guest(t, "live"), Disk: disk})
			expect(t, r, 0, "live: guest sees the new content", "live: saved", "vm live: exited with status 0")
			noFailures(t, r)
			m := liveLine.FindStringSubmatch(r.Output())
			if m == nil {
				t.Fatalf("no live save report in:\n%s", r.Output())
			}
			copies, _ := strconv.Atoi(m[5])
			if copies == 0 {
				t.Errorf("the guest wrote every page during the save, but none was copied first: %s", m[0])
			}
			t.Logf("%s", m[0])
			r = boot(t, Config{CPU: cpu, Mode: "restore", Disk: disk})
			expect(t, r, 0, "restored from generation 1", "live: resumed, the snapshot holds the old content")
			noFailures(t, r)
		})
	}
}
