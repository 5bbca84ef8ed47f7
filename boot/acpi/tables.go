package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The tables tamavisor reads to learn the board: interrupt controllers
// (MADT), timers (the FADT's PM timer, the HPET table) and the console
// UART (SPCR). Each parser takes a whole table as ReadTable returns it,
// checks its signature, Length and checksum again (it may come from
// elsewhere), and bounds every field and sub-structure by the table's
// Length before reading it.

// Signatures (ACPI 6.4 section 5.2.6, Tables 5.5 and 5.6).
const (
	SignatureMADT = "APIC" // Multiple APIC Description Table, 5.2.12
	SignatureFADT = "FACP" // Fixed ACPI Description Table, 5.2.9
	SignatureHPET = "HPET" // IA-PC HPET Specification 1.0a, 3.2.4
	SignatureSPCR = "SPCR" // Microsoft Serial Port Console Redirection Table
)

// Header fields beyond those acpi.go reads (5.2.6, Table 5.4).
const (
	hdrRevision = 8
	hdrOEMID    = 10
)

// checkTable checks that t is one whole table with signature sig, at
// least min bytes long: its Length equals len(t) and its bytes sum to 0.
func checkTable(t []byte, sig string, min int) error {
	if len(t) < HeaderLen || string(t[:signatureLen]) != sig {
		return fmt.Errorf("acpi: not a %s table", sig)
	}
	if n := binary.LittleEndian.Uint32(t[hdrLength:]); uint64(n) != uint64(len(t)) {
		return fmt.Errorf("acpi: %s: Length %d, have %d bytes", sig, n, len(t))
	}
	if len(t) < min {
		return fmt.Errorf("acpi: %s: %d bytes, shorter than its %d-byte fixed part", sig, len(t), min)
	}
	if sum(t) != 0 {
		return fmt.Errorf("acpi: %s: %w", sig, errChecksum)
	}
	return nil
}

// Generic Address Structure (ACPI 6.4 section 5.2.3.2, Table 5.1).
const (
	GASLen            = 12
	gasSpaceID        = 0
	gasBitWidth       = 1
	gasBitOffset      = 2
	gasAccessSize     = 3
	gasAddress        = 4
	SpaceSystemMemory = 0 // Address Space ID: system memory
	SpaceSystemIO     = 1 // Address Space ID: system I/O
)

// GAS is a Generic Address Structure: a register's address space, width
// and address.
type GAS struct {
	SpaceID    uint8
	BitWidth   uint8
	BitOffset  uint8
	AccessSize uint8
	Address    uint64
}

func parseGAS(b []byte) GAS {
	return GAS{SpaceID: b[gasSpaceID], BitWidth: b[gasBitWidth], BitOffset: b[gasBitOffset],
		AccessSize: b[gasAccessSize], Address: binary.LittleEndian.Uint64(b[gasAddress:])}
}

func (g GAS) String() string {
	switch g.SpaceID {
	case SpaceSystemIO:
		return fmt.Sprintf("I/O %#x", g.Address)
	case SpaceSystemMemory:
		return fmt.Sprintf("memory %#x", g.Address)
	}
	return fmt.Sprintf("address space %d, %#x", g.SpaceID, g.Address)
}

// MADT: Multiple APIC Description Table (ACPI 6.4 section 5.2.12,
// Table 5.19), and its interrupt controller structures.
const (
	madtLocalAPICAddress = 36 // Local Interrupt Controller Address, 32-bit
	madtFlags            = 40
	madtEntries          = 44
	MADTPCATCompat       = 1 << 0 // Flags: dual 8259s are installed (Table 5.20)

	madtEntryType = 0
	madtEntryLen  = 1

	// Processor Local APIC, 5.2.12.2 (Table 5.22).
	MADTLocalAPIC       = 0
	madtLocalAPICLen    = 8
	madtLocalAPICFlags  = 4
	MADTLAPICEnabled    = 1 << 0 // Local APIC Flags (Table 5.23)
	MADTLAPICOnlineCapa = 1 << 1 // Online Capable

	// I/O APIC, 5.2.12.3 (Table 5.24).
	MADTIOAPIC        = 1
	madtIOAPICLen     = 12
	madtIOAPICID      = 2
	madtIOAPICAddress = 4
	madtIOAPICGSIBase = 8

	// Interrupt Source Override, 5.2.12.5 (Table 5.25).
	MADTInterruptSourceOverride = 2
	madtISOLen                  = 10
	madtISOBus                  = 2
	madtISOSource               = 3
	madtISOGSI                  = 4
	madtISOFlags                = 8

	// Local APIC Address Override, 5.2.12.8 (Table 5.30).
	MADTLocalAPICAddressOverride = 5
	madtLAPICOverrideLen         = 12
	madtLAPICOverrideAddress     = 4

	// Processor Local x2APIC, 5.2.12.12 (Table 5.36).
	MADTLocalX2APIC      = 9
	madtLocalX2APICLen   = 16
	madtLocalX2APICFlags = 8
)

