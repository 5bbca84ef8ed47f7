package acpi

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

// withRev returns a copy of table t with header revision rev (checksum fixed).
func withRev(t []byte, rev uint8) []byte {
	t = append([]byte(nil), t...)
	t[hdrRevision] = rev
	return fix(t, 9)
}

// refix returns a copy of t with its Length set to its size and its
// checksum fixed: a structurally changed table that still passes the
// header checks, so the parser's own bounds are what refuses it.
func refix(t []byte) []byte {
	t = append([]byte(nil), t...)
	binary.LittleEndian.PutUint32(t[hdrLength:], uint32(len(t)))
	return fix(t, 9)
}

func gas(space, width uint8, addr uint64) []byte {
	b := make([]byte, GASLen)
	b[gasSpaceID], b[gasBitWidth] = space, width
	binary.LittleEndian.PutUint64(b[gasAddress:], addr)
	return b
}

// madtEntry builds one interrupt controller structure.
func madtEntry(typ uint8, body ...byte) []byte {
	return append([]byte{typ, uint8(2 + len(body))}, body...)
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// q35MADT is a MADT as QEMU q35 builds it: one CPU, an I/O APIC at
// 0xfec00000, overrides for IRQ 0 and the PCI interrupts, a local APIC NMI
// (type 4, skipped), PCAT_COMPAT set.
func q35MADT(extra ...[]byte) []byte {
	body := cat(le32(0xfee00000), le32(MADTPCATCompat),
		madtEntry(MADTLocalAPIC, 0, 0, 1, 0, 0, 0),
		madtEntry(MADTLocalAPIC, 1, 1, 0, 0, 0, 0), // disabled, not online capable
		madtEntry(MADTIOAPIC, cat([]byte{0, 0}, le32(0xfec00000), le32(0))...),
		madtEntry(MADTInterruptSourceOverride, cat([]byte{0, 0}, le32(2), le16(0))...),
		madtEntry(MADTInterruptSourceOverride, cat([]byte{0, 9}, le32(9), le16(0xd))...),
		madtEntry(4, 0xff, 5, 0, 1), // Local APIC NMI
	)
	for _, e := range extra {
		body = append(body, e...)
	}
	return table(SignatureMADT, body)
}

func TestParseMADT(t *testing.T) {
	m, err := ParseMADT(q35MADT())
	if err != nil {
		t.Fatal(err)
	}
	want := &MADT{LocalAPICAddress: 0xfee00000, PCATCompat: true, Processors: 1,
		IOAPICs:   []IOAPIC{{ID: 0, Address: 0xfec00000, GSIBase: 0}},
		Overrides: []InterruptSourceOverride{{Source: 0, GSI: 2}, {Source: 9, GSI: 9, Flags: 0xd}}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	if s := m.String(); !strings.Contains(s, "local APIC 0xfee00000") || !strings.Contains(s, "I/O APIC 0 at 0xfec00000 GSI 0+") ||
		!strings.Contains(s, "8259 PICs present") || !strings.Contains(s, "IRQ0->GSI2") {
		t.Errorf("summary %q", s)
	}

	// A board without 8259s, with a 64-bit local APIC address, an x2APIC
	// processor and two I/O APICs.
	noPIC := table(SignatureMADT, cat(le32(0xfee00000), le32(0),
		madtEntry(MADTLocalAPICAddressOverride, cat([]byte{0, 0}, le64(0x1_fee0_0000))...),
		madtEntry(MADTLocalX2APIC, cat([]byte{0, 0}, le32(0x100), le32(MADTLAPICOnlineCapa), le32(7))...),
		madtEntry(MADTIOAPIC, cat([]byte{8, 0}, le32(0xfec00000), le32(0))...),
		madtEntry(MADTIOAPIC, cat([]byte{9, 0}, le32(0xfec01000), le32(24))...)))
	m, err = ParseMADT(noPIC)
	if err != nil {
		t.Fatal(err)
	}
	if m.LocalAPICAddress != 0x1_fee0_0000 || !m.Overridden || m.PCATCompat || m.Processors != 1 ||
		len(m.IOAPICs) != 2 || m.IOAPICs[1] != (IOAPIC{ID: 9, Address: 0xfec01000, GSIBase: 24}) {
		t.Errorf("got %+v", m)
	}
	if s := m.String(); !strings.Contains(s, "no 8259 PICs") || !strings.Contains(s, "(64-bit override)") {
		t.Errorf("summary %q", s)
	}
}

func TestParseMADTRefused(t *testing.T) {
	good := q35MADT()
	badSum := append([]byte(nil), good...)
	badSum[madtEntries+2]++
	longLen := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(longLen[hdrLength:], uint32(len(good)+1))
	for _, tc := range []struct {
		name string
		b    []byte
		err  string
	}{
		{"signature", table("APIX", good[HeaderLen:]), "not a APIC table"},
		{"checksum", badSum, "checksum"},
		{"Length beyond the bytes", longLen, "Length"},
		{"Length below the bytes", good[:len(good)-1], "Length"},
		{"no flags", refix(good[:madtFlags]), "fixed part"},
		{"entry runs past the end", q35MADT([]byte{MADTIOAPIC, 12, 0, 0}), "has Length 12 (4 bytes left)"},
		{"zero-length entry", q35MADT([]byte{0x7f, 0}), "has Length 0"},
		{"I/O APIC too short", q35MADT(madtEntry(MADTIOAPIC, 0, 0, 0, 0, 0xc0, 0xfe)), "has Length 8, want 12"},
		{"override too short", q35MADT(madtEntry(MADTInterruptSourceOverride, 0, 0, 2)), "want 10"},
		{"address override too short", q35MADT(madtEntry(MADTLocalAPICAddressOverride, 0, 0, 1, 2, 3, 4)), "want 12"},
		{"two address overrides", q35MADT(madtEntry(MADTLocalAPICAddressOverride, cat([]byte{0, 0}, le64(1))...),
			madtEntry(MADTLocalAPICAddressOverride, cat([]byte{0, 0}, le64(2))...)), "more than one"},
		{"stray byte", q35MADT([]byte{1}), "stray"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMADT(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %+v, %v; want an error with %q", m, err, tc.err)
			}
		})
	}
}

// fadt builds a FADT of n bytes (revision rev) with PM_TMR_BLK port, the
// X_PM_TMR_BLK x (if the table reaches it), Flags and IAPC_BOOT_ARCH.
func fadt(n int, rev uint8, port uint32, x []byte, flags uint32, bootArch uint16) []byte {
	body := make([]byte, n-HeaderLen)
	at := func(off int) []byte { return body[off-HeaderLen:] }
	binary.LittleEndian.PutUint32(at(fadtPMTmrBlk), port)
	at(fadtPMTmrLen)[0] = pmTmrLenRequired
	binary.LittleEndian.PutUint16(at(fadtIAPCBootArch), bootArch)
	binary.LittleEndian.PutUint32(at(fadtFlags), flags)
	if n >= fadtXPMTmrBlkEnd && x != nil {
		copy(at(fadtXPMTmrBlk), x)
	}
	return withRev(table(SignatureFADT, body), rev)
}

// fadtV6Len is an ACPI 6 FADT's length.
const fadtV6Len = 276

func TestParseFADT(t *testing.T) {
	io608 := GAS{SpaceID: SpaceSystemIO, BitWidth: 32, Address: 0x608}
	for _, tc := range []struct {
		name     string
		b        []byte
		timer    GAS
		bits     uint
		bootArch bool
		summary  string
	}{
		{"q35 (revision 3, both fields)", fadt(244, 3, 0x608, gas(SpaceSystemIO, 32, 0x608), FADTTmrValExt, BootArchLegacyDevs|BootArch8042),
			io608, 32, true, "PM timer I/O 0x608, 32-bit, IAPC_BOOT_ARCH 0x3 (legacy devices yes, 8042 yes, CMOS RTC yes)"},
		{"X_PM_TMR_BLK wins", fadt(fadtV6Len, 6, 0x608, gas(SpaceSystemIO, 32, 0x1808), 0, 0),
			GAS{SpaceID: SpaceSystemIO, BitWidth: 32, Address: 0x1808}, 24, true, "PM timer I/O 0x1808, 24-bit"},
		{"X_PM_TMR_BLK in memory", fadt(fadtV6Len, 6, 0, gas(SpaceSystemMemory, 32, 0xfed80808), FADTTmrValExt, 0),
			GAS{SpaceID: SpaceSystemMemory, BitWidth: 32, Address: 0xfed80808}, 32, true, "PM timer memory 0xfed80808"},
		{"X_PM_TMR_BLK zero: PM_TMR_BLK", fadt(fadtV6Len, 6, 0x808, gas(0, 0, 0), 0, BootArchNoCMOSRTC),
			GAS{SpaceID: SpaceSystemIO, BitWidth: 32, Address: 0x808}, 24, true, "8042 no, CMOS RTC no"},
		{"ACPI 1.0 (116 bytes)", fadt(fadtV1Len, 1, 0x608, nil, 0, 0xffff), io608, 24, false, "PM timer I/O 0x608, 24-bit"},
		{"revision 1 ignores the X_ fields", fadt(fadtV6Len, 1, 0x608, gas(SpaceSystemIO, 32, 0x1808), 0, 0), io608, 24, false, "0x608"},
		{"no PM timer", fadt(fadtV6Len, 6, 0, nil, 0, 0), GAS{}, 24, true, "no PM timer"},
		{"hardware-reduced", fadt(fadtV6Len, 6, 0x608, gas(SpaceSystemIO, 32, 0x608), FADTHWReducedACPI, 0), GAS{}, 24, true, "hardware-reduced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFADT(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if f.PMTimer != tc.timer || f.PMTimerBits() != tc.bits || f.BootArchValid != tc.bootArch {
				t.Errorf("got %+v (bits %d)", f, f.PMTimerBits())
			}
			if s := f.String(); !strings.Contains(s, tc.summary) {
				t.Errorf("summary %q, want %q", s, tc.summary)
			}
		})
	}
	// PM_TMR_LEN below 4: no PM timer.
	b := fadt(fadtV1Len, 1, 0x608, nil, 0, 0)
	b[fadtPMTmrLen] = 2
	if f, err := ParseFADT(fix(b, 9)); err != nil || f.PMTimer.Address != 0 {
		t.Errorf("PM_TMR_LEN 2: %+v, %v", f, err)
	}
}

