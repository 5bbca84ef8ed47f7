// Package acpi finds ACPI system description tables in firmware memory:
// from the Root System Description Pointer (ACPI 6.4 section 5.2.5) through
// the XSDT (5.2.8) or, on ACPI 1.0 firmware, the RSDT (5.2.7) to a table
// by its signature, such as the PCI Express MCFG table. Every structure's
// checksum is checked (5.2.5.3, 5.2.6), and no length read from memory is
// trusted: each is bounded before anything is read with it.
//
// The package is pure Go and host-testable: physical memory is read
// through Mem. A TamaGo implementation reads the identity-mapped tables.
package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Mem reads firmware memory: n bytes at physical address pa, copied, or an
// error when that range cannot be read.
type Mem interface {
	Read(pa uint64, n int) ([]byte, error)
}

// RSDP structure (ACPI 6.4 section 5.2.5.3, Table 5.3): byte offsets.
const (
	RSDPSignature   = "RSD PTR "
	rsdpChecksumLen = 20 // the ACPI 1.0 part, covered by Checksum
	rsdpOEMID       = 9
	rsdpRevision    = 15
	rsdpRSDT        = 16 // RsdtAddress, 32-bit
	rsdpLength      = 20 // Length of the whole structure (revision 2+)
	rsdpXSDT        = 24 // XsdtAddress, 64-bit
	rsdpV2Len       = 36 // revision 2+ structure, covered by Extended Checksum
	rsdpRevision2   = 2  // ACPI 2.0 and later: XSDT and Length valid
	oemIDLen        = 6
)

// System description table header (section 5.2.6, Table 5.4).
const (
	HeaderLen     = 36
	hdrSignature  = 0
	hdrLength     = 4
	signatureLen  = 4
	rsdtEntryLen  = 4 // RSDT: 32-bit table addresses (5.2.7)
	xsdtEntryLen  = 8 // XSDT: 64-bit table addresses (5.2.8)
	SignatureRSDT = "RSDT"
	SignatureXSDT = "XSDT"
	SignatureMCFG = "MCFG" // PCI Firmware Specification 3.3 section 4.1.2
	// MaxTableLen bounds a table's Length: larger tables are refused
	// rather than read (root tables and MCFG are a few hundred bytes;
	// the largest common table, the DSDT, is well below this).
	MaxTableLen = 1 << 20
	// maxEntries bounds the tables a root table lists.
	maxEntries = (MaxTableLen - HeaderLen) / rsdtEntryLen
)

var (
	// ErrNotFound is returned when no table has the signature.
	ErrNotFound = errors.New("acpi: table not found")
	errChecksum = errors.New("checksum mismatch")
)

// RSDP is a parsed Root System Description Pointer.
type RSDP struct {
	OEMID    string
	Revision uint8
	RSDT     uint32 // physical address of the RSDT (0: none)
	XSDT     uint64 // physical address of the XSDT (0: none; revision 2+ only)
}

// ParseRSDP checks and parses an RSDP: its signature and the checksum of
// its first 20 bytes, and for revision 2 and later its Length and the
// extended checksum over Length bytes.
func ParseRSDP(b []byte) (*RSDP, error) {
	if len(b) < rsdpChecksumLen || string(b[:len(RSDPSignature)]) != RSDPSignature {
		return nil, errors.New("acpi: not an RSDP (signature \"RSD PTR \")")
	}
	if sum(b[:rsdpChecksumLen]) != 0 {
		return nil, fmt.Errorf("acpi: RSDP: %w", errChecksum)
	}
	r := &RSDP{
		OEMID:    strings.TrimRight(printable(b[rsdpOEMID:rsdpOEMID+oemIDLen]), " "),
		Revision: b[rsdpRevision],
		RSDT:     binary.LittleEndian.Uint32(b[rsdpRSDT:]),
	}
	if r.Revision < rsdpRevision2 {
		return r, nil
	}
	if len(b) < rsdpV2Len {
		return nil, fmt.Errorf("acpi: RSDP revision %d has %d bytes, want %d", r.Revision, len(b), rsdpV2Len)
	}
	n := binary.LittleEndian.Uint32(b[rsdpLength:])
	if n < rsdpV2Len || uint64(n) > uint64(len(b)) {
		return nil, fmt.Errorf("acpi: RSDP length %d (have %d bytes)", n, len(b))
	}
	if sum(b[:n]) != 0 {
		return nil, fmt.Errorf("acpi: RSDP extended %w", errChecksum)
	}
	r.XSDT = binary.LittleEndian.Uint64(b[rsdpXSDT:])
	return r, nil
}