// MADT is what tamavisor takes from the MADT.
type MADT struct {
	// LocalAPICAddress is the local APIC's physical address: the Local
	// APIC Address Override's 64-bit address when there is one, else the
	// table's 32-bit Local Interrupt Controller Address.
	LocalAPICAddress uint64
	// Overridden says the address came from a Local APIC Address Override.
	Overridden bool
	// PCATCompat is the PCAT_COMPAT flag: the board has dual 8259 PICs.
	PCATCompat bool
	// Processors counts the enabled or online-capable local (x2)APICs.
	Processors int
	IOAPICs    []IOAPIC
	Overrides  []InterruptSourceOverride
}

// IOAPIC is an I/O APIC structure.
type IOAPIC struct {
	ID      uint8
	Address uint32 // I/O APIC Address
	GSIBase uint32 // Global System Interrupt Base
}

// InterruptSourceOverride maps an ISA interrupt to a global system
// interrupt (Flags: MPS INTI flags, polarity and trigger mode).
type InterruptSourceOverride struct {
	Bus, Source uint8
	GSI         uint32
	Flags       uint16
}

// minLen is the smallest Length of the interrupt controller structures
// tamavisor reads; other types are skipped by their Length.
var madtMinLen = map[uint8]int{
	MADTLocalAPIC:                madtLocalAPICLen,
	MADTIOAPIC:                   madtIOAPICLen,
	MADTInterruptSourceOverride:  madtISOLen,
	MADTLocalAPICAddressOverride: madtLAPICOverrideLen,
	MADTLocalX2APIC:              madtLocalX2APICLen,
}

// ParseMADT parses a MADT. Every interrupt controller structure must lie
// inside the table and have at least the length of its type.
func ParseMADT(t []byte) (*MADT, error) {
	if err := checkTable(t, SignatureMADT, madtEntries); err != nil {
		return nil, err
	}
	m := &MADT{
		LocalAPICAddress: uint64(binary.LittleEndian.Uint32(t[madtLocalAPICAddress:])),
		PCATCompat:       binary.LittleEndian.Uint32(t[madtFlags:])&MADTPCATCompat != 0,
	}
	for off := madtEntries; off < len(t); {
		if len(t)-off < 2 {
			return nil, fmt.Errorf("acpi: MADT: %d stray bytes at offset %d", len(t)-off, off)
		}
		typ, n := t[off+madtEntryType], int(t[off+madtEntryLen])
		if n < 2 || n > len(t)-off {
			return nil, fmt.Errorf("acpi: MADT: structure type %d at offset %d has Length %d (%d bytes left)", typ, off, n, len(t)-off)
		}
		if min, ok := madtMinLen[typ]; ok && n < min {
			return nil, fmt.Errorf("acpi: MADT: structure type %d at offset %d has Length %d, want %d", typ, off, n, min)
		}
		e := t[off : off+n]
		switch typ {
		case MADTLocalAPIC:
			if binary.LittleEndian.Uint32(e[madtLocalAPICFlags:])&(MADTLAPICEnabled|MADTLAPICOnlineCapa) != 0 {
				m.Processors++
			}
		case MADTLocalX2APIC:
			if binary.LittleEndian.Uint32(e[madtLocalX2APICFlags:])&(MADTLAPICEnabled|MADTLAPICOnlineCapa) != 0 {
				m.Processors++
			}
		case MADTIOAPIC:
			m.IOAPICs = append(m.IOAPICs, IOAPIC{ID: e[madtIOAPICID],
				Address: binary.LittleEndian.Uint32(e[madtIOAPICAddress:]),
				GSIBase: binary.LittleEndian.Uint32(e[madtIOAPICGSIBase:])})
		case MADTInterruptSourceOverride:
			m.Overrides = append(m.Overrides, InterruptSourceOverride{Bus: e[madtISOBus], Source: e[madtISOSource],
				GSI: binary.LittleEndian.Uint32(e[madtISOGSI:]), Flags: binary.LittleEndian.Uint16(e[madtISOFlags:])})
		case MADTLocalAPICAddressOverride:
			if m.Overridden {
				return nil, errors.New("acpi: MADT: more than one Local APIC Address Override")
			}
			m.LocalAPICAddress, m.Overridden = binary.LittleEndian.Uint64(e[madtLAPICOverrideAddress:]), true
		}
		off += n
	}
	return m, nil
}

