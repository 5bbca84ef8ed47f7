package acpi

import "encoding/binary"

// Multiple APIC Description Table, signature "APIC" (5.2.12).
const (
	madtLocalAPICAddress = 36 // 4
	madtFlags            = 40 // 4
	madtEntries          = 44 // interrupt controller structures follow

	PCAT_COMPAT = 1 << 0 // MADT flag: dual 8259 PICs installed
)

// Interrupt controller structure types and lengths (5.2.12.2-5.2.12.7).
const (
	typeLocalAPIC    = 0
	typeIOAPIC       = 1
	typeISO          = 2 // Interrupt Source Override
	typeLocalAPICNMI = 4

	lenLocalAPIC    = 8
	lenIOAPIC       = 12
	lenISO          = 10
	lenLocalAPICNMI = 6

	localAPICEnabled   = 1 << 0 // Local APIC Flags: usable
	allProcessors      = 0xFF   // Local APIC NMI: ACPI Processor UID of all
	lint1              = 1
	busISA             = 0
	isaCascade         = 2  // IRQ 2 is the 8259 cascade, never an ISA device's
	isaIRQs            = 16 //
	timerIRQ, timerGSI = 0, 2
)

// MPS INTI flags (5.2.12.5, Interrupt Source Override).
const (
	polarityHigh = 1 << 0 // bits 1:0 = 01 active high
	polarityLow  = 3 << 0 // bits 1:0 = 11 active low
	triggerEdge  = 1 << 2 // bits 3:2 = 01 edge
	triggerLevel = 3 << 2 // bits 3:2 = 11 level
)

// madt describes one processor (UID 0, APIC ID 0), one I/O APIC (GSI base
// 0), the PC timer's override IRQ 0 -> GSI 2 and the SCI's if any.
func (c *Config) madt() []byte {
	le := binary.LittleEndian
	b := make([]byte, madtEntries-HeaderSize)
	le.PutUint32(b[madtLocalAPICAddress-HeaderSize:], LAPICBase)
	if c.PCATCompat {
		le.PutUint32(b[madtFlags-HeaderSize:], PCAT_COMPAT)
	}

	// Processor Local APIC: UID 0, APIC ID 0, enabled.
	b = append(b, typeLocalAPIC, lenLocalAPIC, 0, 0)
	b = le.AppendUint32(b, localAPICEnabled)

	// I/O APIC: ID, reserved, address, GSI base 0.
	b = append(b, typeIOAPIC, lenIOAPIC, c.IOAPICID, 0)
	b = le.AppendUint32(b, IOAPICBase)
	b = le.AppendUint32(b, 0)

	iso := func(irq uint8, gsi uint32, flags uint16) {
		b = append(b, typeISO, lenISO, busISA, irq)
		b = le.AppendUint32(b, gsi)
		b = le.AppendUint16(b, flags)
	}
	iso(timerIRQ, timerGSI, polarityHigh|triggerEdge)
	if c.SCI != 0 {
		iso(c.SCI, uint32(c.SCI), polarityLow|triggerLevel)
	}

	if c.LINT1NMI {
		b = append(b, typeLocalAPICNMI, lenLocalAPICNMI, allProcessors)
		b = le.AppendUint16(b, polarityHigh|triggerEdge)
		b = append(b, lint1)
	}
	return table("APIC", madtRevision, b)
}
