//go:build tamago && amd64

package main

import (
	"errors"
	"fmt"

	"tamavisor/boot"
	"tamavisor/boot/acpi"
	"tamavisor/internal/x86"
	"tamavisor/svm"
)

// discoverBoard learns the board from the ACPI tables the boot loader's
// RSDP leads to, after a firmware boot (q35 + OVMF, a real board), and
// adapts to them: the host local APIC's address (MADT), the TSC's
// reference (the PIT, checked against the FADT's PM timer or the HPET) and
// the console UART (SPCR). Each step logs what it found, so that the
// serial log of a board that does not boot says what it is. After QEMU's
// PVH entry (microvm, no RSDP) the fixed values stay. Call it after
// memoryMap, before boot.InitHostInterrupts.
func discoverBoard() {
	if bootACPI == nil {
		logf("ACPI: no RSDP from the boot loader: QEMU microvm values (local APIC %#x, console COM1, TSC against the PIT)", boot.LAPICBase())
		chooseTSC(0, "")
		return
	}
	rsdp, err := acpi.ParseRSDP(bootACPI)
	var s *acpi.Survey
	if err == nil {
		s, err = acpi.Discover(acpi.PhysMem{Start: boot.IdentityStart, End: boot.IdentityEnd}, rsdp)
	}
	if err != nil {
		logf("ACPI tables unreadable: %v: keeping local APIC %#x, console COM1, TSC against the PIT", err, boot.LAPICBase())
		chooseTSC(0, "")
		return
	}
	logf("ACPI tables: %s", s.TableList())
	for _, t := range s.Tables {
		if t.Err != nil {
			logf("ACPI: table %s at %#x ignored: %v", t.Signature, t.Address, t.Err)
		}
	}
	for _, err := range s.Errors {
		logf("ACPI: %v (table ignored)", err)
	}

	if s.MADT != nil {
		logf("ACPI MADT: %v", s.MADT)
		useLAPIC(s.MADT.LocalAPICAddress)
	} else {
		logf("ACPI MADT: none: local APIC at %#x (IA32_APIC_BASE)", boot.LAPICBase())
	}

	ref, refHz := timers(s)
	chooseTSC(refHz, ref)
	console(s.SPCR)
}

// useLAPIC makes the host use the MADT's local APIC address; the CPU's
// own (the APIC_BASE MSR) wins when they differ, since that is where the
// registers are.
func useLAPIC(madt uint64) {
	pa := madt
	if msr := boot.LAPICBaseMSR(); msr != madt {
		logf("warning: the MADT's local APIC address %#x differs from the CPU's APIC_BASE %#x: using the CPU's", madt, msr)
		pa = msr
	}
	if err := boot.SetLAPICBase(pa); err != nil {
		logf("warning: %v: keeping %#x", err, boot.LAPICBase())
	}
}

// timers logs the ACPI timers and measures the TSC against the first one
// that works (the PM timer, else the HPET); it returns its name and the
// measurement (0 when there is none).
func timers(s *acpi.Survey) (string, uint64) {
	if s.FADT != nil {
		logf("ACPI FADT: %v", s.FADT)
	} else {
		logf("ACPI FADT: none: no PM timer")
	}
	if s.HPET != nil {
		logf("ACPI HPET: registers at %v", s.HPET.BaseAddress)
	} else {
		logf("ACPI HPET: none")
	}
	if s.FADT != nil && s.FADT.PMTimer.Address != 0 {
		if read, err := boot.PMTimer(s.FADT.PMTimer); err != nil {
			logf("warning: ACPI PM timer unusable: %v", err)
		} else {
			mask := uint32(1)<<s.FADT.PMTimerBits() - 1
			if s.FADT.PMTimerBits() == 32 {
				mask = ^uint32(0)
			}
			if hz := boot.MeasureTSC(read, mask, acpi.PMTimerHz); hz != 0 {
				return fmt.Sprintf("ACPI PM timer (%v)", s.FADT.PMTimer), hz
			}
			logf("warning: ACPI PM timer at %v does not count", s.FADT.PMTimer)
		}
	}
	if s.HPET != nil {
		read, freq, done, err := boot.HPET(s.HPET.BaseAddress.Address)
		if err != nil {
			logf("warning: HPET unusable: %v", err)
			return "", 0
		}
		hz := boot.MeasureTSC(read, ^uint32(0), freq)
		done()
		if hz != 0 {
			return fmt.Sprintf("HPET (%d Hz at %#x)", freq, s.HPET.BaseAddress.Address), hz
		}
		logf("warning: HPET at %#x does not count", s.HPET.BaseAddress.Address)
	}
	return "", 0
}

