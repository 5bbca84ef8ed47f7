package insn

import "testing"

func TestDecodeMovToDR(t *testing.T) {
	for _, c := range []struct {
		code    []byte
		mode    int
		dr, gpr int
		len     int
		bad     bool
	}{
		{code: []byte{0x0f, 0x23, 0xf8}, mode: 64, dr: 7, gpr: 0, len: 3},       // mov dr7, rax
		{code: []byte{0x41, 0x0f, 0x23, 0xf9}, mode: 64, dr: 7, gpr: 9, len: 4}, // mov dr7, r9
		{code: []byte{0x0f, 0x23, 0xc3}, mode: 32, dr: 0, gpr: 3, len: 3},       // mov dr0, ebx
		{code: []byte{0x0f, 0x23, 0xf8}, mode: 16, dr: 7, gpr: 0, len: 3},       // mov dr7, eax
		{code: []byte{0x66, 0x0f, 0x23, 0xde}, mode: 32, dr: 3, gpr: 6, len: 4}, // prefix ignored
		{code: []byte{0x0f, 0x21, 0xf8}, mode: 64, bad: true},                   // mov rax, dr7 (a read)
		{code: []byte{0x0f, 0x22, 0xd8}, mode: 64, bad: true},                   // mov cr3, rax
		{code: []byte{0x0f, 0xa2}, mode: 64, bad: true},                         // cpuid
		{code: []byte{0x0f}, mode: 64, bad: true},                               // truncated
		{code: []byte{0x0f, 0x23, 0x78}, mode: 32, dr: 7, gpr: 0, len: 3},       // mod 01 ignored: still 3 bytes
		{code: []byte{0x66, 0x0f, 0x23, 0xb8}, mode: 32, dr: 7, gpr: 0, len: 4}, // mod 10 ignored
	} {
		m, err := DecodeMovToDR(c.code, c.mode)
		if c.bad {
			if err == nil {
				t.Errorf("% x: decoded as %+v, want an error", c.code, m)
			}
			continue
		}
		if err != nil || m.DR != c.dr || m.GPR != c.gpr || m.Len != c.len {
			t.Errorf("% x (mode %d): %+v, %v; want DR%d from GPR %d, %d bytes", c.code, c.mode, m, err, c.dr, c.gpr, c.len)
		}
	}
}

func TestDecodeCRWrite(t *testing.T) {
	for _, c := range []struct {
		code []byte
		mode int
		want CRWrite
		bad  bool
	}{
		{code: []byte{0x0f, 0x22, 0xc0}, mode: 64, want: CRWrite{Kind: CRWriteMov, CR: 0, GPR: 0, Len: 3}},        // mov cr0, rax
		{code: []byte{0x0f, 0x22, 0xc3}, mode: 32, want: CRWrite{Kind: CRWriteMov, CR: 0, GPR: 3, Len: 3}},        // mov cr0, ebx
		{code: []byte{0x44, 0x0f, 0x22, 0xe1}, mode: 64, want: CRWrite{Kind: CRWriteMov, CR: 12, GPR: 1, Len: 4}}, // mov cr12, rcx (rex.r)
		{code: []byte{0x0f, 0x06}, mode: 16, want: CRWrite{Kind: CRWriteCLTS, Len: 2}},
		{code: []byte{0x0f, 0x01, 0xf2}, mode: 32, want: CRWrite{Kind: CRWriteLMSW, GPR: 2, Len: 3}},       // lmsw dx
		{code: []byte{0x0f, 0x01, 0x30}, mode: 32, bad: true},                                              // lmsw [eax]
		{code: []byte{0x0f, 0x22, 0x40}, mode: 64, want: CRWrite{Kind: CRWriteMov, CR: 0, GPR: 0, Len: 3}}, // mod 01 ignored
		{code: []byte{0x0f, 0x22, 0x80}, mode: 32, want: CRWrite{Kind: CRWriteMov, CR: 0, GPR: 0, Len: 3}}, // mod 10 ignored
		{code: []byte{0x0f, 0x20, 0xc0}, mode: 64, bad: true},                                              // mov rax, cr0
		{code: []byte{0x0f, 0x23, 0xf8}, mode: 64, bad: true},                                              // mov dr7, rax
		{code: []byte{}, mode: 64, bad: true},
	} {
		w, err := DecodeCRWrite(c.code, c.mode)
		if c.bad {
			if err == nil {
				t.Errorf("% x: decoded as %+v, want an error", c.code, w)
			}
			continue
		}
		if err != nil || w != c.want {
			t.Errorf("% x (mode %d): %+v, %v; want %+v", c.code, c.mode, w, err, c.want)
		}
	}
}

// FuzzDecodeRegWrites: any bytes in any mode decode as a debug or control
// register write with fields in range, or fail; never a panic.
func FuzzDecodeRegWrites(f *testing.F) {
	f.Add([]byte{0x41, 0x0f, 0x23, 0xf9}, uint8(64))
	f.Add([]byte{0x0f, 0x22, 0xc0}, uint8(32))
	f.Add([]byte{0x0f, 0x01, 0xf2}, uint8(16))
	f.Fuzz(func(t *testing.T, code []byte, m uint8) {
		mode := []int{16, 32, 64}[int(m)%3]
		if d, err := DecodeMovToDR(code, mode); err == nil {
			if d.DR < 0 || d.DR > 7 || d.GPR < 0 || d.GPR > 15 || d.Len < 1 || d.Len > len(code) {
				t.Fatalf("% x (mode %d): %+v", code, mode, d)
			}
		}
		if w, err := DecodeCRWrite(code, mode); err == nil {
			if w.Kind < CRWriteMov || w.Kind > CRWriteLMSW || w.CR < 0 || w.CR > 15 || w.GPR < 0 || w.GPR > 15 || w.Len < 1 || w.Len > len(code) {
				t.Fatalf("% x (mode %d): %+v", code, mode, w)
			}
		}
	})
}