// Root returns the address of the root table, and its signature: the XSDT
// when the RSDP gives one, else the RSDT.
func (r *RSDP) Root() (uint64, string, error) {
	switch {
	case r.XSDT != 0:
		return r.XSDT, SignatureXSDT, nil
	case r.RSDT != 0:
		return uint64(r.RSDT), SignatureRSDT, nil
	}
	return 0, "", errors.New("acpi: RSDP gives neither an XSDT nor an RSDT")
}

// ReadTable reads the table at pa: its header, then Length bytes (bounded
// by HeaderLen and MaxTableLen), and checks the checksum (section 5.2.6:
// all bytes sum to zero). want, if not empty, is the expected signature.
func ReadTable(m Mem, pa uint64, want string) ([]byte, error) {
	h, err := m.Read(pa, HeaderLen)
	if err != nil {
		return nil, fmt.Errorf("acpi: table at %#x: %w", pa, err)
	}
	if len(h) != HeaderLen {
		return nil, fmt.Errorf("acpi: table at %#x: short read", pa)
	}
	sig := printable(h[hdrSignature : hdrSignature+signatureLen])
	if want != "" && sig != want {
		return nil, fmt.Errorf("acpi: table at %#x is %q, want %q", pa, sig, want)
	}
	n := binary.LittleEndian.Uint32(h[hdrLength:])
	if n < HeaderLen || n > MaxTableLen {
		return nil, fmt.Errorf("acpi: %s at %#x: length %d out of range [%d, %d]", sig, pa, n, HeaderLen, MaxTableLen)
	}
	t, err := m.Read(pa, int(n))
	if err != nil {
		return nil, fmt.Errorf("acpi: %s at %#x: %w", sig, pa, err)
	}
	if len(t) != int(n) || string(t[:signatureLen]) != string(h[:signatureLen]) {
		return nil, fmt.Errorf("acpi: %s at %#x changed while read", sig, pa)
	}
	if sum(t) != 0 {
		return nil, fmt.Errorf("acpi: %s at %#x: %w", sig, pa, errChecksum)
	}
	return t, nil
}

// Entries returns the table addresses a root table (RSDT or XSDT, already
// checked by ReadTable) lists.
func Entries(root []byte) ([]uint64, error) {
	if len(root) < HeaderLen {
		return nil, errors.New("acpi: root table shorter than its header")
	}
	size := 0
	switch sig := string(root[:signatureLen]); sig {
	case SignatureRSDT:
		size = rsdtEntryLen
	case SignatureXSDT:
		size = xsdtEntryLen
	default:
		return nil, fmt.Errorf("acpi: %q is not a root table", printable(root[:signatureLen]))
	}
	body := root[HeaderLen:]
	if len(body)%size != 0 {
		return nil, fmt.Errorf("acpi: %s of %d bytes: entries not a multiple of %d bytes", root[:signatureLen], len(root), size)
	}
	out := make([]uint64, 0, min(len(body)/size, maxEntries))
	for ; len(body) > 0; body = body[size:] {
		if size == rsdtEntryLen {
			out = append(out, uint64(binary.LittleEndian.Uint32(body)))
		} else {
			out = append(out, binary.LittleEndian.Uint64(body))
		}
	}
	return out, nil
}

// rootEntries reads the root table (XSDT or RSDT) rsdp names and returns
// its signature and the addresses of the tables it lists.
func rootEntries(m Mem, rsdp *RSDP) (rootSig string, entries []uint64, err error) {
	pa, rootSig, err := rsdp.Root()
	if err != nil {
		return "", nil, err
	}
	root, err := ReadTable(m, pa, rootSig)
	if err != nil {
		return "", nil, err
	}
	entries, err = Entries(root)
	return rootSig, entries, err
}

// Find returns the first table with signature sig that the root table of
// rsdp lists and whose checksum is correct. Tables with another signature
// are identified by their header alone. A listed table that cannot be
// read or fails its checksum is skipped; if none is usable the error
// names the last problem.
func Find(m Mem, rsdp *RSDP, sig string) ([]byte, error) {
	rootSig, entries, err := rootEntries(m, rsdp)
	if err != nil {
		return nil, err
	}
	bad := ErrNotFound
	for _, e := range entries {
		h, err := m.Read(e, HeaderLen)
		if err != nil || len(h) != HeaderLen || string(h[:signatureLen]) != sig {
			continue
		}
		t, err := ReadTable(m, e, sig)
		if err != nil {
			bad = fmt.Errorf("%w (%v)", ErrNotFound, err)
			continue
		}
		return t, nil
	}
	return nil, fmt.Errorf("%s in %s: %w", sig, rootSig, bad)
}

// sum is the 8-bit sum of b.
func sum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}

// printable returns b with bytes outside printable ASCII as '?'.
func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < ' ' || c > '~' {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}