func TestParseFADTRefused(t *testing.T) {
	good := fadt(fadtV6Len, 6, 0x608, nil, 0, 0)
	badSum := append([]byte(nil), good...)
	badSum[fadtPMTmrBlk]++
	for _, tc := range []struct {
		name string
		b    []byte
		err  string
	}{
		{"short (no Flags)", refix(good[:fadtV1Len-1]), "fixed part"},
		{"checksum", badSum, "checksum"},
		{"Length", good[:200], "Length 276"},
		{"signature", table("FACS", good[HeaderLen:]), "not a FACP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, err := ParseFADT(tc.b); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %+v, %v; want %q", f, err, tc.err)
			}
		})
	}
	// A revision-6 table cut before X_PM_TMR_BLK falls back to PM_TMR_BLK.
	cut := fadt(fadtXPMTmrBlk+4, 6, 0x608, nil, 0, 0)
	if f, err := ParseFADT(cut); err != nil || f.PMTimer.Address != 0x608 {
		t.Errorf("cut FADT: %+v, %v", f, err)
	}
}

func hpet(space uint8, addr uint64) []byte {
	return table(SignatureHPET, cat(le32(0x8086a201), gas(space, 64, addr), []byte{0}, le16(0x80), []byte{0}))
}

func TestParseHPET(t *testing.T) {
	h, err := ParseHPET(hpet(SpaceSystemMemory, 0xfed00000))
	if err != nil {
		t.Fatal(err)
	}
	if h.BaseAddress.Address != 0xfed00000 || h.EventTimerBlockID != 0x8086a201 || h.MinimumTick != 0x80 {
		t.Errorf("got %+v", h)
	}
	good := hpet(SpaceSystemMemory, 0xfed00000)
	for _, tc := range []struct {
		name string
		b    []byte
		err  string
	}{
		{"I/O space", hpet(SpaceSystemIO, 0x500), "want a nonzero system memory address"},
		{"address 0", hpet(SpaceSystemMemory, 0), "want a nonzero"},
		{"short", refix(good[:hpetLen-1]), "fixed part"},
		{"checksum", append(append([]byte(nil), good[:hpetBaseAddress+4]...), append([]byte{1}, good[hpetBaseAddress+5:]...)...), "checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := ParseHPET(tc.b); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %+v, %v; want %q", h, err, tc.err)
			}
		})
	}
}