// chooseTSC keeps the TSC frequency measured against the PIT at boot
// unless it is implausible or an ACPI timer (ref, refHz) disagrees, and
// logs which reference the clock now uses.
func chooseTSC(refHz uint64, ref string) {
	pit := boot.PITTSCHz
	hz, fromPIT := boot.ChooseTSC(pit, refHz)
	switch {
	case hz == 0:
		logf("error: TSC not calibrated: the PIT gave %d Hz and there is no usable ACPI timer (PM timer, HPET)", pit)
		boot.PowerOff(boot.StatusInternal)
	case fromPIT && refHz == 0:
		logf("TSC: %d MHz, calibrated against the PIT (no ACPI timer to check it)", hz/1e6)
	case fromPIT:
		logf("TSC: %d MHz, calibrated against the PIT; the %s agrees (%d MHz)", hz/1e6, ref, refHz/1e6)
	case pit == 0:
		logf("TSC: %d MHz, calibrated against the %s: the PIT does not count", hz/1e6, ref)
	default:
		logf("TSC: %d MHz, calibrated against the %s: the PIT's %d MHz is wrong", hz/1e6, ref, pit/1e6)
	}
	boot.SetTSCHz(hz)
}

// console moves the console to the UART the SPCR table names, when it is a
// 16550-compatible one in I/O space; otherwise it stays on COM1. The lines
// before went to COM1 in any case.
func console(s *acpi.SPCR) {
	const com1 = "console: COM1 (I/O 0x3f8), 115200 8N1 as the firmware set it"
	if s == nil {
		logf("%s: no SPCR table", com1)
		return
	}
	port, ok := s.IOPort()
	switch {
	case !ok:
		logf("%s: the SPCR table's UART (%v) is not a 16550 in I/O space", com1, s)
		return
	case port == boot.COM1:
		logf("%s, as the SPCR table says (%v)", com1, s)
		return
	}
	logf("console: the SPCR table names %v: moving the console there", s)
	if err := boot.UseConsole(port, s.Baud); err != nil {
		logf("%s: %v", com1, err)
		return
	}
	logf("console: on the SPCR UART at I/O %#x (the lines before this one went to COM1)", port)
}

// reportCPU logs the CPU's vendor, family, model and stepping and the
// state of SVM before it is enabled: whether CPUID has it, and VM_CR
// (read only when CPUID has SVM: the MSR exists only then).
func reportCPU() {
	_, b, c, d := x86.CPUID(0, 0)
	eax, _, _, _ := x86.CPUID(boot.CPUIDSignature, 0)
	fam, model, step := boot.CPUSignature(eax)
	svmState := "CPUID 8000_0001 ECX.SVM clear"
	if maxExt, _, _, _ := x86.CPUID(0x80000000, 0); maxExt >= svm.CPUIDExtFeatures {
		if _, _, ecx, _ := x86.CPUID(svm.CPUIDExtFeatures, 0); ecx&svm.ExtFeaturesSVM != 0 {
			vmcr := x86.RDMSR(svm.MSRVMCR)
			svmState = fmt.Sprintf("CPUID has SVM, VM_CR %#x (SVMDIS %s, LOCK %s)", vmcr,
				setClear(vmcr&svm.VMCRSVMDis != 0), setClear(vmcr&svm.VMCRLock != 0))
		}
	}
	logf("CPU: %s family %#x model %#x stepping %d (CPUID 1 EAX %#x); %s",
		printable(string(le32(b, d, c))), fam, model, step, eax, svmState)
}

func setClear(b bool) string {
	if b {
		return "set"
	}
	return "clear"
}

// svmHint says what the user can do when SVM cannot be enabled.
func svmHint(err error) string {
	switch {
	case errors.Is(err, svm.ErrSVMDisabled):
		return `: enable SVM in the firmware setup ("SVM Mode", "AMD-V", "Virtualization"), then boot again`
	case errors.Is(err, svm.ErrNoSVM):
		return ": tamavisor needs an AMD CPU with AMD-V (SVM); under a hypervisor, nested SVM must be on"
	case errors.Is(err, svm.ErrNoNPT):
		return ": tamavisor needs nested paging (AMD-V with RVI, every AMD CPU since 2007's family 10h)"
	}
	return ""
}
