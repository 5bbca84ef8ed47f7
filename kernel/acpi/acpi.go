// Package acpi builds the minimal ACPI tables a Linux guest needs to find
// its interrupt controllers and reset the machine, following the ACPI 6.0
// (Errata A) specification, chapter 5.2 "ACPI System Description Tables":
// RSDP, XSDT, FADT (with a FACS unless the platform is HW-reduced), MADT
// and an empty DSDT.
//
// Build lays them out in one blob meant for guest-physical memory at a given
// base, with every pointer an absolute guest-physical address and every
// checksum correct. The usual base is DefaultBase, in the BIOS area that
// Linux also scans for the RSDP signature; the memory map must report that
// range as reserved.
package acpi

import (
	"encoding/binary"
	"fmt"
)

// Where the tables and the interrupt controllers are.
const (
	DefaultBase = 0xE0000    // BIOS read-only area (5.2.5.1): scanned on 16-byte boundaries
	LAPICBase   = 0xFEE00000 // local APIC, MADT Local Interrupt Controller Address
	IOAPICBase  = 0xFEC00000
	maxAddr     = 1 << 32 // FADT.DSDT is a 32-bit pointer
	tableAlign  = 16
	facsAlign   = 64 // 5.2.10
)

// Identification written into every table header (5.2.6).
const (
	OEMID           = "TAMAVI"   // 6 bytes
	OEMTableID      = "TAMAVISR" // 8 bytes
	OEMRevision     = 1
	CreatorID       = "TAMA"
	CreatorRevision = 1
)

// Root System Description Pointer (5.2.5.3).
const (
	rsdpSignature   = "RSD PTR "
	rsdpChecksum    = 8  // 1: over the first 20 bytes
	rsdpOEMID       = 9  // 6
	rsdpRevision    = 15 // 1
	rsdpRsdtAddress = 16 // 4: no RSDT, 0
	rsdpLength      = 20 // 4
	rsdpXsdtAddress = 24 // 8
	rsdpExtChecksum = 32 // 1: over all 36 bytes
	rsdpV1Size      = 20
	RSDPSize        = 36
	RSDPRevision    = 2
)

// System Description Table Header (5.2.6).
const (
	hdrSignature       = 0  // 4
	hdrLength          = 4  // 4
	hdrRevision        = 8  // 1
	hdrChecksum        = 9  // 1: the whole table sums to 0
	hdrOEMID           = 10 // 6
	hdrOEMTableID      = 16 // 8
	hdrOEMRevision     = 24 // 4
	hdrCreatorID       = 28 // 4
	hdrCreatorRevision = 32 // 4
	HeaderSize         = 36
)

// Table revisions of ACPI 6.0 Errata A.
const (
	xsdtRevision = 1
	fadtRevision = 6
	fadtMinor    = 0
	madtRevision = 4
	dsdtRevision = 2 // 64-bit AML integers
	facsVersion  = 2
)

// Config says what the guest platform has.
type Config struct {
	// HWReduced sets HW_REDUCED_ACPI: no SCI, no PM1/PM timer/GPE blocks,
	// no FACS. Linux then skips the legacy PIC and PIT timer setup.
	HWReduced bool
	// PCATCompat sets the MADT PCAT_COMPAT flag: a dual 8259 PIC exists
	// (and Linux masks it before using the I/O APIC).
	PCATCompat bool
	// I8042 sets IAPC_BOOT_ARCH 8042: a keyboard controller at 0x60/0x64.
	I8042 bool
	// IOAPICID is the I/O APIC's ID.
	IOAPICID uint8
	// SCI is the ISA IRQ of the SCI (full ACPI only; 9 on PCs). It gets a
	// level-triggered, active-low interrupt source override.
	SCI uint8
	// PM1aEventBlock, PM1aControlBlock and PMTimerBlock are I/O ports of
	// the fixed hardware (full ACPI only; the PM timer may be 0: absent).
	PM1aEventBlock, PM1aControlBlock, PMTimerBlock uint16
	// LINT1NMI adds a Local APIC NMI structure: LINT1 of every processor
	// is the NMI input.
	LINT1NMI bool
	// S5 puts the \_S5 sleep-state package in the DSDT (full ACPI only):
	// the guest powers off by writing SLP_TYP = S5SleepType with SLP_EN to
	// PM1a_CNT (7.4.2, 16.1.5).
	S5 bool
}

// S5SleepType is the SLP_TYP value of \_S5 (S5Package).
const S5SleepType = 5

// AML of `Name (_S5, Package () { 5, 5 })` (ACPI 6.0, 20.2.5): NameOp,
// NameString, PackageOp, PkgLength (bytes after PackageOp), NumElements,
// then two BytePrefix constants (SLP_TYPa, SLP_TYPb).
const (
	amlNameOp    = 0x08
	amlPackageOp = 0x12
	amlBytePref  = 0x0a
)