// spcr builds an 80-byte SPCR (revision 2).
func spcr(typ uint8, base []byte, baud uint8) []byte {
	body := make([]byte, 80-HeaderLen)
	at := func(off int) []byte { return body[off-HeaderLen:] }
	at(spcrInterfaceType)[0] = typ
	copy(at(spcrBaseAddress), base)
	at(spcrInterruptType)[0] = 1
	at(spcrIRQ)[0] = 4
	at(spcrConfiguredBaud)[0] = baud
	at(spcrStopBits)[0] = 1
	return withRev(table(SignatureSPCR, body), 2)
}

func TestParseSPCR(t *testing.T) {
	for _, tc := range []struct {
		name    string
		b       []byte
		port    uint16
		ok      bool
		baud    uint32
		summary string
	}{
		{"COM1", spcr(SPCR16550, gas(SpaceSystemIO, 8, 0x3f8), 7), 0x3f8, true, 115200, "16550-compatible UART at I/O 0x3f8, 115200 baud"},
		{"COM2 as configured", spcr(SPCR16550GAS, gas(SpaceSystemIO, 8, 0x2f8), 0), 0x2f8, true, 0, "baud as configured"},
		{"16450 at 9600", spcr(SPCR16450, gas(SpaceSystemIO, 8, 0x3e8), 3), 0x3e8, true, 9600, "9600 baud"},
		{"MMIO 16550", spcr(SPCR16550, gas(SpaceSystemMemory, 32, 0xfedc9000), 7), 0, false, 115200, "memory 0xfedc9000"},
		{"PL011", spcr(0x03, gas(SpaceSystemMemory, 32, 0x9000000), 7), 0, false, 115200, "interface type 0x3"},
		{"disabled", spcr(SPCR16550, gas(SpaceSystemIO, 8, 0), 7), 0, false, 115200, "console redirection disabled"},
		{"port beyond I/O space", spcr(SPCR16550, gas(SpaceSystemIO, 8, 0x1_0000), 7), 0, false, 115200, "I/O 0x10000"},
		{"unknown baud code", spcr(SPCR16550, gas(SpaceSystemIO, 8, 0x3f8), 5), 0x3f8, true, 0, "baud as configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSPCR(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			port, ok := s.IOPort()
			if port != tc.port || ok != tc.ok || s.Baud != tc.baud || s.IRQ != 4 {
				t.Errorf("got %+v, port %#x %v", s, port, ok)
			}
			if sum := s.String(); !strings.Contains(sum, tc.summary) {
				t.Errorf("summary %q, want %q", sum, tc.summary)
			}
		})
	}
	good := spcr(SPCR16550, gas(SpaceSystemIO, 8, 0x3f8), 7)
	for _, tc := range []struct {
		name string
		b    []byte
		err  string
	}{
		{"short", refix(good[:spcrFixedLen-1]), "fixed part"},
		{"Length", good[:79], "Length 80"},
		{"checksum", append(append([]byte(nil), good[:spcrConfiguredBaud]...), append([]byte{3}, good[spcrConfiguredBaud+1:]...)...), "checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := ParseSPCR(tc.b); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %+v, %v; want %q", s, err, tc.err)
			}
		})
	}
}

