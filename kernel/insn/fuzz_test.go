package insn

import (
	"errors"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// FuzzLength runs Length, Fetch and Decode on random guest memory and CPU
// state. They must never panic, and a successful Length must agree with the
// bytes that Fetch returns.
func FuzzLength(f *testing.F) {
	f.Add([]byte{0x0f, 0xa2}, uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint16(0), uint64(0), uint8(OpCPUID), false)
	f.Add([]byte{0x66, 0x0f, 0x01, 0xd9}, uint64(CR0_PE), uint64(0), uint64(0), uint64(0), uint64(0), uint16(csCode32), uint64(0), uint8(OpVMMCALL), false)
	f.Add([]byte{0x0f, 0x01, 0xd9}, uint64(cr0PG), uint64(0), uint64(CR4_PAE), uint64(EFER_LMA), uint64(0), uint16(csCode64), uint64(0x123), uint8(OpVMMCALL), true)
	f.Add([]byte{0x2e, 0xf4}, uint64(cr0PG), uint64(0x1000), uint64(CR4_PSE), uint64(0), uint64(0xffff_f000), uint16(csCode32), uint64(0x2000), uint8(OpHLT), true)
	f.Fuzz(func(t *testing.T, data []byte, cr0, cr3, cr4, efer, csBase uint64, attrib uint16, rip uint64, op uint8, wrap bool) {
		m := &fakeMem{b: make([]byte, 1<<13), wrap: wrap}
		copy(m.b, data)
		c := &CPU{CR0: cr0, CR3: cr3, CR4: cr4, EFER: efer, CSBase: csBase, CSAttrib: attrib, RIP: rip}
		switch c.Mode() {
		case 16, 32, 64:
		default:
			t.Fatalf("Mode() = %d", c.Mode())
		}
		var buf [MaxLen]byte
		n, ferr := Fetch(m, c, buf[:])
		if n < 0 || n > MaxLen || (n < MaxLen) != (ferr != nil) {
			t.Fatalf("Fetch = %d, %v", n, ferr)
		}
		l, err := Length(m, c, Op(op))
		if err == nil {
			if l < 1 || l > n {
				t.Fatalf("Length = %d with %d bytes fetched", l, n)
			}
			if Op(op) != OpVMMCALL {
				inst, derr := x86asm.Decode(buf[:n], c.Mode())
				want := ops[op].code[:ops[op].n]
				if string(buf[:l]) != string(want) && (derr != nil || inst.Op != ops[op].x86op || inst.Len != l) {
					t.Fatalf("Length(% x, %v) = %d, but x86asm says %v, %v", buf[:n], Op(op), l, inst, derr)
				}
			}
		} else if errors.Is(err, ErrMismatch) && (l < 0 || l > n) {
			t.Fatalf("Length = %d, %v with %d bytes fetched", l, err, n)
		}
		inst, err := Decode(m, c)
		if err == nil && (inst.Len < 1 || inst.Len > n) {
			t.Fatalf("Decode: Len %d with %d bytes fetched", inst.Len, n)
		}
	})
}
