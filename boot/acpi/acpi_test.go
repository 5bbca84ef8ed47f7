package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeMem is physical memory made of regions; a read must fall inside one.
type fakeMem map[uint64][]byte

func (m fakeMem) Read(pa uint64, n int) ([]byte, error) {
	for base, b := range m {
		if pa >= base && pa-base <= uint64(len(b)) && uint64(n) <= uint64(len(b))-(pa-base) {
			off := pa - base
			return append([]byte(nil), b[off:off+uint64(n)]...), nil
		}
	}
	return nil, fmt.Errorf("no memory at [%#x, +%d)", pa, n)
}

// fix sets b[at] so that b sums to zero.
func fix(b []byte, at int) []byte {
	b[at] = 0
	b[at] = -sum(b)
	return b
}

// table builds a system description table with a correct checksum.
func table(sig string, body []byte) []byte {
	t := make([]byte, HeaderLen+len(body))
	copy(t, sig)
	binary.LittleEndian.PutUint32(t[hdrLength:], uint32(len(t)))
	copy(t[10:], "TAMAVI")
	copy(t[HeaderLen:], body)
	return fix(t, 9)
}

func rsdp(rev uint8, rsdt uint32, xsdt uint64) []byte {
	b := make([]byte, rsdpV2Len)
	copy(b, RSDPSignature)
	copy(b[rsdpOEMID:], "BOCHS ")
	b[rsdpRevision] = rev
	binary.LittleEndian.PutUint32(b[rsdpRSDT:], rsdt)
	if rev < rsdpRevision2 {
		return fix(b[:rsdpChecksumLen], 8)
	}
	binary.LittleEndian.PutUint32(b[rsdpLength:], rsdpV2Len)
	binary.LittleEndian.PutUint64(b[rsdpXSDT:], xsdt)
	fix(b[:rsdpChecksumLen], 8)
	return fix(b, 32)
}

func entries(size int, addrs ...uint64) []byte {
	b := make([]byte, size*len(addrs))
	for i, a := range addrs {
		if size == rsdtEntryLen {
			binary.LittleEndian.PutUint32(b[i*size:], uint32(a))
		} else {
			binary.LittleEndian.PutUint64(b[i*size:], a)
		}
	}
	return b
}

// mcfg is an MCFG with one allocation (PCI Firmware 3.3, 4.1.2).
func mcfg(base uint64) []byte {
	body := make([]byte, 8+16)
	binary.LittleEndian.PutUint64(body[8:], base)
	body[8+11] = 0xff
	return table(SignatureMCFG, body)
}

func TestParseRSDP(t *testing.T) {
	v2 := rsdp(2, 0x7000, 0x8000)
	badExt := append([]byte(nil), v2...)
	badExt[33]++
	longer := append([]byte(nil), v2...)
	binary.LittleEndian.PutUint32(longer[rsdpLength:], 64)
	fix(longer[:rsdpChecksumLen], 8)
	fix(longer, 32)
	for _, tc := range []struct {
		name string
		b    []byte
		want *RSDP
		err  string
	}{
		{"ACPI 1.0", rsdp(0, 0x7000, 0), &RSDP{OEMID: "BOCHS", RSDT: 0x7000}, ""},
		{"ACPI 2.0", v2, &RSDP{OEMID: "BOCHS", Revision: 2, RSDT: 0x7000, XSDT: 0x8000}, ""},
		{"short", v2[:19], nil, "not an RSDP"},
		{"signature", append([]byte("RSD PTX "), v2[8:]...), nil, "not an RSDP"},
		{"checksum", append(append([]byte(nil), v2[:9]...), append([]byte{'X'}, v2[10:]...)...), nil, "checksum"},
		{"extended checksum", badExt, nil, "extended checksum"},
		{"revision 2 cut to 20 bytes", v2[:20], nil, "has 20 bytes"},
		{"length beyond the copy", longer, nil, "RSDP length 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRSDP(tc.b)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || *got != *tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestFind(t *testing.T) {
	fadt := table("FACP", make([]byte, 80))
	good := mcfg(0xb0000000)
	badSum := append([]byte(nil), good...)
	badSum[HeaderLen+8]++
	huge := table(SignatureMCFG, nil)
	binary.LittleEndian.PutUint32(huge[hdrLength:], MaxTableLen+1)
	truncated := table(SignatureMCFG, nil)
	binary.LittleEndian.PutUint32(truncated[hdrLength:], 200) // past the region's end
	short := table(SignatureMCFG, nil)
	binary.LittleEndian.PutUint32(short[hdrLength:], 20)
	oddXSDT := table(SignatureXSDT, make([]byte, 12))

	for _, tc := range []struct {
		name string
		mem  fakeMem
		rsdp *RSDP
		want []byte
		err  string
	}{
		{"XSDT", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x9000, 0xa000)), 0x9000: fadt, 0xa000: good},
			&RSDP{Revision: 2, RSDT: 0x7000, XSDT: 0x8000}, good, ""},
		{"RSDT (ACPI 1.0)", fakeMem{0x7000: table(SignatureRSDT, entries(4, 0x9000, 0xa000)), 0x9000: fadt, 0xa000: good},
			&RSDP{RSDT: 0x7000}, good, ""},
		{"XSDT preferred", fakeMem{0x7000: table(SignatureRSDT, entries(4, 0x9000)), 0x8000: table(SignatureXSDT, entries(8, 0xa000)),
			0x9000: mcfg(0xe0000000), 0xa000: good}, &RSDP{Revision: 2, RSDT: 0x7000, XSDT: 0x8000}, good, ""},
		{"bad checksum skipped", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x9000, 0xa000)), 0x9000: badSum, 0xa000: good},
			&RSDP{Revision: 2, XSDT: 0x8000}, good, ""},
		{"only a bad checksum", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x9000)), 0x9000: badSum},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "checksum mismatch"},
		{"absent", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x9000)), 0x9000: fadt},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "MCFG in XSDT: acpi: table not found"},
		{"entry outside memory", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x123456789000))},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "table not found"},
		{"length too large", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x9000)), 0x9000: huge},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "out of range"},
		{"length past memory", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x9000)), 0x9000: truncated},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "no memory"},
		{"length below header", fakeMem{0x8000: table(SignatureXSDT, entries(8, 0x9000)), 0x9000: short},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "out of range"},
		{"root checksum", fakeMem{0x8000: append(table(SignatureXSDT, entries(8, 0x9000))[:9], append([]byte{1}, table(SignatureXSDT, entries(8, 0x9000))[10:]...)...), 0x9000: good},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "XSDT at 0x8000: checksum"},
		{"root signature", fakeMem{0x8000: table(SignatureRSDT, entries(8, 0x9000)), 0x9000: good},
			&RSDP{Revision: 2, XSDT: 0x8000}, nil, "is \"RSDT\", want \"XSDT\""},
		{"XSDT entries not whole", fakeMem{0x8000: oddXSDT}, &RSDP{Revision: 2, XSDT: 0x8000}, nil, "not a multiple"},
		{"no root", fakeMem{}, &RSDP{}, nil, "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Find(tc.mem, tc.rsdp, SignatureMCFG)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(tc.err, "not found") && !errors.Is(err, ErrNotFound) {
					t.Errorf("err %v is not ErrNotFound", err)
				}
				return
			}
			if err != nil || string(got) != string(tc.want) {
				t.Fatalf("got % x, %v; want % x", got, err, tc.want)
			}
		})
	}
}
