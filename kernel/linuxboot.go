package kernel

import (
	"fmt"
	"strconv"
	"strings"

	"tamavisor/kernel/acpi"
	"tamavisor/kernel/linux"
	"tamavisor/svm"
)

// Guest RAM of a Linux VM.
const (
	// LinuxDefaultMem is the RAM a Linux guest gets when none is asked.
	LinuxDefaultMem = 256 << 20
	// LinuxMinMem is the least RAM accepted: a distribution kernel
	// decompresses itself at 16 MiB and needs tens of MiB above that
	// (init_size) before it runs, plus the initramfs.
	LinuxMinMem = 64 << 20
	// LinuxMemAlign: guest RAM comes from the pool in 2 MiB units, mapped
	// by 2 MiB nested pages.
	LinuxMemAlign = svm.Size2M
	// LinuxMaxMem is the most RAM accepted: the kernel's guest RAM limit,
	// and RAM must end below the I/O APIC (linux.MaxRAM).
	LinuxMaxMem = min(MaxGuestRAM, linux.MaxRAM)
	// LinuxDefaultName names a VM whose config gives no name.
	LinuxDefaultName = "linux"
)

// ACPI tables of a Linux guest: in the BIOS area, which the e820 map of
// linux.DefaultMemoryMap reports reserved ([LowRAMEnd, 1 MiB)) and Linux
// scans for the RSDP (ACPI 6.0, 5.2.5.1). boot_params.acpi_rsdp_addr
// points at the RSDP as well.
const (
	LinuxACPIBase = acpi.DefaultBase // 0xE0000
	linuxACPIEnd  = linux.HighMemStart
)

// linuxACPI describes the guest platform to the guest: full ACPI with the
// fixed hardware of acpipm (PM1a blocks, PM timer: a reference for the
// guest's TSC calibration; S5 for its poweroff), the SCI on IRQ 9, the
// dual 8259 PIC (MADT PCAT_COMPAT, so the ISA IRQs 0-15 exist and the
// 8250 UART gets IRQ 4), no 8042 keyboard controller, one I/O APIC with
// the ID the model resets to (0).
var linuxACPI = acpi.Config{PCATCompat: true, I8042: false, IOAPICID: 0, SCI: irqSCI,
	PM1aEventBlock: pmEventPort, PM1aControlBlock: pmControlPort, PMTimerBlock: pmTimerPort, S5: true}

// LinuxConfig is a Linux guest: a bzImage, an optional initrd, the kernel
// command line and the guest RAM size.
type LinuxConfig struct {
	Kernel, Initrd []byte
	Cmdline        string
	MemSize        uint64 // bytes; 0 means LinuxDefaultMem
	Name           string // "" means LinuxDefaultName
}

// LinuxError is a refused Linux guest configuration.
type LinuxError struct{ Reason string }

func (e *LinuxError) Error() string { return "linux: " + e.Reason }

func linuxRefuse(f string, a ...any) error { return &LinuxError{fmt.Sprintf(f, a...)} }

// CheckLinuxMem returns the guest RAM size for MemSize m (0: the default)
// or why it is refused.
func CheckLinuxMem(m uint64) (uint64, error) {
	if m == 0 {
		m = LinuxDefaultMem
	}
	switch {
	case m%LinuxMemAlign != 0:
		return 0, linuxRefuse("guest RAM of %d bytes is not a multiple of %d MiB", m, LinuxMemAlign>>20)
	case m < LinuxMinMem:
		return 0, linuxRefuse("guest RAM of %d MiB is below the minimum of %d MiB", m>>20, LinuxMinMem>>20)
	case m > LinuxMaxMem:
		return 0, linuxRefuse("guest RAM of %d MiB is above the maximum of %d MiB", m>>20, LinuxMaxMem>>20)
	}
	return m, nil
}

