package acpi

import "encoding/binary"

// Fixed ACPI Description Table, signature "FACP" (5.2.9).
const (
	fadtFirmwareCtrl     = 36  // 4
	fadtDSDT             = 40  // 4
	fadtSCIInt           = 46  // 2
	fadtPM1aEvtBlk       = 56  // 4
	fadtPM1aCntBlk       = 64  // 4
	fadtPMTmrBlk         = 76  // 4
	fadtPM1EvtLen        = 88  // 1
	fadtPM1CntLen        = 89  // 1
	fadtPMTmrLen         = 91  // 1
	fadtIAPCBootArch     = 109 // 2
	fadtFlags            = 112 // 4
	fadtResetReg         = 116 // 12: GAS
	fadtResetValue       = 128 // 1
	fadtMinorVersion     = 131 // 1
	fadtXFirmwareCtrl    = 132 // 8
	fadtXDSDT            = 140 // 8
	fadtXPM1aEvtBlk      = 148 // 12: GAS
	fadtXPM1aCntBlk      = 172 // 12: GAS
	fadtXPMTmrBlk        = 208 // 12: GAS
	fadtHypervisorVendor = 268 // 8
	fadtSize             = 276

	pm1EvtLen = 4 // PM1 status and enable registers, 2 bytes each (4.8.3.1)
	pm1CntLen = 2
	pmTmrLen  = 4
)

// FADT Flags (5.2.9).
const (
	PWR_BUTTON      = 1 << 4  // no fixed-feature power button
	SLP_BUTTON      = 1 << 5  // no fixed-feature sleep button
	RESET_REG_SUP   = 1 << 10 // RESET_REG resets the machine
	HW_REDUCED_ACPI = 1 << 20
)

// IAPC_BOOT_ARCH flags (5.2.9.3).
const (
	LEGACY_DEVICES       = 1 << 0 // ISA devices (UART, RTC, PIT) on the motherboard
	IAPC_8042            = 1 << 1 // an 8042 keyboard controller
	VGA_NOT_PRESENT      = 1 << 2
	MSI_NOT_SUPPORTED    = 1 << 3
	CMOS_RTC_NOT_PRESENT = 1 << 5 // clear: the guest has a CMOS RTC
)

// Reset through the PCI reset control register (port 0xCF9, value 6: full
// reset, reset CPU).
const (
	ResetPort  = 0xCF9
	ResetValue = 6
)

// Generic Address Structure (5.2.3.2).
const (
	gasSpaceID    = 0 // 1
	gasBitWidth   = 1 // 1
	gasBitOffset  = 2 // 1
	gasAccessSize = 3 // 1
	gasAddress    = 4 // 8
	spaceSystemIO = 1
	accessByte    = 1
	accessWord    = 2
	accessDword   = 3
)

// putGAS writes a system I/O register of width bytes at port.
func putGAS(b []byte, port uint16, width, access uint8) {
	b[gasSpaceID] = spaceSystemIO
	b[gasBitWidth] = width * 8
	b[gasBitOffset] = 0
	b[gasAccessSize] = access
	binary.LittleEndian.PutUint64(b[gasAddress:], uint64(port))
}

// HypervisorVendor is the FADT Hypervisor Vendor Identity (5.2.9).
const HypervisorVendor = "TAMAVISR"

func (c *Config) fadt(dsdt, facs uint64) []byte {
	le := binary.LittleEndian
	f := make([]byte, fadtSize-HeaderSize)
	body := func(off int) []byte { return f[off-HeaderSize:] }

	// X_FIRMWARE_CTRL only: FIRMWARE_CTRL must then be 0 (5.2.9).
	le.PutUint64(body(fadtXFirmwareCtrl), facs)
	le.PutUint32(body(fadtDSDT), uint32(dsdt))
	le.PutUint64(body(fadtXDSDT), dsdt)

	flags := uint32(PWR_BUTTON | SLP_BUTTON | RESET_REG_SUP)
	if c.HWReduced {
		flags |= HW_REDUCED_ACPI
	} else {
		le.PutUint16(body(fadtSCIInt), uint16(c.SCI))
		le.PutUint32(body(fadtPM1aEvtBlk), uint32(c.PM1aEventBlock))
		body(fadtPM1EvtLen)[0] = pm1EvtLen
		putGAS(body(fadtXPM1aEvtBlk), c.PM1aEventBlock, pm1EvtLen, accessWord)
		le.PutUint32(body(fadtPM1aCntBlk), uint32(c.PM1aControlBlock))
		body(fadtPM1CntLen)[0] = pm1CntLen
		putGAS(body(fadtXPM1aCntBlk), c.PM1aControlBlock, pm1CntLen, accessWord)
		if c.PMTimerBlock != 0 {
			le.PutUint32(body(fadtPMTmrBlk), uint32(c.PMTimerBlock))
			body(fadtPMTmrLen)[0] = pmTmrLen
			putGAS(body(fadtXPMTmrBlk), c.PMTimerBlock, pmTmrLen, accessDword)
		}
	}
	le.PutUint32(body(fadtFlags), flags)

	arch := uint16(LEGACY_DEVICES | VGA_NOT_PRESENT)
	if c.I8042 {
		arch |= IAPC_8042
	}
	le.PutUint16(body(fadtIAPCBootArch), arch)

	putGAS(body(fadtResetReg), ResetPort, 1, accessByte)
	body(fadtResetValue)[0] = ResetValue
	body(fadtMinorVersion)[0] = fadtMinor
	copy(body(fadtHypervisorVendor), HypervisorVendor)
	return table("FACP", fadtRevision, f)
}

// Firmware ACPI Control Structure (5.2.10), no checksum.
const (
	facsOffLength  = 4  // 4
	facsOffVersion = 32 // 1
	facsSize       = 64
)

func facs() []byte {
	f := make([]byte, facsSize)
	copy(f, "FACS")
	binary.LittleEndian.PutUint32(f[facsOffLength:], facsSize)
	f[facsOffVersion] = facsVersion
	return f
}
