package acpi

import (
	"fmt"
	"strings"
)

// Survey is what the ACPI tables say about the board: which tables the
// root table lists, and the parsed MADT, FADT, HPET and SPCR tables (nil
// when absent or refused; the refusal is in Errors).
type Survey struct {
	OEMID  string // the RSDP's OEM ID
	Root   string // SignatureXSDT or SignatureRSDT
	Tables []TableEntry
	MADT   *MADT
	FADT   *FADT
	HPET   *HPET
	SPCR   *SPCR
	Errors []error
}

// TableEntry is one table the root table lists.
type TableEntry struct {
	Signature string
	Address   uint64
	Err       error // the table cannot be read or fails its checksum
}

// Discover reads the root table of rsdp and every table it lists, and
// parses the MADT, FADT, HPET and SPCR tables (the first good one of
// each). It fails only when the root table cannot be read.
func Discover(m Mem, rsdp *RSDP) (*Survey, error) {
	rootSig, addrs, err := rootEntries(m, rsdp)
	if err != nil {
		return nil, err
	}
	s := &Survey{OEMID: rsdp.OEMID, Root: rootSig}
	for _, a := range addrs {
		e := TableEntry{Address: a, Signature: "????"}
		h, err := m.Read(a, HeaderLen)
		if err == nil && len(h) == HeaderLen {
			e.Signature = printable(h[:signatureLen])
		}
		t, err := ReadTable(m, a, "")
		if err != nil {
			e.Err = err
			s.Tables = append(s.Tables, e)
			continue
		}
		s.Tables = append(s.Tables, e)
		switch e.Signature {
		case SignatureMADT:
			if s.MADT == nil {
				s.MADT, err = ParseMADT(t)
			}
		case SignatureFADT:
			if s.FADT == nil {
				s.FADT, err = ParseFADT(t)
			}
		case SignatureHPET:
			if s.HPET == nil {
				s.HPET, err = ParseHPET(t)
			}
		case SignatureSPCR:
			if s.SPCR == nil {
				s.SPCR, err = ParseSPCR(t)
			}
		}
		if err != nil {
			s.Errors = append(s.Errors, err)
		}
	}
	return s, nil
}

// TableList is the boot log's list of tables: "XSDT from OEM BOCHS: FACP
// APIC HPET MCFG WAET", a table that cannot be used marked "(bad)".
func (s *Survey) TableList() string {
	var names []string
	for _, t := range s.Tables {
		n := t.Signature
		if t.Err != nil {
			n += "(bad)"
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		names = append(names, "none")
	}
	return fmt.Sprintf("%s from OEM %q: %s", s.Root, s.OEMID, strings.Join(names, " "))
}