func TestDiscover(t *testing.T) {
	badHPET := hpet(SpaceSystemMemory, 0xfed00000)
	badHPET[hpetNumber]++
	mem := fakeMem{
		0x8000: table(SignatureXSDT, entries(8, 0x9000, 0xa000, 0xb000, 0xc000, 0xd000, 0x123456789000)),
		0x9000: fadt(244, 3, 0x608, gas(SpaceSystemIO, 32, 0x608), FADTTmrValExt, 3),
		0xa000: q35MADT(),
		0xb000: badHPET,
		0xc000: mcfg(0xb0000000),
		0xd000: table(SignatureMADT, make([]byte, 4)), // a second, broken MADT after the first: not parsed
	}
	s, err := Discover(mem, &RSDP{OEMID: "BOCHS", Revision: 2, XSDT: 0x8000})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.TableList(), `XSDT from OEM "BOCHS": FACP APIC HPET(bad) MCFG APIC ????(bad)`; got != want {
		t.Errorf("table list %q, want %q", got, want)
	}
	if s.MADT == nil || s.MADT.LocalAPICAddress != 0xfee00000 || s.FADT == nil || s.FADT.PMTimer.Address != 0x608 ||
		s.HPET != nil || s.SPCR != nil || len(s.Errors) != 0 {
		t.Errorf("survey %+v", s)
	}

	// A table that reads but does not parse is reported.
	mem[0xb000] = table(SignatureHPET, make([]byte, 4))
	s, err = Discover(mem, &RSDP{OEMID: "BOCHS", Revision: 2, XSDT: 0x8000})
	if err != nil || s.HPET != nil || len(s.Errors) != 1 || !strings.Contains(s.Errors[0].Error(), "HPET") {
		t.Errorf("broken HPET: %+v, %v", s, err)
	}
	if _, err := Discover(fakeMem{}, &RSDP{Revision: 2, XSDT: 0x8000}); err == nil {
		t.Error("Discover without a root table succeeded")
	}
}
