//go:build tamago && amd64

package main

import (
	"tamavisor/boot"
	"tamavisor/boot/fwcfg"
)

// cfgE820 is the fw_cfg file in which QEMU publishes the machine's memory
// map (hw/i386/fw_cfg.c; format in boot/memmap.go).
const cfgE820 = "etc/e820"

// poolRange returns the physical range of the guest pool, from the
// firmware's memory map: from boot.PoolStart to the end of the usable RAM
// containing it, below 4 GiB. Without a map, or when the runtime, the DMA
// region or the pool is not usable RAM, it prints why (and the map) and
// powers off: the pool must never hand out MMIO, reserved or firmware
// ranges as guest RAM.
func poolRange() (start, end uint64) {
	cfg, err := fwcfg.Open(boot.FWCfgPort{})
	if err != nil {
		logf("error: no memory map: %v", err)
		boot.PowerOff(boot.StatusInternal)
	}
	b, err := cfg.ReadFile(cfgE820, boot.MaxE820Entries*boot.E820EntrySize)
	if err != nil {
		logf("error: no memory map: %v", err)
		boot.PowerOff(boot.StatusInternal)
	}
	entries, err := boot.ParseE820(b)
	if err != nil {
		logf("error: memory map (fw_cfg %s) unusable: %v", cfgE820, err)
		boot.PowerOff(boot.StatusInternal)
	}
	end, err = boot.PoolEnd(entries)
	if err != nil {
		logf("error: %v (QEMU needs -m 2G); memory map (fw_cfg %s):\n%s", err, cfgE820, boot.FormatE820(entries))
		boot.PowerOff(boot.StatusInternal)
	}
	logf("memory map: %d entries; guest pool %#x-%#x (%d MiB)", len(entries), boot.PoolStart, end, (end-boot.PoolStart)>>20)
	return boot.PoolStart, end
}
