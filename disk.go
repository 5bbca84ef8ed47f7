//go:build tamago && amd64

package main

import (
	"errors"
	"fmt"

	"tamavisor/boot"
	"tamavisor/boot/acpi"
	"tamavisor/boot/dmamem"
	"tamavisor/boot/nvme"
	"tamavisor/boot/pci"
	"tamavisor/boot/virtio/blk"
	"tamavisor/internal/x86"
	"tamavisor/snapshot"
)

// nvmeRegsMin is the smallest BAR0 the driver can use: the controller
// properties and the admin and one I/O queue pair's doorbells at the
// smallest stride (NVMe over PCIe Transport 1.0, section 3.1.2).
const nvmeRegsMin = nvme.SQ0TDBL + 4*4

// diskName names the snapshot disk's device, as the boot log does.
var diskName string

// openDisk finds the snapshot disk and opens the store on it, or returns
// nil. The board decides where to look: after a firmware boot (multiboot2,
// an ACPI RSDP) an NVMe controller on PCI Express, found through the MCFG
// table; after QEMU's PVH entry (microvm) virtio-blk on virtio-mmio.
func openDisk() *snapshot.Store {
	var (
		dev  snapshot.BlockDevice
		what string
		err  error
	)
	if bootACPI != nil {
		var d *nvme.Device
		if d, err = openNVMe(bootACPI); err == nil {
			id := d.Identity()
			dev, what = d, fmt.Sprintf("NVMe %s %s", id.Model, id.Serial)
			boot.BeforePowerOff(func() {
				if err := d.Shutdown(); err != nil {
					logf("snapshot disk: NVMe shutdown: %v", err)
				}
			})
		}
	} else {
		var d *blk.Device
		if d, err = blk.ProbeMicroVM(nil); err == nil {
			dev, what = d, "virtio-blk"
		} else if errors.Is(err, blk.ErrNotFound) {
			return nil // microvm without a disk: the usual case, no word
		}
	}
	if err != nil {
		logf("snapshot disk: none: %v", err)
		return nil
	}
	st, err := snapshot.Open(dev, snapshot.StoreOptions{Clock: x86.RDTSC})
	if err != nil {
		logf("snapshot disk unusable: %v", err)
		return nil
	}
	diskName = what
	st.Reserve()
	logf("snapshot disk: %s, %d MiB, %d MiB per snapshot slot", what, dev.Size()>>20, st.SlotSize()>>20)
	return st
}

// openNVMe finds the first NVMe controller (class 01h, subclass 08h,
// programming interface 02h) on PCI segment 0, through the ACPI MCFG table
// the RSDP leads to, and brings it up. Its registers are BAR0 (NVMe over
// PCIe Transport 1.0, section 2.1.10: MLBAR/MUBAR), which must be mapped
// uncached: OVMF places it far above RAM, where boot.MapMMIO maps it.
func openNVMe(rsdpCopy []byte) (*nvme.Device, error) {
	rsdp, err := acpi.ParseRSDP(rsdpCopy)
	if err != nil {
		return nil, err
	}
	mem := acpi.PhysMem{Start: boot.IdentityStart, End: boot.IdentityEnd}
	table, err := acpi.Find(mem, rsdp, acpi.SignatureMCFG)
	if err != nil {
		return nil, fmt.Errorf("no PCI Express configuration space: %w", err)
	}
	ecams, err := pci.ParseMCFG(table)
	if err != nil {
		return nil, err
	}
	var found []pci.Function
	var cfg pci.ECAMConfig
	for _, e := range ecams {
		if e.Segment != 0 {
			continue
		}
		size := (uint64(e.EndBus) - uint64(e.StartBus) + 1) << 20 // 1 MiB of configuration space per bus
		if _, _, err := boot.MMIOType(e.Base+uint64(e.StartBus)<<20, size); err != nil {
			return nil, fmt.Errorf("ECAM at %#x: %w", e.Base, err)
		}
		cfg = pci.ECAMConfig{ECAM: e}
		if found = pci.Find(pci.Enumerate(cfg, e.StartBus, e.EndBus), pci.ClassStorage, pci.SubclassNVM, pci.ProgIFNVMe); len(found) > 0 {
			break
		}
	}
	if len(found) == 0 {
		return nil, errors.New("no NVMe controller (PCI class 01h/08h/02h) on PCI segment 0")
	}
	f := found[0]
	bars, err := pci.BARs(cfg, f.Addr)
	if err != nil {
		return nil, err
	}
	if len(bars) == 0 || bars[0].Index != 0 || bars[0].IO || bars[0].Size < nvmeRegsMin || bars[0].Addr == 0 {
		return nil, fmt.Errorf("NVMe %v (%04x:%04x): BAR0 %+v is not a memory BAR of at least %d bytes the firmware assigned",
			f.Addr, f.VendorID, f.DeviceID, bars, nvmeRegsMin)
	}
	bar := bars[0]
	if err := boot.MapMMIO(bar.Addr, bar.Size); err != nil {
		return nil, fmt.Errorf("NVMe %v: BAR0: %w", f.Addr, err)
	}
	desc, uncached, err := boot.MMIOType(bar.Addr, bar.Size)
	if err != nil {
		return nil, fmt.Errorf("NVMe %v: BAR0: %w", f.Addr, err)
	}
	logf("NVMe controller %v (%04x:%04x): BAR0 %#x, %d KiB, %s", f.Addr, f.VendorID, f.DeviceID, bar.Addr, bar.Size>>10, desc)
	if !uncached {
		return nil, fmt.Errorf("NVMe %v: BAR0 at %#x is mapped cacheable (%s): device registers need UC", f.Addr, bar.Addr, desc)
	}
	pci.EnableMemory(cfg, f.Addr)
	return nvme.New(nvme.PhysRegs(bar.Addr), dmamem.Region{}, nvme.Options{Phys: dmamem.Phys})
}