// String summarises the MADT for the boot log.
func (m *MADT) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "local APIC %#x", m.LocalAPICAddress)
	if m.Overridden {
		b.WriteString(" (64-bit override)")
	}
	fmt.Fprintf(&b, ", %d processors", m.Processors)
	for _, io := range m.IOAPICs {
		fmt.Fprintf(&b, ", I/O APIC %d at %#x GSI %d+", io.ID, io.Address, io.GSIBase)
	}
	if len(m.IOAPICs) == 0 {
		b.WriteString(", no I/O APIC")
	}
	if len(m.Overrides) > 0 {
		var o []string
		for _, s := range m.Overrides {
			o = append(o, fmt.Sprintf("IRQ%d->GSI%d", s.Source, s.GSI))
		}
		fmt.Fprintf(&b, ", overrides %s", strings.Join(o, " "))
	}
	if m.PCATCompat {
		b.WriteString(", 8259 PICs present (PCAT_COMPAT)")
	} else {
		b.WriteString(", no 8259 PICs")
	}
	return b.String()
}

// FADT: Fixed ACPI Description Table (ACPI 6.4 section 5.2.9, Table 5.9).
// An ACPI 1.0 FADT (revision 1) ends at offset 116 and has no 64-bit
// fields; IAPC_BOOT_ARCH is defined from revision 3 (ACPI 2.0).
const (
	fadtPMTmrBlk       = 76  // PM_TMR_BLK, 32-bit I/O port
	fadtPMTmrLen       = 91  // PM_TMR_LEN
	fadtIAPCBootArch   = 109 // IAPC_BOOT_ARCH, 16-bit
	fadtFlags          = 112 // Flags, 32-bit
	fadtV1Len          = 116 // end of Flags: the ACPI 1.0 table
	fadtXPMTmrBlk      = 208 // X_PM_TMR_BLK, a GAS
	fadtXPMTmrBlkEnd   = fadtXPMTmrBlk + GASLen
	fadtRevisionV2     = 3       // the first revision with IAPC_BOOT_ARCH and X_ fields
	pmTmrLenRequired   = 4       // PM_TMR_LEN of a PM timer
	FADTTmrValExt      = 1 << 8  // Flags: TMR_VAL_EXT, the PM timer counts 32 bits (else 24)
	FADTHWReducedACPI  = 1 << 20 // Flags: HW_REDUCED_ACPI, no fixed hardware (no PM timer)
	BootArchLegacyDevs = 1 << 0  // IAPC_BOOT_ARCH: LEGACY_DEVICES (5.2.9.3, Table 5.11)
	BootArch8042       = 1 << 1  // IAPC_BOOT_ARCH: 8042
	BootArchNoVGA      = 1 << 2  // IAPC_BOOT_ARCH: VGA Not Present
	BootArchNoCMOSRTC  = 1 << 5  // IAPC_BOOT_ARCH: CMOS RTC Not Present

	// PMTimerHz is the ACPI PM timer's frequency (4.8.3.3).
	PMTimerHz = 3579545
)

