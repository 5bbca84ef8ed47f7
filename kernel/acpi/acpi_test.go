package acpi

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

var le = binary.LittleEndian

// A checker written from the spec's offsets, independent of the builder.

type view struct {
	t    *testing.T
	blob []byte
	base uint64
	used [][2]uint64 // table ranges, to catch overlaps
}

// at returns n bytes at gpa, failing if they are not inside the blob.
func (v *view) at(gpa, n uint64, what string) []byte {
	v.t.Helper()
	end := v.base + uint64(len(v.blob))
	if gpa < v.base || gpa > end || n > end-gpa {
		v.t.Fatalf("%s [%#x, +%#x) outside the tables [%#x, %#x)", what, gpa, n, v.base, end)
	}
	return v.blob[gpa-v.base : gpa-v.base+n]
}

func (v *view) claim(gpa, n uint64, what string) {
	v.t.Helper()
	for _, u := range v.used {
		if gpa < u[1] && u[0] < gpa+n {
			v.t.Fatalf("%s [%#x, +%#x) overlaps another table", what, gpa, n)
		}
	}
	v.used = append(v.used, [2]uint64{gpa, gpa + n})
}

func checksum(b []byte) (s uint8) {
	for _, c := range b {
		s += c
	}
	return s
}

// table checks a description table at gpa: signature, length, revision,
// checksum, header identification.
func (v *view) table(gpa uint64, sig string, rev uint8) []byte {
	v.t.Helper()
	h := v.at(gpa, 36, sig+" header")
	if string(h[0:4]) != sig {
		v.t.Fatalf("table at %#x is %q, want %q", gpa, h[0:4], sig)
	}
	n := uint64(le.Uint32(h[4:]))
	if n < 36 {
		v.t.Fatalf("%s length %d", sig, n)
	}
	b := v.at(gpa, n, sig)
	v.claim(gpa, n, sig)
	if checksum(b) != 0 {
		v.t.Errorf("%s checksum: table sums to %#x", sig, checksum(b))
	}
	if b[8] != rev {
		v.t.Errorf("%s revision %d, want %d", sig, b[8], rev)
	}
	if string(b[10:16]) != "TAMAVI" || string(b[16:24]) != "TAMAVISR" || string(b[28:32]) != "TAMA" {
		v.t.Errorf("%s header ids %q", sig, b[10:36])
	}
	return b
}

type tables struct {
	rsdp, xsdt, fadt, madt, dsdt, facs []byte
	madtEntries                        [][]byte
}