// s5Package returns the AML of \_S5.
func s5Package() []byte {
	body := []byte{2, amlBytePref, S5SleepType, amlBytePref, S5SleepType} // NumElements, SLP_TYPa, SLP_TYPb
	aml := []byte{amlNameOp, '_', 'S', '5', '_', amlPackageOp, byte(1 + len(body))}
	return append(aml, body...)
}

// Build returns the tables to copy to guest-physical base (16-byte aligned)
// and the address of the RSDP.
func Build(base uint64, cfg Config) (tables []byte, rsdpAddr uint64, err error) {
	if base == 0 || base%tableAlign != 0 {
		return nil, 0, fmt.Errorf("acpi: base %#x must be non-zero and %d-byte aligned (RSDP scan)", base, tableAlign)
	}
	if err := cfg.check(); err != nil {
		return nil, 0, err
	}
	// Blob layout: RSDP, XSDT, FADT, MADT, DSDT, each 16-byte aligned, then
	// the FACS on a 64-byte boundary.
	var blob []byte
	place := func(b []byte, align uint64) uint64 {
		for (base+uint64(len(blob)))%align != 0 {
			blob = append(blob, 0)
		}
		at := base + uint64(len(blob))
		blob = append(blob, b...)
		return at
	}
	rsdpAt := place(make([]byte, RSDPSize), tableAlign)
	xsdtAt := place(make([]byte, HeaderSize+2*8), tableAlign)
	fadtAt := place(make([]byte, fadtSize), tableAlign)
	madtAt := place(cfg.madt(), tableAlign)
	var dsdt []byte
	if cfg.S5 {
		dsdt = s5Package()
	}
	dsdtAt := place(table("DSDT", dsdtRevision, dsdt), tableAlign)
	var facsAt uint64
	if !cfg.HWReduced {
		facsAt = place(facs(), facsAlign)
	}
	if base >= maxAddr || uint64(len(blob)) > maxAddr-base {
		return nil, 0, fmt.Errorf("acpi: tables [%#x, %#x) reach above 4 GiB", base, base+uint64(len(blob)))
	}
	at := func(gpa uint64) []byte { return blob[gpa-base:] }

	copy(at(fadtAt), cfg.fadt(dsdtAt, facsAt))
	le := binary.LittleEndian
	xsdt := table("XSDT", xsdtRevision, le.AppendUint64(le.AppendUint64(nil, fadtAt), madtAt))
	copy(at(xsdtAt), xsdt)

	r := at(rsdpAt)
	copy(r, rsdpSignature)
	copy(r[rsdpOEMID:], OEMID)
	r[rsdpRevision] = RSDPRevision
	le.PutUint32(r[rsdpLength:], RSDPSize)
	le.PutUint64(r[rsdpXsdtAddress:], xsdtAt)
	r[rsdpChecksum] = -sum(r[:rsdpV1Size])
	r[rsdpExtChecksum] = -sum(r[:RSDPSize])
	return blob, rsdpAt, nil
}

func (c *Config) check() error {
	fixed := c.SCI != 0 || c.PM1aEventBlock != 0 || c.PM1aControlBlock != 0 || c.PMTimerBlock != 0
	switch {
	case c.HWReduced && (fixed || c.S5):
		return fmt.Errorf("acpi: a HW-reduced platform has no SCI, PM1 or PM timer blocks (nor PM1-based S5)")
	case c.HWReduced:
		return nil
	case c.SCI == 0 || c.SCI == isaCascade || c.SCI >= isaIRQs:
		return fmt.Errorf("acpi: full ACPI needs an SCI on an ISA IRQ other than 0 and 2 (9 on PCs), not %d", c.SCI)
	case c.PM1aEventBlock == 0 || c.PM1aControlBlock == 0:
		return fmt.Errorf("acpi: full ACPI needs PM1a event and control blocks (5.2.9)")
	}
	return nil
}

// table is a description table: header and body, checksum set.
func table(sig string, rev uint8, body []byte) []byte {
	t := make([]byte, HeaderSize, HeaderSize+len(body))
	t = append(t, body...)
	copy(t[hdrSignature:], sig)
	binary.LittleEndian.PutUint32(t[hdrLength:], uint32(len(t)))
	t[hdrRevision] = rev
	copy(t[hdrOEMID:], OEMID)
	copy(t[hdrOEMTableID:], OEMTableID)
	binary.LittleEndian.PutUint32(t[hdrOEMRevision:], OEMRevision)
	copy(t[hdrCreatorID:], CreatorID)
	binary.LittleEndian.PutUint32(t[hdrCreatorRevision:], CreatorRevision)
	t[hdrChecksum] = -sum(t)
	return t
}

func sum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}
