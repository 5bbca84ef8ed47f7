package acpi

import (
	"encoding/binary"
	"testing"

	"tamavisor/boot/pci"
)

// fuzzBase is where the fuzz memory starts; the fuzzer's tables point
// into it (or anywhere else, which must be refused).
const fuzzBase = 0x1000

// FuzzACPITables: the first 36 bytes are an RSDP, the rest is memory at
// fuzzBase. Parsing and the walk to MCFG must never panic or read outside
// memory; a table returned must carry the MCFG signature, a length within
// bounds equal to its size, a zero checksum, and be what memory holds at
// one of the root table's entries. pci.ParseMCFG must take it without
// panicking.
func FuzzACPITables(f *testing.F) {
	// A valid layout: XSDT at fuzzBase, FACP and MCFG after it.
	x := table(SignatureXSDT, entries(8, fuzzBase+0x100, fuzzBase+0x200))
	r := table(SignatureRSDT, entries(4, fuzzBase+0x200))
	mem := make([]byte, 0x300)
	copy(mem, x)
	copy(mem[0x80:], r)
	copy(mem[0x100:], table("FACP", make([]byte, 40)))
	copy(mem[0x200:], mcfg(0xb0000000))
	f.Add(append(rsdp(2, fuzzBase+0x80, fuzzBase), mem...))
	f.Add(append(rsdp(0, fuzzBase+0x80, 0), mem...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < rsdpV2Len {
			return
		}
		m := fakeMem{fuzzBase: data[rsdpV2Len:]}
		rs, err := ParseRSDP(data[:rsdpV2Len])
		if err != nil {
			return
		}
		got, err := Find(m, rs, SignatureMCFG)
		if err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(got[hdrLength:])
		if string(got[:signatureLen]) != SignatureMCFG || int(n) != len(got) || n < HeaderLen || n > MaxTableLen || sum(got) != 0 {
			t.Fatalf("Find returned a bad table: % x", got)
		}
		pa, sig, _ := rs.Root()
		root, err := ReadTable(m, pa, sig)
		if err != nil {
			t.Fatalf("Find succeeded but the root table does not read: %v", err)
		}
		es, _ := Entries(root)
		found := false
		for _, e := range es {
			if b, err := m.Read(e, len(got)); err == nil && string(b) == string(got) {
				found = true
			}
		}
		if !found {
			t.Fatalf("Find returned a table no root entry points at")
		}
		pci.ParseMCFG(got)
		if s, err := Discover(m, rs); err == nil {
			_ = s.TableList()
		}
	})
}

// FuzzACPIParsers: any bytes, under each parser's signature (the first
// byte picks it; Length and checksum are set right so that the fuzzer
// reaches the structure checks), must be parsed or refused without a
// panic, and what a parser returns must lie within the table: every
// MADT structure counted took at least its minimum length, a PM timer
// found has a nonzero address, an I/O port from SPCR fits in 16 bits.
func FuzzACPIParsers(f *testing.F) {
	for i, t := range [][]byte{q35MADT(), fadt(244, 3, 0x608, gas(SpaceSystemIO, 32, 0x608), FADTTmrValExt, 3),
		hpet(SpaceSystemMemory, 0xfed00000), spcr(SPCR16550, gas(SpaceSystemIO, 8, 0x3f8), 7)} {
		f.Add(uint8(i), t[HeaderLen:])
	}
	sigs := []string{SignatureMADT, SignatureFADT, SignatureHPET, SignatureSPCR}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		if len(body) > MaxTableLen-HeaderLen {
			return
		}
		tb := table(sigs[int(which)%len(sigs)], body)
		if which&0x80 != 0 && len(tb) > HeaderLen { // sometimes a wrong checksum
			tb[len(tb)-1]++
		}
		if m, err := ParseMADT(tb); err == nil {
			if n := len(m.IOAPICs)*madtIOAPICLen + len(m.Overrides)*madtISOLen + m.Processors*madtLocalAPICLen; n > len(tb)-madtEntries {
				t.Fatalf("MADT of %d bytes gave %d bytes of structures", len(tb), n)
			}
		}
		if fa, err := ParseFADT(tb); err == nil {
			if fa.PMTimer.SpaceID == SpaceSystemIO && fa.PMTimer.Address == 0 && fa.PMTimer.BitWidth != 0 {
				t.Fatalf("FADT gave a PM timer at port 0: %+v", fa)
			}
			_ = fa.String()
		}
		if h, err := ParseHPET(tb); err == nil && (h.BaseAddress.Address == 0 || h.BaseAddress.SpaceID != SpaceSystemMemory) {
			t.Fatalf("HPET accepted at %s", h.BaseAddress)
		}
		if s, err := ParseSPCR(tb); err == nil {
			if port, ok := s.IOPort(); ok && (port == 0 || !s.Is16550()) {
				t.Fatalf("SPCR console port %#x from %+v", port, s)
			}
			_ = s.String()
		}
	})
}