func parse(t *testing.T, blob []byte, base, rsdp uint64) *tables {
	t.Helper()
	v := &view{t: t, blob: blob, base: base}
	var ts tables
	if rsdp%16 != 0 {
		t.Fatalf("RSDP at %#x not on a 16-byte boundary", rsdp)
	}
	ts.rsdp = v.at(rsdp, 36, "RSDP")
	v.claim(rsdp, 36, "RSDP")
	r := ts.rsdp
	if string(r[:8]) != "RSD PTR " || checksum(r[:20]) != 0 || checksum(r[:36]) != 0 {
		t.Fatalf("RSDP %q: checksums %#x %#x", r[:8], checksum(r[:20]), checksum(r[:36]))
	}
	if r[15] != 2 || le.Uint32(r[20:]) != 36 || le.Uint32(r[16:]) != 0 || string(r[9:15]) != "TAMAVI" {
		t.Errorf("RSDP revision %d length %d RSDT %#x OEM %q", r[15], le.Uint32(r[20:]), le.Uint32(r[16:]), r[9:15])
	}
	// Linux scans the BIOS area on 16-byte boundaries: the first valid
	// signature it meets is this RSDP.
	for off := (16 - base%16) % 16; off+36 <= uint64(len(blob)); off += 16 {
		if bytes.Equal(blob[off:off+8], []byte("RSD PTR ")) && checksum(blob[off:off+20]) == 0 {
			if base+off != rsdp {
				t.Errorf("scan finds an RSDP at %#x, Build said %#x", base+off, rsdp)
			}
			break
		}
	}

	ts.xsdt = v.table(le.Uint64(r[24:]), "XSDT", 1)
	if (len(ts.xsdt)-36)%8 != 0 || len(ts.xsdt) != 36+2*8 {
		t.Fatalf("XSDT of %d bytes, want 2 entries", len(ts.xsdt))
	}
	ts.fadt = v.table(le.Uint64(ts.xsdt[36:]), "FACP", 6)
	ts.madt = v.table(le.Uint64(ts.xsdt[44:]), "APIC", 4)

	if len(ts.fadt) != 276 {
		t.Fatalf("FADT of %d bytes, want 276 (ACPI 6.0)", len(ts.fadt))
	}
	dsdt := le.Uint64(ts.fadt[140:])
	if le.Uint32(ts.fadt[40:]) != uint32(dsdt) {
		t.Errorf("FADT DSDT %#x, X_DSDT %#x", le.Uint32(ts.fadt[40:]), dsdt)
	}
	ts.dsdt = v.table(dsdt, "DSDT", 2)
	if facs := le.Uint64(ts.fadt[132:]); facs != 0 {
		if facs%64 != 0 || le.Uint32(ts.fadt[36:]) != 0 {
			t.Errorf("FACS at %#x (64-byte aligned?), FIRMWARE_CTRL %#x (must be 0)", facs, le.Uint32(ts.fadt[36:]))
		}
		ts.facs = v.at(facs, 64, "FACS")
		v.claim(facs, 64, "FACS")
		if string(ts.facs[:4]) != "FACS" || le.Uint32(ts.facs[4:]) != 64 || ts.facs[32] != 2 {
			t.Errorf("FACS %q length %d version %d", ts.facs[:4], le.Uint32(ts.facs[4:]), ts.facs[32])
		}
	}

	for off := 44; off < len(ts.madt); {
		if off+2 > len(ts.madt) || ts.madt[off+1] < 2 || off+int(ts.madt[off+1]) > len(ts.madt) {
			t.Fatalf("MADT entry at %d runs past the table", off)
		}
		n := int(ts.madt[off+1])
		ts.madtEntries = append(ts.madtEntries, ts.madt[off:off+n])
		off += n
	}
	return &ts
}

