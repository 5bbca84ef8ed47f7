//go:build tamago && amd64

package main

import (
	"errors"
	"fmt"

	"tamavisor/boot"
	"tamavisor/boot/fwcfg"
)

// cfgE820 is the fw_cfg file in which QEMU publishes the machine's memory
// map (hw/i386/fw_cfg.c; format in boot/memmap.go).
const cfgE820 = "etc/e820"

// bootACPI is the ACPI RSDP the boot loader passed (multiboot2 tags 14/15),
// nil otherwise: kept for host ACPI support.
var bootACPI []byte

// poolRange returns the physical range of the guest pool, from the
// firmware's memory map: from boot.PoolStart to the end of the usable RAM
// containing it, below 4 GiB. The map comes from the boot protocol: GRUB's
// multiboot2 information on UEFI boards, QEMU's fw_cfg etc/e820 after its
// PVH entry (-kernel). Without a map, or when the runtime, the DMA region
// or the pool is not usable RAM, it prints why (and the map) and powers
// off: the pool must never hand out MMIO, reserved or firmware ranges as
// guest RAM.
func poolRange() (start, end uint64) {
	entries, source, hint := memoryMap()
	end, err := boot.PoolEnd(entries)
	if err != nil {
		logf("error: %v (%s); memory map (%s):\n%s", err, hint, source, boot.FormatE820(entries))
		boot.PowerOff(boot.StatusInternal)
	}
	logf("memory map: %d entries (%s); guest pool %#x-%#x (%d MiB)\n%s", len(entries), source,
		boot.PoolStart, end, (end-boot.PoolStart)>>20, boot.FormatE820(entries))
	return boot.PoolStart, end
}

// memoryMap returns the machine's memory map, where it came from, and
// what to do when it is too small; it powers off when there is none.
func memoryMap() (entries []boot.E820Entry, source, hint string) {
	info, addr, err := boot.Multiboot2()
	if !errors.Is(err, boot.ErrNotMultiboot2) {
		if err != nil {
			logf("error: boot protocol multiboot2: %v", err)
			boot.PowerOff(boot.StatusInternal)
		}
		logf("boot protocol: multiboot2 from %q, boot information at %#x%s", info.Loader, addr, rsdpNote(info))
		if info.Memory == nil {
			logf("error: the boot loader passed no memory map (multiboot2 tag %d)", boot.MB2TagMmap)
			boot.PowerOff(boot.StatusInternal)
		}
		bootACPI = info.RSDP
		return info.Memory, "multiboot2", fmt.Sprintf("tamavisor needs usable RAM from %d MiB to %d MiB",
			boot.RuntimeStart>>20, boot.PoolStart>>20)
	}
	logf("boot protocol: PVH (QEMU -kernel)")
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
	entries, err = boot.ParseE820(b)
	if err != nil {
		logf("error: memory map (fw_cfg %s) unusable: %v", cfgE820, err)
		boot.PowerOff(boot.StatusInternal)
	}
	return entries, "fw_cfg " + cfgE820, "QEMU needs -m 2G"
}

// rsdpNote describes the ACPI RSDP the boot loader passed.
func rsdpNote(info *boot.Multiboot2Info) string {
	switch info.RSDPTag {
	case boot.MB2TagACPINew:
		return ", ACPI 2.0+ RSDP"
	case boot.MB2TagACPIOld:
		return ", ACPI 1.0 RSDP"
	}
	return ", no ACPI RSDP"
}
