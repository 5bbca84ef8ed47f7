//go:build tamago && amd64

package main

import (
	"fmt"
	"strings"

	"tamavisor/boot"
	"tamavisor/boot/fwcfg"
	"tamavisor/kernel"
	"tamavisor/kernel/linux"
)

// fw_cfg files of a Linux guest (`make qemu-linux`, qemu.Config.Kernel).
const (
	cfgLinuxKernel  = "opt/tamavisor/kernel"  // bzImage
	cfgLinuxInitrd  = "opt/tamavisor/initrd"  // initramfs, optional
	cfgLinuxCmdline = "opt/tamavisor/cmdline" // kernel command line, optional
	cfgLinuxMem     = "opt/tamavisor/mem"     // guest RAM: bytes or "256M", optional

	// Size limits, each also bounded by the guest RAM.
	maxLinuxKernel  = 64 << 20  // a distribution bzImage is ~8 MiB
	maxLinuxInitrd  = 256 << 20 //
	maxLinuxCmdline = linux.CmdlineMax - 1
	maxLinuxMemLen  = 32
)

// defaultLinuxCmdline: the console on the guest's only UART (COM1 at
// 0x3F8), early messages there too (before the 8250 driver is up); a panic
// reboots at once and a reboot triple-faults (reboot=t), so either ends
// the VM with a report instead of spinning; the TSC is trusted as the
// clocksource (tsc=reliable): under emulation the watchdog's comparison
// against the PM timer would disqualify it. PCI is probed through
// configuration mechanism #1 and finds the host bridge alone.
const defaultLinuxCmdline = "console=ttyS0 earlyprintk=ttyS0 panic=-1 reboot=t tsc=reliable"

// linuxFromFWCfg reads a Linux guest from fw_cfg. ok is false when there is
// no kernel file; an error means the files are there but unusable.
func linuxFromFWCfg(cfg *fwcfg.Device) (lc kernel.LinuxConfig, ok bool, err error) {
	if _, there := cfg.Lookup(cfgLinuxKernel); !there {
		return lc, false, nil
	}
	if _, there := cfg.Lookup(cfgLinuxMem); there {
		b, err := cfg.ReadFile(cfgLinuxMem, maxLinuxMemLen)
		if err != nil {
			return lc, true, err
		}
		if lc.MemSize, err = kernel.ParseMemSize(trimFile(b)); err != nil {
			return lc, true, fmt.Errorf("%s: %w", cfgLinuxMem, err)
		}
	}
	if lc.MemSize, err = kernel.CheckLinuxMem(lc.MemSize); err != nil {
		return lc, true, fmt.Errorf("%s: %w", cfgLinuxMem, err)
	}
	if lc.Kernel, err = cfg.ReadFile(cfgLinuxKernel, uint32(min(maxLinuxKernel, lc.MemSize))); err != nil {
		return lc, true, err
	}
	if _, there := cfg.Lookup(cfgLinuxInitrd); there {
		if lc.Initrd, err = cfg.ReadFile(cfgLinuxInitrd, uint32(min(maxLinuxInitrd, lc.MemSize))); err != nil {
			return lc, true, err
		}
	}
	lc.Cmdline = defaultLinuxCmdline
	if _, there := cfg.Lookup(cfgLinuxCmdline); there {
		b, err := cfg.ReadFile(cfgLinuxCmdline, maxLinuxCmdline)
		if err != nil {
			return lc, true, err
		}
		lc.Cmdline = trimFile(b)
	}
	return lc, true, nil
}

// trimFile is a text file's contents without the NUL or newline a string=
// or file= fw_cfg item may end with.
func trimFile(b []byte) string { return strings.TrimRight(string(b), "\x00\r\n") }

// runLinux boots the Linux guest of lc and returns the power-off status.
func runLinux(plat *kernel.Platform, lc kernel.LinuxConfig) int {
	vm, err := kernel.NewLinuxVM(plat, lc)
	if err != nil {
		logf("error: %v", err)
		return boot.StatusBadImage
	}
	logf("vm %s: booting Linux (%d KiB kernel, %d KiB initrd, %d MiB RAM), command line %q",
		vm.Name, len(lc.Kernel)>>10, len(lc.Initrd)>>10, lc.MemSize>>20, lc.Cmdline)
	if guestBudget > 0 {
		if err := vm.SetBudget(guestBudget, 0); err != nil {
			logf("error: vm %s: %v", vm.Name, err)
			vm.Destroy()
			return boot.StatusBadImage
		}
		logf("vm %s: time budget %v", vm.Name, guestBudget)
	}
	return finish(plat, vm)
}