func TestBuildHWReduced(t *testing.T) {
	blob, rsdp, err := Build(DefaultBase, Config{HWReduced: true, IOAPICID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rsdp != 0xE0000 || DefaultBase+uint64(len(blob)) > 0x100000 {
		t.Errorf("RSDP at %#x, tables end at %#x", rsdp, DefaultBase+len(blob))
	}
	ts := parse(t, blob, DefaultBase, rsdp)
	if ts.facs != nil {
		t.Error("HW-reduced platform with a FACS")
	}
	f := ts.fadt
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"Flags", uint64(le.Uint32(f[112:])), 1<<20 | 1<<10 | 1<<5 | 1<<4},
		{"IAPC_BOOT_ARCH", uint64(le.Uint16(f[109:])), 0x5}, // legacy devices, VGA not present; 8042 and no-RTC clear
		{"SCI_INT", uint64(le.Uint16(f[46:])), 0},
		{"PM1a_EVT_BLK", uint64(le.Uint32(f[56:])), 0},
		{"PM_TMR_BLK", uint64(le.Uint32(f[76:])), 0},
		{"PM_TMR_LEN", uint64(f[91]), 0},
		{"RESET_VALUE", uint64(f[128]), 6},
		{"FADT minor", uint64(f[131]), 0},
		{"X_FIRMWARE_CTRL", le.Uint64(f[132:]), 0},
	} {
		if c.got != c.want {
			t.Errorf("FADT %s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if want := []byte{1, 8, 0, 1, 0xF9, 0x0C, 0, 0, 0, 0, 0, 0}; !bytes.Equal(f[116:128], want) {
		t.Errorf("RESET_REG % x, want % x (system I/O, 8 bits, byte access, port 0xCF9)", f[116:128], want)
	}
	if !bytes.Equal(f[148:268], make([]byte, 120)) {
		t.Error("X_ PM blocks set on a HW-reduced platform")
	}
	if len(ts.dsdt) != 36 {
		t.Errorf("DSDT of %d bytes", len(ts.dsdt))
	}

	m := ts.madt
	if le.Uint32(m[36:]) != 0xFEE00000 || le.Uint32(m[40:]) != 0 {
		t.Errorf("MADT local APIC %#x flags %#x", le.Uint32(m[36:]), le.Uint32(m[40:]))
	}
	want := [][]byte{
		{0, 8, 0, 0, 1, 0, 0, 0},                    // local APIC: UID 0, ID 0, enabled
		{1, 12, 1, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0}, // I/O APIC 1 at 0xFEC00000, GSI base 0
		{2, 10, 0, 0, 2, 0, 0, 0, 5, 0},             // ISA IRQ 0 -> GSI 2, edge, active high
	}
	if len(ts.madtEntries) != len(want) {
		t.Fatalf("MADT entries % x", ts.madtEntries)
	}
	for i := range want {
		if !bytes.Equal(ts.madtEntries[i], want[i]) {
			t.Errorf("MADT entry %d = % x, want % x", i, ts.madtEntries[i], want[i])
		}
	}
}

func TestBuildFull(t *testing.T) {
	cfg := Config{PCATCompat: true, I8042: true, SCI: 9, PM1aEventBlock: 0x600, PM1aControlBlock: 0x604, PMTimerBlock: 0x608, LINT1NMI: true}
	const base = 0xF0000
	blob, rsdp, err := Build(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := parse(t, blob, base, rsdp)
	if ts.facs == nil {
		t.Fatal("full ACPI without a FACS")
	}
	f := ts.fadt
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"Flags", uint64(le.Uint32(f[112:])), 1<<10 | 1<<5 | 1<<4},
		{"IAPC_BOOT_ARCH", uint64(le.Uint16(f[109:])), 0x7}, // + 8042
		{"SCI_INT", uint64(le.Uint16(f[46:])), 9},
		{"SMI_CMD", uint64(le.Uint32(f[48:])), 0}, // always in ACPI mode
		{"PM1a_EVT_BLK", uint64(le.Uint32(f[56:])), 0x600},
		{"PM1a_CNT_BLK", uint64(le.Uint32(f[64:])), 0x604},
		{"PM_TMR_BLK", uint64(le.Uint32(f[76:])), 0x608},
		{"PM1_EVT_LEN", uint64(f[88]), 4},
		{"PM1_CNT_LEN", uint64(f[89]), 2},
		{"PM_TMR_LEN", uint64(f[91]), 4},
	} {
		if c.got != c.want {
			t.Errorf("FADT %s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	for _, c := range []struct {
		off  int
		want []byte
	}{
		{148, []byte{1, 32, 0, 2, 0x00, 0x06, 0, 0, 0, 0, 0, 0}}, // X_PM1a_EVT_BLK
		{172, []byte{1, 16, 0, 2, 0x04, 0x06, 0, 0, 0, 0, 0, 0}}, // X_PM1a_CNT_BLK
		{208, []byte{1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0}}, // X_PM_TMR_BLK
	} {
		if !bytes.Equal(f[c.off:c.off+12], c.want) {
			t.Errorf("FADT GAS at %d = % x, want % x", c.off, f[c.off:c.off+12], c.want)
		}
	}
	if le.Uint32(ts.madt[40:]) != 1 {
		t.Error("PCAT_COMPAT clear")
	}
	want := [][]byte{
		{0, 8, 0, 0, 1, 0, 0, 0},
		{1, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0},
		{2, 10, 0, 0, 2, 0, 0, 0, 5, 0},
		{2, 10, 0, 9, 9, 0, 0, 0, 0xF, 0}, // SCI: level, active low
		{4, 6, 0xFF, 5, 0, 1},             // NMI on LINT1 of every processor
	}
	if len(ts.madtEntries) != len(want) {
		t.Fatalf("MADT entries % x", ts.madtEntries)
	}
	for i := range want {
		if !bytes.Equal(ts.madtEntries[i], want[i]) {
			t.Errorf("MADT entry %d = % x, want % x", i, ts.madtEntries[i], want[i])
		}
	}
}

func TestBuildRefusals(t *testing.T) {
	full := Config{SCI: 9, PM1aEventBlock: 0x600, PM1aControlBlock: 0x604}
	for _, c := range []struct {
		name string
		base uint64
		cfg  Config
		want string
	}{
		{"base 0", 0, Config{HWReduced: true}, "base 0x0"},
		{"base unaligned", 0xE0008, Config{HWReduced: true}, "16-byte aligned"},
		{"above 4 GiB", 0xFFFFFF00, Config{HWReduced: true}, "above 4 GiB"},
		{"wrapping base", ^uint64(0) &^ 15, Config{HWReduced: true}, "above 4 GiB"},
		{"base 4 GiB", 1 << 32, Config{HWReduced: true}, "above 4 GiB"},
		{"HW-reduced with SCI", DefaultBase, Config{HWReduced: true, SCI: 9}, "HW-reduced"},
		{"HW-reduced with PM timer", DefaultBase, Config{HWReduced: true, PMTimerBlock: 0x608}, "HW-reduced"},
		{"full without SCI", DefaultBase, Config{PM1aEventBlock: 1, PM1aControlBlock: 2}, "needs an SCI"},
		{"SCI on the cascade", DefaultBase, Config{SCI: 2, PM1aEventBlock: 1, PM1aControlBlock: 2}, "not 2"},
		{"SCI not ISA", DefaultBase, Config{SCI: 16, PM1aEventBlock: 1, PM1aControlBlock: 2}, "not 16"},
		{"full without PM1a", DefaultBase, Config{SCI: 9}, "PM1a"},
		{"full without PM1a control", DefaultBase, Config{SCI: 9, PM1aEventBlock: 1}, "PM1a"},
	} {
		blob, rsdp, err := Build(c.base, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || blob != nil || rsdp != 0 {
			t.Errorf("%s: %v, want an error about %q", c.name, err, c.want)
		}
	}
	if _, _, err := Build(0xFFFFF000-0x200, full); err != nil {
		t.Errorf("tables ending below 4 GiB: %v", err)
	}
}

// TestChecksumsMatter: the checker catches a flipped byte in every table.
func TestChecksumsMatter(t *testing.T) {
	blob, rsdp, err := Build(DefaultBase, Config{HWReduced: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := parse(t, blob, DefaultBase, rsdp)
	for _, tab := range [][]byte{ts.xsdt, ts.fadt, ts.madt, ts.dsdt} {
		tab[20]++
		if checksum(tab) == 0 {
			t.Errorf("%q: a changed byte keeps the checksum", tab[:4])
		}
		tab[20]--
	}
	ts.rsdp[30]++
	if checksum(ts.rsdp[:36]) == 0 {
		t.Error("RSDP extended checksum blind to byte 30")
	}
}

// FuzzBuild: whatever Build accepts parses back cleanly with every
// checksum right, and fits in the BIOS area at the default base.
func FuzzBuild(f *testing.F) {
	f.Add(uint64(DefaultBase), true, false, false, uint8(0), uint8(0), uint16(0), uint16(0), uint16(0), false)
	f.Add(uint64(0xF0000), false, true, true, uint8(3), uint8(9), uint16(0x600), uint16(0x604), uint16(0x608), true)
	f.Add(uint64(0xFFFFFE00), false, false, false, uint8(0), uint8(5), uint16(1), uint16(1), uint16(0), false)
	f.Fuzz(func(t *testing.T, base uint64, hw, pcat, i8042 bool, id, sci uint8, evt, cnt, tmr uint16, nmi bool) {
		cfg := Config{HWReduced: hw, PCATCompat: pcat, I8042: i8042, IOAPICID: id, SCI: sci,
			PM1aEventBlock: evt, PM1aControlBlock: cnt, PMTimerBlock: tmr, LINT1NMI: nmi}
		blob, rsdp, err := Build(base, cfg)
		if err != nil {
			if blob != nil || rsdp != 0 {
				t.Fatal("tables with an error")
			}
			return
		}
		if rsdp != base || base >= 1<<32 || uint64(len(blob)) > 1<<32-base {
			t.Fatalf("RSDP %#x, tables [%#x, +%#x)", rsdp, base, len(blob))
		}
		ts := parse(t, blob, base, rsdp)
		if (ts.facs == nil) != hw || (le.Uint32(ts.fadt[112:])&(1<<20) != 0) != hw {
			t.Fatalf("HW-reduced %v: FACS %v, flags %#x", hw, ts.facs != nil, le.Uint32(ts.fadt[112:]))
		}
		if DefaultBase+len(blob) > 0x100000 {
			t.Fatalf("%d bytes do not fit in [0xE0000, 1 MiB)", len(blob))
		}
	})
}