// FADT is what tamavisor takes from the FADT.
type FADT struct {
	Revision uint8
	Flags    uint32
	// IAPCBootArch is IAPC_BOOT_ARCH; BootArchValid says the table is
	// recent enough to have it.
	IAPCBootArch  uint16
	BootArchValid bool
	// PMTimer is the PM timer's register (X_PM_TMR_BLK when it has an
	// address, else PM_TMR_BLK as an I/O port); its Address is 0 when
	// the board has no PM timer.
	PMTimer GAS
}

// ParseFADT parses a FADT.
func ParseFADT(t []byte) (*FADT, error) {
	if err := checkTable(t, SignatureFADT, fadtV1Len); err != nil {
		return nil, err
	}
	f := &FADT{Revision: t[hdrRevision], Flags: binary.LittleEndian.Uint32(t[fadtFlags:])}
	if f.Revision >= fadtRevisionV2 {
		f.IAPCBootArch, f.BootArchValid = binary.LittleEndian.Uint16(t[fadtIAPCBootArch:]), true
	}
	if f.Flags&FADTHWReducedACPI != 0 {
		return f, nil // the PM timer fields are ignored (5.2.9)
	}
	if f.Revision >= fadtRevisionV2 && len(t) >= fadtXPMTmrBlkEnd {
		if x := parseGAS(t[fadtXPMTmrBlk:]); x.Address != 0 {
			f.PMTimer = x
			return f, nil
		}
	}
	if port := binary.LittleEndian.Uint32(t[fadtPMTmrBlk:]); port != 0 && t[fadtPMTmrLen] >= pmTmrLenRequired {
		f.PMTimer = GAS{SpaceID: SpaceSystemIO, BitWidth: 32, Address: uint64(port)}
	}
	return f, nil
}

// PMTimerBits is the width of the PM timer's counter: 32 with TMR_VAL_EXT,
// else 24.
func (f *FADT) PMTimerBits() uint {
	if f.Flags&FADTTmrValExt != 0 {
		return 32
	}
	return 24
}