// ParseMemSize reads a RAM size: a decimal number of bytes, or of KiB,
// MiB or GiB with a K, M or G suffix (either case), e.g. "256M".
func ParseMemSize(s string) (uint64, error) {
	num, shift := strings.TrimSpace(s), 0
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift != 0 {
			num = num[:n-1]
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v > ^uint64(0)>>shift {
		return 0, linuxRefuse("memory size %q: want bytes or a number with a K, M or G suffix", s)
	}
	return v << shift, nil
}

// tscKHzParam tells Linux the TSC frequency (kernel-parameters.txt).
const tscKHzParam = "tsc_early_khz="

// withTSCKHz adds tsc_early_khz=<the host's TSC kHz> to a command line
// that does not set it. Linux calibrates the TSC against the PIT, needing
// thousands of port reads within milliseconds and two reads within ~25 us
// of each other; every emulated port read is a world switch (~20 us under
// QEMU TCG), so that calibration cannot succeed, and HW-reduced ACPI has no
// PM timer to fall back on. The guest's TSC is the host's (offset only),
// so the hypervisor knows its rate exactly.
func withTSCKHz(cmdline string, tscHz uint64) string {
	if tscHz == 0 || strings.Contains(cmdline, tscKHzParam) {
		return cmdline
	}
	p := fmt.Sprintf("%s%d", tscKHzParam, tscHz/1000)
	if cmdline == "" {
		return p
	}
	return cmdline + " " + p
}

// NewLinuxVM builds a VM that boots cfg's kernel through the 64-bit boot
// protocol (linux package): kernel, initrd, command line, boot_params,
// identity page tables, GDT and ACPI tables in guest RAM, and the vCPU at
// the 64-bit entry. Everything is checked before any memory is taken; on
// error nothing is left allocated.
func NewLinuxVM(p *Platform, cfg LinuxConfig) (*VM, error) {
	mem, err := CheckLinuxMem(cfg.MemSize)
	if err != nil {
		return nil, err
	}
	name := cfg.Name
	if name == "" {
		name = LinuxDefaultName
	}
	img, err := linux.ParseBzImage(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	cmdline := withTSCKHz(cfg.Cmdline, p.TSCHz)
	l, err := linux.Plan(mem, img, uint64(len(cfg.Initrd)), cmdline)
	if err != nil {
		return nil, err
	}
	tables, rsdp, err := acpi.Build(LinuxACPIBase, linuxACPI)
	if err != nil {
		return nil, fmt.Errorf("linux: %w", err)
	}
	if uint64(len(tables)) > linuxACPIEnd-LinuxACPIBase {
		return nil, linuxRefuse("ACPI tables of %d bytes do not fit in [%#x, %#x)", len(tables), LinuxACPIBase, linuxACPIEnd)
	}
	memMap, err := linux.DefaultMemoryMap(mem)
	if err != nil {
		return nil, err
	}
	if !linuxReserved(memMap, LinuxACPIBase, LinuxACPIBase+uint64(len(tables))) {
		return nil, linuxRefuse("ACPI tables at %#x are not in a reserved range of the memory map", LinuxACPIBase)
	}
	bp, err := linux.BuildBootParams(img, l, memMap, rsdp)
	if err != nil {
		return nil, err
	}
	pieces, err := l.Pieces(img, cfg.Initrd, bp)
	if err != nil {
		return nil, err
	}
	pieces = append(pieces, linux.Piece{Name: "ACPI tables", GPA: LinuxACPIBase, Data: tables})

	vm, err := newVM(p, name, mem, p.cpuidModel())
	if err != nil {
		return nil, fmt.Errorf("linux: %w", err)
	}
	for _, pc := range pieces {
		if err := vm.Mem.WriteGPA(pc.GPA, pc.Data); err != nil {
			vm.Destroy()
			return nil, fmt.Errorf("linux: writing the %s: %w", pc.Name, err)
		}
	}
	s := &vm.VCPU.vmcb.State
	linuxBaseState(s)
	e := l.Entry()
	e.Apply(s, &vm.VCPU.Regs)
	return vm, nil
}

// linuxBaseState sets what every guest starts with besides its mode (as
// Image.load does): EFER.SVME (VMRUN refuses a guest without it), the
// reset debug registers and PAT, and an empty LDT and a busy 64-bit TSS
// (the kernel loads its own before it uses either).
func linuxBaseState(s *svm.StateSaveArea) {
	*s = svm.StateSaveArea{}
	s.EFER = svm.EFERSVME
	s.DR6, s.DR7 = resetDR6, resetDR7
	s.GPAT = resetPAT
	s.LDTR = svm.Segment{Attrib: attrLDT, Limit: 0xffff}
	s.TR = svm.Segment{Attrib: attrTR, Limit: 0xffff}
}

// linuxReserved reports whether [start, end) lies inside one reserved
// entry of the memory map.
func linuxReserved(m []linux.E820Entry, start, end uint64) bool {
	for _, e := range m {
		if e.Type == linux.E820_RESERVED && e.Addr <= start && end <= e.Addr+e.Size {
			return true
		}
	}
	return false
}
