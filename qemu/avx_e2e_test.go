//go:build e2e

package qemu

import (
	"testing"
)

// TestAVXSnapshot: a guest's YMM registers, XCR0 and XSAVE size survive
// exits and a save/restore cycle under both CPU models; the same snapshot
// is refused, naming the missing features, on a CPU without AVX.
func TestAVXSnapshot(t *testing.T) {
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) {
			disk := newDisk(t, 64<<20)
			r := boot(t, Config{CPU: cpu, Guest: guest(t, "avx"), Disk: disk, OnLine: killOn("avx: saved")})
			expect(t, r, -1, "XSAVE enabled", "avx: saved, ymm intact")
			noFailures(t, r)
			r = boot(t, Config{CPU: cpu, Mode: "restore", Disk: disk})
			expect(t, r, 0, "restored from generation 1", "avx: resumed, ymm intact")
			noFailures(t, r)
			if cpu == "EPYC,+svm" {
				r = boot(t, Config{CPU: "EPYC,+svm,-avx,-avx2,-fma,-f16c", Mode: "restore", Disk: disk})
				expect(t, r, 102, "restore refused", "CPU features this host lacks")
			}
		})
	}
}
