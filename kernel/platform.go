package kernel

import (
	"tamavisor/kernel/acpi"
	"tamavisor/kernel/devices"
	"tamavisor/kernel/devices/acpipm"
	"tamavisor/kernel/devices/ioapic"
	"tamavisor/kernel/devices/lapic"
	"tamavisor/kernel/devices/legacy"
	"tamavisor/kernel/devices/pic"
	"tamavisor/kernel/devices/pit"
	"tamavisor/kernel/devices/rtc"
)

// ISA interrupt lines of the PC platform and where the I/O APIC sees them
// (the MADT says IRQ 0 arrives on GSI 2, the rest identity-mapped).
const (
	irqPIT  = 0
	gsiPIT  = 2
	irqCOM1 = 4
	irqRTC  = 8
	irqSCI  = 9
	lapicID = 0

	// ACPI fixed hardware ports (the FADT's PM1a event, PM1a control and
	// PM timer blocks).
	pmEventPort   = 0x600
	pmControlPort = 0x604
	pmTimerPort   = 0x608
)

// PC is the PC platform every VM has besides its UART and debug port: the
// local APIC and I/O APIC (MMIO), the 8259 PIC pair (masked, answering
// probes), the 8254 PIT with port 0x61, the CMOS RTC, and the stubs of
// the POST port, the PCI host bridge (no devices) and the i8042 (absent).
// Interrupts go device -> I/O APIC -> local APIC -> the vCPU (irq.go).
type PC struct {
	LAPIC   *lapic.LAPIC
	IOAPIC  *ioapic.IOAPIC
	PIC     *pic.PIC
	PIT     *pit.PIT
	RTC     *rtc.RTC
	POST    *legacy.POST
	PCIHost *legacy.PCIHost
	I8042   *legacy.I8042
	PM      *acpipm.PM

	uartLevel bool // last level of the UART's interrupt line
}

// isaLine drives ISA IRQ irq: on the PIC and on its I/O APIC pin.
func (pc *PC) isaLine(irq, gsi int) devices.IRQLine {
	return devices.IRQFunc(func(level bool) {
		pc.PIC.SetIRQ(irq, level)
		pc.IOAPIC.SetIRQ(gsi, level)
	})
}

// newPC builds the platform devices of vm and puts them on its buses.
func (vm *VM) newPC() error {
	pc := &PC{}
	vm.PC = pc
	pc.LAPIC = lapic.New(vm.clock, lapicID)
	pc.IOAPIC = ioapic.New(pc.LAPIC)
	pc.LAPIC.OnEOI = pc.IOAPIC.EOI
	pc.PIC = pic.New()
	pc.PIT = pit.New(vm.clock, pc.isaLine(irqPIT, gsiPIT))
	wall := vm.plat.Now
	if wall == nil {
		wall = func() int64 { return 0 }
	}
	pc.RTC = rtc.New(vm.clock, wall, pc.isaLine(irqRTC, irqRTC), vm.Mem.Size, 0)
	pc.POST = legacy.NewPOST()
	pc.PCIHost = legacy.NewPCIHost(vm.guestReset)
	pc.I8042 = legacy.NewI8042(vm.guestReset)
	pc.PM = acpipm.New(vm.clock, pmEventPort, pmControlPort, pmTimerPort, acpi.S5SleepType)
	pc.PM.PowerOff = vm.guestPowerOff
	// The SCI is active low (MADT override): idle, its line is high.
	pc.IOAPIC.SetIRQ(irqSCI, true)
	for _, err := range []error{
		vm.MMIO.Register(lapic.DefaultBase, lapic.Size, pc.LAPIC),
		vm.MMIO.Register(ioapic.DefaultBase, ioapic.Size, pc.IOAPIC),
		pc.PIC.Register(&vm.Bus), pc.PIT.Register(&vm.Bus), pc.RTC.Register(&vm.Bus),
		pc.POST.Register(&vm.Bus), pc.PCIHost.Register(&vm.Bus), pc.I8042.Register(&vm.Bus),
		pc.PM.Register(&vm.Bus),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// guestPowerOff: the guest entered ACPI S5 (its `poweroff`).
func (vm *VM) guestPowerOff() {
	if vm.stop == nil {
		vm.stop = &Stop{Kind: StopExited, Class: ClassPowerOff, Status: 0, Reason: "the guest powered off by ACPI S5"}
	}
}

// guestReset: the guest pulsed the reset line (i8042 command 0xFE or the
// reset control register 0xCF9). There is no firmware to reboot into: the
// VM ends, reported as a reset.
func (vm *VM) guestReset() {
	if vm.stop == nil {
		vm.stop = &Stop{Kind: StopExited, Class: ClassReset, Status: 0, Reason: "the guest reset the machine"}
	}
}

// restored re-derives what the platform keeps outside the device states
// after a restore: the UART's interrupt line level, driven again so the
// I/O APIC and PIC inputs match the restored UART.
func (pc *PC) restored(vm *VM) {
	level := vm.UART.IRQ() && vm.UART.In(COM1Base+devices.MCR, 1)&devices.MCR_OUT2 != 0
	pc.uartLevel = level
	pc.isaLine(irqCOM1, irqCOM1).Set(level)
}

// updateUARTIRQ follows the UART's interrupt output (gated by MCR.OUT2, as
// on the PC) to ISA IRQ 4 after an access that may have changed it.
func (vm *VM) updateUARTIRQ() {
	level := vm.UART.IRQ() && vm.UART.In(COM1Base+devices.MCR, 1)&devices.MCR_OUT2 != 0
	if level != vm.PC.uartLevel {
		vm.PC.uartLevel = level
		vm.PC.isaLine(irqCOM1, irqCOM1).Set(level)
	}
}
