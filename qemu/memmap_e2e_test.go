//go:build e2e

package qemu

import (
	"cmp"
	"fmt"
	"testing"
	"time"

	layout "tamavisor/boot" // renamed: boot is the test helper that boots QEMU
)

// memMapTimeout bounds a boot that refuses at once: a refusal must power
// off, not hang.
const memMapTimeout = 30 * time.Second

// TestMemoryMapRefused boots with too little RAM for the memory layout:
// tamavisor must read QEMU's memory map (fw_cfg etc/e820), name the range
// that is not RAM, print the map and power off with StatusInternal before
// it enables SVM or starts a guest.
func TestMemoryMapRefused(t *testing.T) {
	for _, tc := range []struct {
		ram, fault string
		ramEnd     uint64
	}{
		// RAM ends inside the DMA region.
		{"800M", fmt.Sprintf("DMA region [%#x, %#x) is not usable RAM", layout.DMAStart, layout.DMAStart+layout.DMASize), 800 << 20},
		// RAM ends where the pool would start.
		{"832M", fmt.Sprintf("guest pool start [%#x, ", layout.PoolStart), layout.PoolStart},
	} {
		t.Run(tc.ram, func(t *testing.T) {
			r := boot(t, Config{CPU: "EPYC,+svm", RAM: tc.ram, Timeout: memMapTimeout})
			expect(t, r, layout.StatusInternal, "tamavisor: error: "+tc.fault,
				"(QEMU needs -m 2G); memory map (fw_cfg etc/e820):",
				fmt.Sprintf("  [0x%016x-0x%016x] usable", 0, tc.ramEnd-1))
			for _, s := range []string{"SVM enabled", "vm demo: starting", "tamavisor: memory map:"} {
				if _, bad := r.Find(s); bad {
					t.Errorf("refused memory map, yet the output has %q", s)
				}
			}
		})
	}
}

// TestMemoryMapPool boots with enough RAM: the pool runs from PoolStart to
// the end of the RAM below 4 GiB (QEMU's microvm puts RAM beyond 3 GiB
// above 4 GiB), and the demo guest runs.
func TestMemoryMapPool(t *testing.T) {
	const lowRAMMax = 3 << 30 // microvm's RAM below 4 GiB at most
	for _, tc := range []struct {
		ram     string
		poolEnd uint64
	}{
		{"", 2 << 30}, // the default, 2G
		{"1G", 1 << 30},
		{"4G", lowRAMMax},
	} {
		t.Run("m="+cmp.Or(tc.ram, "default"), func(t *testing.T) {
			r := boot(t, Config{CPU: "EPYC,+svm", RAM: tc.ram})
			expect(t, r, 0, fmt.Sprintf("guest pool %#x-%#x (%d MiB)", layout.PoolStart, tc.poolEnd, (tc.poolEnd-layout.PoolStart)>>20),
				"vm demo: exited with status 0")
		})
	}
}
