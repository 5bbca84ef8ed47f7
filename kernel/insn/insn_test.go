package insn

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

func TestMode(t *testing.T) {
	long := uint64(EFER_LME | EFER_LMA)
	for _, tc := range []struct {
		name   string
		cr0    uint64
		efer   uint64
		attrib uint16
		want   int
	}{
		{"real", 0, 0, 0, 16},
		{"real with D=1 and L=1 attributes", 0, 0, CSAttrDB | CSAttrL, 16},
		{"real, long mode bits in EFER", 0, long, CSAttrL, 16},
		{"protected 16", CR0_PE, 0, csCode16, 16},
		{"protected 32", CR0_PE, 0, csCode32, 32},
		{"protected 32 paged", cr0PG, 0, csCode32, 32},
		{"protected, L ignored outside long mode", cr0PG, 0, CSAttrL, 16},
		{"protected, LME without LMA", cr0PG, EFER_LME, csCode64, 16},
		{"64-bit", cr0PG, long, csCode64, 64},
		{"64-bit, L and D both set", cr0PG, long, csCode64 | CSAttrDB, 64},
		{"compatibility 32", cr0PG, long, csCode32, 32},
		{"compatibility 16", cr0PG, long, csCode16, 16},
	} {
		c := &CPU{CR0: tc.cr0, EFER: tc.efer, CSAttrib: tc.attrib}
		if got := c.Mode(); got != tc.want {
			t.Errorf("%s: Mode() = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// longCode sets up 64-bit paging with code at linear 0x40_0000 (GPA 0x2_0000)
// and 0x40_1000 (GPA 0x5_0000, not adjacent), and 0x40_2000 left unmapped.
func longCode(t testing.TB) (*fakeMem, *CPU) {
	m := newMem(1 << 20)
	pt := newLong4(m)
	pt.mapPage(0x40_0000, 0x2_0000, 1<<12)
	pt.mapPage(0x40_1000, 0x5_0000, 1<<12)
	return m, cpuLong(pt.cr3, 0x40_0000)
}

// putCode writes code at linear lin in longCode's layout.
func putCode(m *fakeMem, lin uint64, code []byte) {
	for i, b := range code {
		l := lin + uint64(i)
		switch l &^ pageMask {
		case 0x40_0000:
			m.b[0x2_0000+l&pageMask] = b
		case 0x40_1000:
			m.b[0x5_0000+l&pageMask] = b
		default:
			panic("putCode: unmapped")
		}
	}
}

func TestFetchCrossPage(t *testing.T) {
	m, c := longCode(t)
	code := []byte{0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 0x90, 0x90, 0x90, 0x90, 0x90}
	c.RIP = 0x40_0ffa
	putCode(m, c.RIP, code)
	buf := make([]byte, 20)
	n, err := Fetch(m, c, buf)
	if err != nil || n != MaxLen || !bytes.Equal(buf[:n], code) {
		t.Fatalf("Fetch = %d, %v, % x; want 15, nil, % x", n, err, buf[:n], code)
	}

	// Second page unmapped: the readable bytes and the #PF.
	c.RIP = 0x40_1ffd
	putCode(m, c.RIP, []byte{0x0f, 0x01, 0xd9})
	n, err = Fetch(m, c, buf[:MaxLen])
	var pf *PageFault
	if n != 3 || !bytes.Equal(buf[:3], []byte{0x0f, 0x01, 0xd9}) || !errors.As(err, &pf) || pf.Addr != 0x40_2000 {
		t.Fatalf("Fetch at page end = %d, % x, %v", n, buf[:n], err)
	}
	// First page unmapped.
	c.RIP = 0x40_2000
	if n, err = Fetch(m, c, buf); n != 0 || !errors.As(err, &pf) {
		t.Fatalf("Fetch unmapped = %d, %v", n, err)
	}
	// Second page not backed by guest memory.
	m2 := newMem(0x8000)
	pt := newLong4(m2)
	pt.mapPage(0x40_0000, 0x6000, 1<<12)
	pt.mapPage(0x40_1000, 0x10_0000, 1<<12)
	c = cpuLong(pt.cr3, 0x40_0fff)
	if n, err = Fetch(m2, c, buf[:4]); n != 1 || !errors.Is(err, errUnbacked) {
		t.Fatalf("Fetch unbacked = %d, %v", n, err)
	}
}

func TestFetchAddressing(t *testing.T) {
	m := newMem(1 << 20)
	buf := make([]byte, 4)
	fetch := func(c *CPU) []byte {
		t.Helper()
		n, err := Fetch(m, c, buf)
		if err != nil {
			t.Fatalf("Fetch(%+v): %v", c, err)
		}
		return buf[:n]
	}
	copy(m.b[0x1_0000:], []byte{0xa2, 0xb0, 0xb1})
	m.b[0x1_ffff] = 0x0f
	// Real mode: CS.base 0x10000 (selector 0x1000), IP wraps at 64 KiB.
	c := &CPU{CSBase: 0x1_0000, RIP: 0xffff}
	if got := fetch(c); !bytes.Equal(got, []byte{0x0f, 0xa2, 0xb0, 0xb1}) {
		t.Errorf("16-bit IP wrap: % x", got)
	}
	// Upper RIP bits are ignored in 16-bit code.
	c.RIP = 0xdead_0000_ffff
	if got := fetch(c); !bytes.Equal(got, []byte{0x0f, 0xa2, 0xb0, 0xb1}) {
		t.Errorf("16-bit IP with high bits: % x", got)
	}
	// 16-bit protected mode wraps the same way.
	c.CR0, c.CSAttrib = CR0_PE, csCode16
	if got := fetch(c); !bytes.Equal(got, []byte{0x0f, 0xa2, 0xb0, 0xb1}) {
		t.Errorf("16-bit protected IP wrap: % x", got)
	}
	// 32-bit: EIP is RIP[31:0] and it does not wrap at 64 KiB.
	c.CSAttrib, c.CSBase, c.RIP = csCode32, 0, 0xffff_0001_0000
	if got := fetch(c); !bytes.Equal(got, []byte{0xa2, 0xb0, 0xb1, 0}) {
		t.Errorf("32-bit EIP: % x", got)
	}
	c.CSBase, c.RIP = 0x1_0000, 0xffff
	if got := fetch(c); !bytes.Equal(got, []byte{0x0f, 0, 0, 0}) {
		t.Errorf("32-bit no 16-bit wrap: % x", got)
	}
	// 32-bit: CS.base+EIP wraps at 4 GiB; EIP itself wraps at 4 GiB.
	c.CSBase, c.RIP = 0xffff_0000, 0x2_0000
	if got := fetch(c); !bytes.Equal(got, []byte{0xa2, 0xb0, 0xb1, 0}) {
		t.Errorf("32-bit linear wrap: % x", got)
	}
	c.CSBase, c.RIP = 0x1_0001, 0xffff_ffff
	if got := fetch(c); !bytes.Equal(got, []byte{0xa2, 0xb0, 0xb1, 0}) {
		t.Errorf("32-bit EIP wrap: % x", got)
	}
	c.CSBase, c.RIP = 0x2_0000, 0xffff_ffff // linear 0x1ffff, then EIP 0 at 0x20000
	if got := fetch(c); !bytes.Equal(got, []byte{0x0f, 0, 0, 0}) {
		t.Errorf("32-bit EIP wrap across linear: % x", got)
	}
	// 64-bit mode ignores CS.base.
	m64, c64 := longCode(t)
	putCode(m64, 0x40_0010, []byte{0xf4})
	c64.CSBase, c64.RIP = 0x1000, 0x40_0010
	if n, err := Fetch(m64, c64, buf[:1]); n != 1 || err != nil || buf[0] != 0xf4 {
		t.Errorf("64-bit CS.base: %d %v % x", n, err, buf[:1])
	}
	// Non-canonical RIP.
	c64.RIP = 0x8000_0000_0000
	if _, err := Fetch(m64, c64, buf); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("non-canonical RIP: %v", err)
	}
}

var canonical = []struct {
	op   Op
	code []byte
}{
	{OpCPUID, []byte{0x0f, 0xa2}},
	{OpRDMSR, []byte{0x0f, 0x32}},
	{OpWRMSR, []byte{0x0f, 0x30}},
	{OpHLT, []byte{0xf4}},
	{OpVMMCALL, []byte{0x0f, 0x01, 0xd9}},
	{OpRDTSC, []byte{0x0f, 0x31}},
	{OpRDTSCP, []byte{0x0f, 0x01, 0xf9}},
	{OpINVD, []byte{0x0f, 0x08}},
	{OpWBINVD, []byte{0x0f, 0x09}},
	{OpPAUSE, []byte{0xf3, 0x90}},
}

// codeAt is where modeCPUs' code is, away from the page tables.
const codeAt = 0x8_0000

// modeCPUs returns a CPU per mode, with code at linear/physical codeAt
// (identity-mapped in long mode).
func modeCPUs(m *fakeMem) []*CPU {
	pt := newLong4(m)
	pt.mapPage(0, 0, 1<<21)
	return []*CPU{
		{CSBase: codeAt}, // real mode, CS = 8000h
		{CR0: CR0_PE, CSAttrib: csCode16, CSBase: codeAt - 0x10, RIP: 0x10},     // 16-bit protected
		{CR0: CR0_PE, CSAttrib: csCode32, CSBase: 0x1000, RIP: codeAt - 0x1000}, // 32-bit protected
		cpuLong(pt.cr3, codeAt), // 64-bit
		{CR0: cr0PG, CR3: pt.cr3, CR4: CR4_PAE, EFER: EFER_LMA | EFER_LME, CSAttrib: csCode32, RIP: codeAt}, // compatibility
	}
}

func TestLengthCanonical(t *testing.T) {
	m := newMem(1 << 20)
	for _, c := range modeCPUs(m) {
		for _, tc := range canonical {
			copy(m.b[codeAt:], append(tc.code, 0xcc, 0xcc))
			n, err := Length(m, c, tc.op)
			if err != nil || n != len(tc.code) {
				t.Errorf("mode %d: Length(% x, %v) = %d, %v; want %d", c.Mode(), tc.code, tc.op, n, err, len(tc.code))
			}
			if tc.op.String() == "" {
				t.Errorf("%d: empty name", tc.op)
			}
		}
	}
}

func TestLengthPrefixed(t *testing.T) {
	m := newMem(1 << 20)
	cpus := modeCPUs(m)
	for _, tc := range []struct {
		op   Op
		code []byte
		mode int // 0: every mode
		want int
	}{
		{OpCPUID, []byte{0x66, 0x0f, 0xa2}, 0, 3},
		{OpCPUID, []byte{0x2e, 0x3e, 0x67, 0x0f, 0xa2}, 0, 5},
		{OpCPUID, []byte{0x48, 0x0f, 0xa2}, 64, 3},
		{OpHLT, []byte{0x2e, 0xf4}, 0, 2},
		{OpHLT, []byte{0x41, 0xf4}, 64, 2},
		{OpRDMSR, []byte{0x26, 0x0f, 0x32}, 0, 3},
		{OpWRMSR, []byte{0x64, 0x65, 0x0f, 0x30}, 0, 4},
		{OpRDTSC, []byte{0x66, 0x0f, 0x31}, 0, 3},
		{OpRDTSCP, []byte{0x2e, 0x0f, 0x01, 0xf9}, 0, 4},
		{OpINVD, []byte{0x3e, 0x0f, 0x08}, 0, 3},
		{OpWBINVD, []byte{0x36, 0x0f, 0x09}, 0, 3},
		{OpPAUSE, []byte{0x2e, 0xf3, 0x90}, 0, 3},
		{OpVMMCALL, []byte{0x66, 0x0f, 0x01, 0xd9}, 0, 4},
		{OpVMMCALL, []byte{0x2e, 0x67, 0x0f, 0x01, 0xd9}, 0, 5},
		{OpVMMCALL, []byte{0x48, 0x0f, 0x01, 0xd9}, 64, 4},
		// 14 prefixes + 1 opcode byte: 15 bytes, the limit.
		{OpHLT, append(bytes.Repeat([]byte{0x2e}, 14), 0xf4), 0, 15},
		{OpVMMCALL, append(bytes.Repeat([]byte{0x3e}, 12), 0x0f, 0x01, 0xd9), 0, 15},
	} {
		for _, c := range cpus {
			if tc.mode != 0 && c.Mode() != tc.mode {
				continue
			}
			copy(m.b[codeAt:], append(append([]byte{}, tc.code...), 0xcc, 0xcc))
			n, err := Length(m, c, tc.op)
			if err != nil || n != tc.want {
				t.Errorf("mode %d: Length(% x, %v) = %d, %v; want %d", c.Mode(), tc.code, tc.op, n, err, tc.want)
			}
		}
	}
}

func TestLengthMismatch(t *testing.T) {
	m := newMem(1 << 20)
	cpus := modeCPUs(m)
	for _, tc := range []struct {
		op      Op
		code    []byte
		mode    int
		wantLen int // length of the instruction that was found, 0 if invalid
		invalid bool
	}{
		{OpCPUID, []byte{0x0f, 0x32}, 0, 2, false},                                        // RDMSR
		{OpRDMSR, []byte{0x0f, 0x30}, 0, 2, false},                                        // WRMSR
		{OpHLT, []byte{0x90}, 0, 1, false},                                                // NOP
		{OpPAUSE, []byte{0x90, 0x90}, 0, 1, false},                                        // NOP
		{OpRDTSCP, []byte{0x0f, 0x31}, 0, 2, false},                                       // RDTSC
		{OpCPUID, []byte{0x48, 0x0f, 0xa2}, 32, 1, false},                                 // DEC EAX
		{OpVMMCALL, []byte{0x0f, 0x01, 0xf9}, 0, 3, false},                                // RDTSCP
		{OpVMMCALL, []byte{0x0f, 0x01, 0xd8}, 0, 0, true},                                 // VMRUN
		{OpVMMCALL, []byte{0xf3, 0x0f, 0x01, 0xd9}, 0, 0, true},                           // VMGEXIT
		{OpVMMCALL, []byte{0xf0, 0x0f, 0x01, 0xd9}, 0, 0, true},                           // LOCK
		{OpVMMCALL, append(bytes.Repeat([]byte{0x3e}, 13), 0x0f, 0x01, 0xd9), 0, 0, true}, // 16 bytes
		{OpHLT, append(bytes.Repeat([]byte{0x2e}, 15), 0xf4), 0, 0, true},                 // 16 bytes
		{OpCPUID, []byte{0xf0, 0x0f, 0xa2}, 0, 0, true},                                   // LOCK CPUID: #UD
		{OpCPUID, []byte{0x0f, 0x04}, 0, 0, true},                                         // undefined opcode
	} {
		for _, c := range cpus {
			if tc.mode != 0 && c.Mode() != tc.mode {
				continue
			}
			copy(m.b[codeAt:], append(append([]byte{}, tc.code...), 0xcc, 0xcc, 0xcc))
			n, err := Length(m, c, tc.op)
			if !errors.Is(err, ErrMismatch) || n != tc.wantLen || errors.Is(err, ErrInvalid) != tc.invalid {
				t.Errorf("mode %d: Length(% x, %v) = %d, %v; want %d, ErrMismatch (invalid %v)", c.Mode(), tc.code, tc.op, n, err, tc.wantLen, tc.invalid)
			}
		}
	}
	if _, err := Length(m, cpus[0], 0); err == nil {
		t.Error("Length with Op 0: no error")
	}
	if _, err := Length(m, cpus[0], numOps); err == nil {
		t.Error("Length with Op numOps: no error")
	}
}

func TestLengthPageBoundary(t *testing.T) {
	m, c := longCode(t)
	// Canonical encoding split across two pages.
	c.RIP = 0x40_0fff
	putCode(m, c.RIP, []byte{0x0f, 0x01, 0xd9})
	if n, err := Length(m, c, OpVMMCALL); n != 3 || err != nil {
		t.Errorf("split VMMCALL: %d, %v", n, err)
	}
	putCode(m, c.RIP, []byte{0x66, 0x0f, 0xa2})
	if n, err := Length(m, c, OpCPUID); n != 3 || err != nil {
		t.Errorf("split 66 CPUID: %d, %v", n, err)
	}
	// At the end of the last mapped page: instructions that fit are fine.
	c.RIP = 0x40_1fff
	putCode(m, c.RIP, []byte{0xf4})
	if n, err := Length(m, c, OpHLT); n != 1 || err != nil {
		t.Errorf("HLT at page end: %d, %v", n, err)
	}
	c.RIP = 0x40_1ffe
	putCode(m, c.RIP, []byte{0x2e, 0xf4})
	if n, err := Length(m, c, OpHLT); n != 2 || err != nil {
		t.Errorf("CS HLT at page end: %d, %v", n, err)
	}
	if inst, err := Decode(m, c); err != nil || inst.Op != x86asm.HLT || inst.Len != 2 {
		t.Errorf("Decode CS HLT at page end: %v, %v", inst, err)
	}
	c.RIP = 0x40_1ffd
	putCode(m, c.RIP, []byte{0x66, 0x0f, 0x01})
	var pf *PageFault
	if _, err := Length(m, c, OpVMMCALL); !errors.As(err, &pf) || pf.Addr != 0x40_2000 {
		t.Errorf("VMMCALL running into an unmapped page: %v", err)
	}
	c.RIP = 0x40_1fff
	putCode(m, c.RIP, []byte{0x0f})
	if _, err := Length(m, c, OpCPUID); !errors.As(err, &pf) || pf.Addr != 0x40_2000 {
		t.Errorf("CPUID running into an unmapped page: %v", err)
	}
	if _, err := Decode(m, c); !errors.As(err, &pf) || pf.Addr != 0x40_2000 {
		t.Errorf("Decode running into an unmapped page: %v", err)
	}
	c.RIP = 0x40_2000
	if _, err := Length(m, c, OpCPUID); !errors.As(err, &pf) || pf.Addr != 0x40_2000 {
		t.Errorf("RIP in an unmapped page: %v", err)
	}
}

func TestLength16BitWrap(t *testing.T) {
	m := newMem(1 << 20)
	c := &CPU{CSBase: 0xf_0000, RIP: 0xffff} // real mode, F000:FFFF
	m.b[0xf_ffff] = 0x0f
	m.b[0xf_0000] = 0xa2
	if n, err := Length(m, c, OpCPUID); n != 2 || err != nil {
		t.Errorf("CPUID at F000:FFFF: %d, %v", n, err)
	}
	m.b[0xf_fffe], m.b[0xf_ffff], m.b[0xf_0000], m.b[0xf_0001] = 0x2e, 0x0f, 0x01, 0xd9
	c.RIP = 0xfffe
	if n, err := Length(m, c, OpVMMCALL); n != 4 || err != nil {
		t.Errorf("CS VMMCALL at F000:FFFE: %d, %v", n, err)
	}
	m.b[0xf_0000] = 0x32
	c.RIP = 0xffff
	if n, err := Length(m, c, OpCPUID); !errors.Is(err, ErrMismatch) || n != 2 {
		t.Errorf("RDMSR at F000:FFFF expecting CPUID: %d, %v", n, err)
	}
}

func TestDecode(t *testing.T) {
	m := newMem(1 << 20)
	cpus := modeCPUs(m)
	c := cpus[3]                                 // 64-bit
	copy(m.b[codeAt:], []byte{0x0f, 0x22, 0xd8}) // MOV CR3, RAX
	inst, err := Decode(m, c)
	if err != nil || inst.Op != x86asm.MOV || inst.Len != 3 || inst.Args[0] != x86asm.CR3 || inst.Args[1] != x86asm.RAX {
		t.Errorf("Decode MOV CR3: %v, %v", inst, err)
	}
	copy(m.b[codeAt:], []byte{0x0f, 0x01, 0x38}) // INVLPG [RAX]
	inst, err = Decode(m, c)
	if mem, ok := inst.Args[0].(x86asm.Mem); err != nil || inst.Op != x86asm.INVLPG || !ok || mem.Base != x86asm.RAX {
		t.Errorf("Decode INVLPG: %v, %v", inst, err)
	}
	inst, err = Decode(m, cpus[2]) // 32-bit
	if mem, ok := inst.Args[0].(x86asm.Mem); err != nil || inst.Op != x86asm.INVLPG || !ok || mem.Base != x86asm.EAX {
		t.Errorf("Decode INVLPG 32: %v, %v", inst, err)
	}
	copy(m.b[codeAt:], []byte{0x0f, 0x01, 0xd9})
	if _, err := Decode(m, c); !errors.Is(err, ErrInvalid) {
		t.Errorf("Decode VMMCALL: %v", err)
	}
}

// TestLengthNoAlloc checks that the expected-op fast path does not allocate.
func TestLengthNoAlloc(t *testing.T) {
	m, c := longCode(t)
	putCode(m, 0x40_0123, []byte{0x0f, 0xa2})
	putCode(m, 0x40_0fff, []byte{0x0f, 0x01, 0xd9})
	for _, tc := range []struct {
		rip uint64
		op  Op
	}{{0x40_0123, OpCPUID}, {0x40_0fff, OpVMMCALL}} {
		c.RIP = tc.rip
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := Length(m, c, tc.op); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%v at %#x: %v allocs/op", tc.op, tc.rip, allocs)
		if allocs != 0 {
			t.Errorf("%v at %#x: %v allocs/op, want 0", tc.op, tc.rip, allocs)
		}
	}
}

func BenchmarkLengthFast(b *testing.B) {
	m, c := longCode(b)
	c.RIP = 0x40_0123
	putCode(m, c.RIP, []byte{0x0f, 0xa2})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Length(m, c, OpCPUID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLengthDecode(b *testing.B) {
	m, c := longCode(b)
	c.RIP = 0x40_0123
	putCode(m, c.RIP, []byte{0x66, 0x0f, 0xa2})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Length(m, c, OpCPUID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTranslate4Level(b *testing.B) {
	m, c := longCode(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Translate(m, c, 0x40_0123); err != nil {
			b.Fatal(err)
		}
	}
}