// String summarises the FADT for the boot log.
func (f *FADT) String() string {
	var parts []string
	if f.PMTimer.Address != 0 {
		parts = append(parts, fmt.Sprintf("PM timer %s, %d-bit", f.PMTimer, f.PMTimerBits()))
	} else if f.Flags&FADTHWReducedACPI != 0 {
		parts = append(parts, "hardware-reduced ACPI: no PM timer")
	} else {
		parts = append(parts, "no PM timer")
	}
	if f.BootArchValid {
		a := f.IAPCBootArch
		parts = append(parts, fmt.Sprintf("IAPC_BOOT_ARCH %#x (legacy devices %s, 8042 %s, CMOS RTC %s)", a,
			yesNo(a&BootArchLegacyDevs != 0), yesNo(a&BootArch8042 != 0), yesNo(a&BootArchNoCMOSRTC == 0)))
	}
	return strings.Join(parts, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// HPET description table (IA-PC HPET Specification 1.0a, section 3.2.4,
// Table 3; ACPI 6.4 Table 5.6 reserves the signature).
const (
	hpetEventTimerBlockID = 36
	hpetBaseAddress       = 40 // BASE_ADDRESS, a GAS
	hpetNumber            = 52
	hpetMinimumTick       = 53 // Main Counter Minimum Clock_tick in Periodic Mode
	hpetLen               = 56
)

// HPET is what tamavisor takes from the HPET table.
type HPET struct {
	EventTimerBlockID uint32
	BaseAddress       GAS // the register block, in system memory
	Number            uint8
	MinimumTick       uint16
}

// ParseHPET parses an HPET table. Its registers must be in system memory
// (the specification allows nothing else) at a nonzero address.
func ParseHPET(t []byte) (*HPET, error) {
	if err := checkTable(t, SignatureHPET, hpetLen); err != nil {
		return nil, err
	}
	h := &HPET{
		EventTimerBlockID: binary.LittleEndian.Uint32(t[hpetEventTimerBlockID:]),
		BaseAddress:       parseGAS(t[hpetBaseAddress:]),
		Number:            t[hpetNumber],
		MinimumTick:       binary.LittleEndian.Uint16(t[hpetMinimumTick:]),
	}
	if h.BaseAddress.SpaceID != SpaceSystemMemory || h.BaseAddress.Address == 0 {
		return nil, fmt.Errorf("acpi: HPET: registers at %s, want a nonzero system memory address", h.BaseAddress)
	}
	return h, nil
}

// SPCR: Serial Port Console Redirection Table (Microsoft's specification,
// revisions 1-4; ACPI 6.4 Table 5.6 reserves the signature). The
// interface types are the Serial Port Subtypes of Microsoft's Debug Port
// Table 2 (DBG2) specification, Table 3.
const (
	spcrInterfaceType  = 36
	spcrBaseAddress    = 40 // Base Address, a GAS (0: console redirection disabled)
	spcrInterruptType  = 52
	spcrIRQ            = 53
	spcrGSI            = 54
	spcrConfiguredBaud = 58
	spcrParity         = 59
	spcrStopBits       = 60
	spcrFlowControl    = 61
	spcrTerminalType   = 62
	spcrFixedLen       = 63   // through Terminal Type: all tamavisor reads
	SPCR16550          = 0x00 // full 16550 interface
	SPCR16450          = 0x01 // 16550 subset (16450 interface)
	SPCR16550GAS       = 0x12 // 16550-compatible, parameters in the GAS
	spcrBaudAsIs       = 0    // the OS relies on the firmware's setting
)

// spcrBauds are the Configured Baud Rate codes.
var spcrBauds = map[uint8]uint32{3: 9600, 4: 19200, 6: 57600, 7: 115200}

// SPCR is what tamavisor takes from the SPCR table.
type SPCR struct {
	Revision      uint8
	InterfaceType uint8
	BaseAddress   GAS
	IRQ           uint8
	GSI           uint32
	// Baud is the configured baud rate, 0 when the table leaves it as the
	// firmware set it (or gives a code tamavisor does not know).
	Baud                          uint32
	Parity, StopBits, FlowControl uint8
	TerminalType                  uint8
}

// ParseSPCR parses an SPCR table.
func ParseSPCR(t []byte) (*SPCR, error) {
	if err := checkTable(t, SignatureSPCR, spcrFixedLen); err != nil {
		return nil, err
	}
	return &SPCR{
		Revision:      t[hdrRevision],
		InterfaceType: t[spcrInterfaceType],
		BaseAddress:   parseGAS(t[spcrBaseAddress:]),
		IRQ:           t[spcrIRQ],
		GSI:           binary.LittleEndian.Uint32(t[spcrGSI:]),
		Baud:          spcrBauds[t[spcrConfiguredBaud]],
		Parity:        t[spcrParity],
		StopBits:      t[spcrStopBits],
		FlowControl:   t[spcrFlowControl],
		TerminalType:  t[spcrTerminalType],
	}, nil
}

// Is16550 says the UART is 16550-compatible (or a 16450).
func (s *SPCR) Is16550() bool {
	switch s.InterfaceType {
	case SPCR16550, SPCR16450, SPCR16550GAS:
		return true
	}
	return false
}

// IOPort returns the UART's I/O port when it is a 16550-compatible UART in
// I/O space, the kind tamavisor's console driver handles.
func (s *SPCR) IOPort() (uint16, bool) {
	a := s.BaseAddress
	if !s.Is16550() || a.SpaceID != SpaceSystemIO || a.Address == 0 || a.Address > 0xfff8 {
		return 0, false
	}
	return uint16(a.Address), true
}

// String summarises the SPCR table for the boot log.
func (s *SPCR) String() string {
	kind := fmt.Sprintf("interface type %#x", s.InterfaceType)
	if s.Is16550() {
		kind = "16550-compatible"
	}
	baud := "baud as configured"
	if s.Baud != 0 {
		baud = fmt.Sprintf("%d baud", s.Baud)
	}
	if s.BaseAddress.Address == 0 {
		return kind + ", console redirection disabled (base address 0)"
	}
	return fmt.Sprintf("%s UART at %s, %s", kind, s.BaseAddress, baud)
}
