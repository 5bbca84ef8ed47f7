package insn

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// hexBytes parses "89 0a" into bytes.
func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	var b []byte
	for _, f := range strings.Fields(s) {
		v, err := strconv.ParseUint(f, 16, 8)
		if err != nil {
			t.Fatalf("bad hex %q: %v", s, err)
		}
		b = append(b, byte(v))
	}
	return b
}

// Constructors for expected accesses, to keep the table readable.
func st(l int, size, reg uint8) MMIOAccess {
	return MMIOAccess{Len: l, Write: true, Size: size, Reg: reg}
}
func stHigh(l int, reg uint8) MMIOAccess {
	return MMIOAccess{Len: l, Write: true, Size: 1, Reg: reg, HighByte: true}
}
func stImm(l int, size uint8, imm uint64) MMIOAccess {
	return MMIOAccess{Len: l, Write: true, Size: size, UseImm: true, Imm: imm}
}
func ld(l int, size, reg uint8) MMIOAccess {
	return MMIOAccess{Len: l, Size: size, Reg: reg, DestSize: size}
}
func ldHigh(l int, reg uint8) MMIOAccess {
	return MMIOAccess{Len: l, Size: 1, Reg: reg, HighByte: true, DestSize: 1}
}
func ldZX(l int, size, dest, reg uint8) MMIOAccess {
	return MMIOAccess{Len: l, Size: size, Reg: reg, DestSize: dest}
}
func ldSX(l int, size, dest, reg uint8) MMIOAccess {
	return MMIOAccess{Len: l, Size: size, Reg: reg, DestSize: dest, SignExtend: true}
}
func xchg(l int, size, reg uint8, high bool) MMIOAccess {
	return MMIOAccess{Len: l, Write: true, Exchange: true, Size: size, Reg: reg, HighByte: high, DestSize: size}
}

// Register numbers in x86 encoding order.
const (
	rAX = iota
	rCX
	rDX
	rBX
	rSP
	rBP
	rSI
	rDI
	r8
	r9
	r10
	r11
	r12
	r13
	r14
	r15
)

var mmioCases = []struct {
	mode int
	code string
	inst string // x86asm's Intel syntax (immediates and displacements signed; an address of 0 prints as [])
	want MMIOAccess
}{
	// 64-bit mode: MOV r/m, r and MOV r, r/m.
	{64, "89 0a", "mov dword ptr [rdx], ecx", st(2, 4, rCX)},
	{64, "8b 87 20 03 00 00", "mov eax, dword ptr [rdi+0x320]", ld(6, 4, rAX)},
	{64, "48 89 07", "mov qword ptr [rdi], rax", st(3, 8, rAX)},
	{64, "48 8b 47 08", "mov rax, qword ptr [rdi+0x8]", ld(4, 8, rAX)},
	{64, "66 89 0a", "mov word ptr [rdx], cx", st(3, 2, rCX)},
	{64, "66 8b 02", "mov ax, word ptr [rdx]", ld(3, 2, rAX)},
	{64, "88 02", "mov byte ptr [rdx], al", st(2, 1, rAX)},
	{64, "8a 02", "mov al, byte ptr [rdx]", ld(2, 1, rAX)},
	// REX.B extends the base, REX.R the register operand.
	{64, "41 88 00", "mov byte ptr [r8], al", st(3, 1, rAX)},
	{64, "44 88 00", "mov byte ptr [rax], r8b", st(3, 1, r8)},
	{64, "4d 89 3f", "mov qword ptr [r15], r15", st(3, 8, r15)},
	{64, "45 8a 3f", "mov r15b, byte ptr [r15]", ld(3, 1, r15)},
	{64, "4c 8b 2c 24", "mov r13, qword ptr [rsp]", ld(4, 8, r13)},
	{64, "66 44 89 4f 10", "mov word ptr [rdi+0x10], r9w", st(5, 2, r9)},
	// Byte registers 4-7: AH/CH/DH/BH without REX, SPL/BPL/SIL/DIL with any REX.
	{64, "88 30", "mov byte ptr [rax], dh", stHigh(2, rDX)},
	{64, "40 88 30", "mov byte ptr [rax], sil", st(3, 1, rSI)},
	{64, "88 3e", "mov byte ptr [rsi], bh", stHigh(2, rBX)},
	{64, "40 88 3e", "mov byte ptr [rsi], dil", st(3, 1, rDI)},
	{64, "8a 26", "mov ah, byte ptr [rsi]", ldHigh(2, rAX)},
	{64, "40 8a 26", "mov spl, byte ptr [rsi]", ld(3, 1, rSP)},
	{64, "8a 2e", "mov ch, byte ptr [rsi]", ldHigh(2, rCX)},
	{64, "41 8a 2e", "mov bpl, byte ptr [r14]", ld(3, 1, rBP)},
	// Addressing forms: RIP-relative, SIB without base (absolute), 67.
	{64, "8b 05 00 01 00 00", "mov eax, dword ptr [rip+0x100]", ld(6, 4, rAX)},
	{64, "8b 04 25 f0 d0 5f ff", "mov eax, dword ptr [-0xa02f10]", ld(7, 4, rAX)},
	{64, "67 8b 00", "mov eax, dword ptr [eax]", ld(3, 4, rAX)},
	{64, "89 84 8e 78 56 34 12", "mov dword ptr [rsi+4*rcx+0x12345678], eax", st(7, 4, rAX)},
	// Segment overrides are accepted (ignored: the fault gives the GPA).
	{64, "64 8b 00", "mov eax, dword ptr fs:[rax]", ld(3, 4, rAX)},
	{64, "65 48 89 14 25 10 00 00 00", "mov qword ptr gs:[0x10], rdx", st(9, 8, rDX)},
	{64, "2e 89 08", "mov dword ptr [rax], ecx", st(3, 4, rCX)},
	// MOV r/m, imm: imm8, imm16, imm32, and imm32 sign-extended with REX.W.
	{64, "c6 00 12", "mov byte ptr [rax], 0x12", stImm(3, 1, 0x12)},
	{64, "c6 40 10 ff", "mov byte ptr [rax+0x10], 0xff", stImm(4, 1, 0xff)},
	{64, "66 c7 00 34 12", "mov word ptr [rax], 0x1234", stImm(5, 2, 0x1234)},
	{64, "66 c7 00 ff ff", "mov word ptr [rax], -0x1", stImm(5, 2, 0xffff)},
	{64, "c7 05 10 00 00 00 00 00 00 80", "mov dword ptr [rip+0x10], -0x80000000", stImm(10, 4, 0x8000_0000)},
	{64, "c7 87 b0 00 00 00 00 00 00 00", "mov dword ptr [rdi+0xb0], 0x0", stImm(10, 4, 0)},
	{64, "48 c7 00 00 00 00 80", "mov qword ptr [rax], -0x80000000", stImm(7, 8, 0xffff_ffff_8000_0000)},
	{64, "48 c7 00 ff ff ff 7f", "mov qword ptr [rax], 0x7fffffff", stImm(7, 8, 0x7fff_ffff)},
	{64, "66 48 c7 00 ff ff ff ff", "mov qword ptr [rax], -0x1", stImm(8, 8, ^uint64(0))}, // REX.W beats 66
	{64, "49 c7 44 24 08 01 00 00 00", "mov qword ptr [r12+0x8], 0x1", stImm(9, 8, 1)},
	// MOVZX and MOVSX.
	{64, "0f b6 07", "movzx eax, byte ptr [rdi]", ldZX(3, 1, 4, rAX)},
	{64, "0f b7 07", "movzx eax, word ptr [rdi]", ldZX(3, 2, 4, rAX)},
	{64, "48 0f b6 07", "movzx rax, byte ptr [rdi]", ldZX(4, 1, 8, rAX)},
	{64, "66 0f b6 07", "movzx ax, byte ptr [rdi]", ldZX(4, 1, 2, rAX)},
	{64, "66 0f b7 07", "movzx ax, word ptr [rdi]", ldZX(4, 2, 2, rAX)},
	{64, "44 0f b7 47 02", "movzx r8d, word ptr [rdi+0x2]", ldZX(5, 2, 4, r8)},
	{64, "0f be 07", "movsx eax, byte ptr [rdi]", ldSX(3, 1, 4, rAX)},
	{64, "0f bf 0f", "movsx ecx, word ptr [rdi]", ldSX(3, 2, 4, rCX)},
	{64, "48 0f bf 07", "movsx rax, word ptr [rdi]", ldSX(4, 2, 8, rAX)},
	{64, "4c 0f be 3f", "movsx r15, byte ptr [rdi]", ldSX(4, 1, 8, r15)},
	{64, "66 0f be 07", "movsx ax, byte ptr [rdi]", ldSX(4, 1, 2, rAX)},
	// MOV moffs: 8-byte address in 64-bit mode, 4 bytes with 67.
	{64, "a0 00 00 e0 fe 00 00 00 00", "mov al, byte ptr [0xfee00000]", ld(9, 1, rAX)},
	{64, "a1 20 03 e0 fe 00 00 00 00", "mov eax, dword ptr [0xfee00320]", ld(9, 4, rAX)},
	{64, "48 a1 20 03 e0 fe 00 00 00 00", "mov rax, qword ptr [0xfee00320]", ld(10, 8, rAX)},
	{64, "66 a1 20 03 e0 fe 00 00 00 00", "mov ax, word ptr [0xfee00320]", ld(10, 2, rAX)},
	{64, "a2 00 00 c0 fe 00 00 00 00", "mov byte ptr [0xfec00000], al", st(9, 1, rAX)},
	{64, "a3 10 00 c0 fe 00 00 00 00", "mov dword ptr [0xfec00010], eax", st(9, 4, rAX)},
	{64, "48 a3 10 00 c0 fe 00 00 00 00", "mov qword ptr [0xfec00010], rax", st(10, 8, rAX)},
	{64, "67 a1 20 03 e0 fe", "mov eax, dword ptr [0xfee00320]", ld(6, 4, rAX)},
	{64, "67 a3 10 00 c0 fe", "mov dword ptr [0xfec00010], eax", st(6, 4, rAX)},
	// XCHG, with and without LOCK (implied either way).
	{64, "87 0f", "xchg dword ptr [rdi], ecx", xchg(2, 4, rCX, false)},
	{64, "f0 87 0f", "lock xchg dword ptr [rdi], ecx", xchg(3, 4, rCX, false)},
	{64, "48 87 0f", "xchg qword ptr [rdi], rcx", xchg(3, 8, rCX, false)},
	{64, "66 87 0f", "xchg word ptr [rdi], cx", xchg(3, 2, rCX, false)},
	{64, "86 27", "xchg byte ptr [rdi], ah", xchg(2, 1, rAX, true)},
	{64, "40 86 27", "xchg byte ptr [rdi], spl", xchg(3, 1, rSP, false)},
	{64, "4c 87 37", "xchg qword ptr [rdi], r14", xchg(3, 8, r14, false)},

	// 32-bit mode.
	{32, "89 0a", "mov dword ptr [edx], ecx", st(2, 4, rCX)},
	{32, "8b 87 20 03 00 00", "mov eax, dword ptr [edi+0x320]", ld(6, 4, rAX)},
	{32, "66 89 0a", "mov word ptr [edx], cx", st(3, 2, rCX)},
	{32, "66 8b 02", "mov ax, word ptr [edx]", ld(3, 2, rAX)},
	{32, "88 30", "mov byte ptr [eax], dh", stHigh(2, rDX)},
	{32, "8a 1e", "mov bl, byte ptr [esi]", ld(2, 1, rBX)},
	{32, "8a 3e", "mov bh, byte ptr [esi]", ldHigh(2, rBX)},
	{32, "67 89 07", "mov dword ptr [bx], eax", st(3, 4, rAX)},
	{32, "c7 05 20 03 e0 fe 01 00 00 00", "mov dword ptr [-0x11ffce0], 0x1", stImm(10, 4, 1)},
	{32, "66 c7 07 34 12", "mov word ptr [edi], 0x1234", stImm(5, 2, 0x1234)},
	{32, "c6 07 80", "mov byte ptr [edi], 0x80", stImm(3, 1, 0x80)},
	{32, "a1 20 03 e0 fe", "mov eax, dword ptr [0xfee00320]", ld(5, 4, rAX)},
	{32, "66 a3 20 03 e0 fe", "mov word ptr [0xfee00320], ax", st(6, 2, rAX)},
	{32, "67 a1 20 03", "mov eax, dword ptr [0x320]", ld(4, 4, rAX)},
	{32, "a2 00 00 c0 fe", "mov byte ptr [0xfec00000], al", st(5, 1, rAX)},
	{32, "0f b6 07", "movzx eax, byte ptr [edi]", ldZX(3, 1, 4, rAX)},
	{32, "0f bf 07", "movsx eax, word ptr [edi]", ldSX(3, 2, 4, rAX)},
	{32, "66 0f b6 07", "movzx ax, byte ptr [edi]", ldZX(4, 1, 2, rAX)},
	{32, "87 07", "xchg dword ptr [edi], eax", xchg(2, 4, rAX, false)},
	{32, "f0 86 3b", "lock xchg byte ptr [ebx], bh", xchg(3, 1, rBX, true)},
	{32, "3e 8b 00", "mov eax, dword ptr [eax]", ld(3, 4, rAX)},

	// 16-bit mode: 16-bit operands and addresses by default.
	{16, "89 07", "mov word ptr [bx], ax", st(2, 2, rAX)},
	{16, "66 89 07", "mov dword ptr [bx], eax", st(3, 4, rAX)},
	{16, "8b 44 10", "mov ax, word ptr [si+0x10]", ld(3, 2, rAX)},
	{16, "67 66 8b 00", "mov eax, dword ptr [eax]", ld(4, 4, rAX)},
	{16, "88 27", "mov byte ptr [bx], ah", stHigh(2, rAX)},
	{16, "8a 0f", "mov cl, byte ptr [bx]", ld(2, 1, rCX)},
	{16, "a1 20 03", "mov ax, word ptr [0x320]", ld(3, 2, rAX)},
	{16, "66 a1 20 03", "mov eax, dword ptr [0x320]", ld(4, 4, rAX)},
	{16, "67 a1 00 00 e0 fe", "mov ax, word ptr [0xfee00000]", ld(6, 2, rAX)},
	{16, "a2 00 00", "mov byte ptr [], al", st(3, 1, rAX)},
	{16, "c7 06 20 03 34 12", "mov word ptr [0x320], 0x1234", stImm(6, 2, 0x1234)},
	{16, "66 c7 07 78 56 34 12", "mov dword ptr [bx], 0x12345678", stImm(7, 4, 0x1234_5678)},
	{16, "c6 07 5a", "mov byte ptr [bx], 0x5a", stImm(3, 1, 0x5a)},
	{16, "0f b6 07", "movzx ax, byte ptr [bx]", ldZX(3, 1, 2, rAX)},
	{16, "66 0f b7 07", "movzx eax, word ptr [bx]", ldZX(4, 2, 4, rAX)},
	{16, "66 0f be 07", "movsx eax, byte ptr [bx]", ldSX(4, 1, 4, rAX)},
	{16, "87 07", "xchg word ptr [bx], ax", xchg(2, 2, rAX, false)},
	{16, "26 89 1d", "mov word ptr es:[di], bx", st(3, 2, rBX)},
}

func TestDecodeMMIO(t *testing.T) {
	for _, tc := range mmioCases {
		code := hexBytes(t, tc.code)
		got, err := DecodeMMIO(code, tc.mode)
		if err != nil {
			t.Errorf("mode %d, % x: %v", tc.mode, code, err)
			continue
		}
		want := tc.want
		want.Mode, want.Inst = tc.mode, tc.inst
		if got != want {
			t.Errorf("mode %d, % x:\n got %+v\nwant %+v", tc.mode, code, got, want)
		}
		// The length agrees with x86asm's, and with trailing bytes.
		inst, err := x86asm.Decode(code, tc.mode)
		if err != nil || inst.Len != got.Len || got.Len != len(code) {
			t.Errorf("mode %d, % x: Len %d, x86asm %d, %v", tc.mode, code, got.Len, inst.Len, err)
		}
		more := append(append([]byte{}, code...), 0x90, 0x90, 0x90)
		if g2, err := DecodeMMIO(more, tc.mode); err != nil || g2 != got {
			t.Errorf("mode %d, % x with trailing bytes: %+v, %v", tc.mode, code, g2, err)
		}
		// Every proper prefix of the bytes is truncated.
		for n := range len(code) {
			if _, err := DecodeMMIO(code[:n], tc.mode); !errors.Is(err, ErrTruncated) {
				t.Errorf("mode %d, % x cut to %d bytes: err = %v, want ErrTruncated", tc.mode, code, n, err)
			}
		}
	}
}

func TestDecodeMMIORefused(t *testing.T) {
	for _, tc := range []struct {
		mode   int
		code   string
		want   error
		reason string // in the error text (the instruction's name, or why)
	}{
		// String instructions and REP prefixes.
		{64, "f3 a5", ErrNotEmulated, "rep movsd"},
		{64, "a5", ErrNotEmulated, "movsd"},
		{64, "aa", ErrNotEmulated, "stosb"},
		{64, "f3 48 ab", ErrNotEmulated, "rep stosq"},
		{32, "ac", ErrNotEmulated, "lodsb"},
		{64, "f3 89 08", ErrNotEmulated, "REP/REPNE"},
		{64, "f2 8b 08", ErrNotEmulated, "REP/REPNE"},
		// Register-only forms cannot fault on memory.
		{64, "89 c8", ErrNotEmulated, "mov eax, ecx"},
		{64, "8b c1", ErrNotEmulated, "no memory operand"},
		{64, "c7 c0 01 00 00 00", ErrNotEmulated, "mov eax, 0x1"},
		{64, "87 c8", ErrNotEmulated, "xchg eax, ecx"},
		{64, "0f b6 c1", ErrNotEmulated, "movzx eax, cl"},
		{64, "b8 01 00 00 00", ErrNotEmulated, "mov eax, 0x1"},
		{64, "0f 20 c0", ErrNotEmulated, "mov rax, cr0"},
		// Other memory instructions: read-modify-write, segment
		// registers, LEA, SSE/AVX, MOVSXD, MOVNTI.
		{64, "f6 00 01", ErrNotEmulated, "test byte ptr [rax], 0x1"},
		{64, "81 20 ff 00 00 00", ErrNotEmulated, "and dword ptr [rax], 0xff"},
		{64, "83 08 01", ErrNotEmulated, "or dword ptr [rax], 0x1"},
		{64, "09 08", ErrNotEmulated, "or dword ptr [rax], ecx"},
		{64, "f0 0f c1 08", ErrNotEmulated, "lock xadd"},
		{64, "ff 00", ErrNotEmulated, "inc dword ptr [rax]"},
		{64, "8c 00", ErrNotEmulated, "mov word ptr [rax], es"},
		{64, "8e 18", ErrNotEmulated, "mov ds, word ptr [rax]"},
		{64, "8d 00", ErrNotEmulated, "lea eax, ptr [rax]"},
		{64, "48 63 00", ErrNotEmulated, "movsxd rax, dword ptr [rax]"},
		{64, "0f c3 08", ErrNotEmulated, "movnti dword ptr [rax], ecx"},
		{64, "f3 0f 6f 00", ErrNotEmulated, "movdqu xmm0"},
		{64, "c5 fa 6f 00", ErrNotEmulated, "vmovdqu xmm0"},
		// REX does not exist outside 64-bit mode: 40 is INC EAX there.
		{32, "40 88 30", ErrNotEmulated, "inc eax"},
		{32, "48 89 07", ErrNotEmulated, "dec eax"},
		// Invalid: LOCK on MOV (#UD), C6 with /1, an opcode x86asm
		// does not know, too long.
		{64, "f0 89 08", ErrInvalid, "LOCK"},
		{64, "f0 8b 08", ErrInvalid, "LOCK"},
		{64, "c6 08 12", ErrInvalid, "c6 08 12"},
		{64, "0f 01 d9", ErrInvalid, "0f 01 d9"},
		{64, "0f 0b", ErrNotEmulated, "ud2"},
		{64, "66 66 66 66 66 66 66 66 66 66 66 66 66 66 89 08", ErrInvalid, "66 66"},
		// x86asm quirks: a REX prefix followed by a legacy prefix is
		// ignored by the CPU (48 66 89 08 is mov [rax], cx), and of two
		// REX prefixes only the last counts; x86asm rejects both, so they
		// are refused rather than misdecoded.
		{64, "48 66 89 08", ErrInvalid, "48 66 89 08"},
		{64, "40 48 89 08", ErrInvalid, "40 48 89 08"},
		// Truncated.
		{64, "", ErrTruncated, "no bytes"},
		{64, "8b", ErrTruncated, "8b"},
		{64, "66", ErrTruncated, "66"},
		{64, "8b 87 20 03", ErrTruncated, "8b 87 20 03"},
		{64, "48 c7 05 00 00 00", ErrTruncated, "48 c7 05"},
		{64, "a1 20 03 e0 fe", ErrTruncated, "a1 20 03 e0 fe"}, // moffs is 8 bytes in 64-bit mode
		{16, "67 a1 20 03", ErrTruncated, "67 a1 20 03"},
		// Bad mode.
		{0, "89 08", ErrInvalid, "mode 0"},
		{48, "89 08", ErrInvalid, "mode 48"},
	} {
		code := hexBytes(t, tc.code)
		a, err := DecodeMMIO(code, tc.mode)
		if !errors.Is(err, tc.want) {
			t.Errorf("mode %d, % x: err = %v, want %v", tc.mode, code, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("mode %d, % x: error %q does not say %q", tc.mode, code, err, tc.reason)
		}
		if tc.want == ErrNotEmulated {
			// The length and text are there for the report, nothing else.
			inst, _ := x86asm.Decode(code, tc.mode)
			if a.Len != inst.Len || a.Len > len(code) || a.Inst == "" || a.Mode != tc.mode || a.Size != 0 || a.Write {
				t.Errorf("mode %d, % x: refused access = %+v", tc.mode, code, a)
			}
		} else if a != (MMIOAccess{}) {
			t.Errorf("mode %d, % x: access %+v with %v", tc.mode, code, a, err)
		}
	}
}

// TestDecodeMMIOLongInput checks that bytes after the first MaxLen do not
// matter.
func TestDecodeMMIOLongInput(t *testing.T) {
	code := hexBytes(t, "66 66 66 66 66 66 66 66 66 66 66 66 66 89 08 00")
	if a, err := DecodeMMIO(code[:MaxLen], 64); err != nil || a.Len != MaxLen || a.Size != 2 {
		t.Fatalf("15-byte store: %+v, %v", a, err)
	}
	if a, err := DecodeMMIO(code, 64); err != nil || a.Len != MaxLen {
		t.Fatalf("15-byte store with more bytes: %+v, %v", a, err)
	}
}

// testGPRs returns registers with a distinct value in every byte.
func testGPRs() [16]uint64 {
	var g [16]uint64
	for i := range g {
		g[i] = 0xf0e0_d0c0_b0a0_9080 | uint64(i)*0x0101_0101_0101_0101
	}
	return g
}

func TestMMIOStoreValue(t *testing.T) {
	g := testGPRs()
	for _, tc := range []struct {
		mode int
		code string
		want uint64
	}{
		{64, "89 0a", 0xb1a1_9181},                          // ecx
		{64, "48 89 07", 0xf0e0_d0c0_b0a0_9080},             // rax
		{64, "66 89 0a", 0x9181},                            // cx
		{64, "88 02", 0x80},                                 // al
		{64, "88 30", 0x92},                                 // dh
		{64, "88 3e", 0x93},                                 // bh
		{64, "40 88 30", 0x86},                              // sil
		{64, "40 88 3e", 0x87},                              // dil
		{64, "44 88 00", 0x88},                              // r8b
		{64, "4d 89 3f", 0xffef_dfcf_bfaf_9f8f},             // r15
		{64, "66 44 89 4f 10", 0x9989},                      // r9w
		{64, "c6 40 10 ff", 0xff},                           // imm8
		{64, "66 c7 00 34 12", 0x1234},                      // imm16
		{64, "48 c7 00 00 00 00 80", 0xffff_ffff_8000_0000}, // imm32 sign-extended
		{64, "c7 05 10 00 00 00 00 00 00 80", 0x8000_0000},  // imm32
		{64, "87 0f", 0xb1a1_9181},                          // xchg: ecx
		{64, "86 27", 0x90},                                 // xchg: ah
		{32, "88 30", 0x92},                                 // dh
		{16, "89 1d", 0x9383},                               // bx
		{16, "66 89 07", 0xb0a0_9080},                       // eax
	} {
		a, err := DecodeMMIO(hexBytes(t, tc.code), tc.mode)
		if err != nil {
			t.Fatalf("mode %d, %s: %v", tc.mode, tc.code, err)
		}
		before := g
		if got := a.StoreValue(&g); got != tc.want {
			t.Errorf("mode %d, %s (%s): StoreValue = %#x, want %#x", tc.mode, tc.code, a.Inst, got, tc.want)
		}
		if g != before {
			t.Errorf("mode %d, %s: StoreValue changed registers", tc.mode, tc.code)
		}
	}
}

func TestMMIOLoad(t *testing.T) {
	for _, tc := range []struct {
		mode int
		code string
		v    uint64 // value read from memory (bits above Size must be ignored)
		reg  int
		want uint64
	}{
		// Plain MOV loads: 8- and 16-bit destinations keep the upper
		// bits, 32-bit ones clear them in 64-bit mode only.
		{64, "8b 07", 0x89ab_cdef, rAX, 0x89ab_cdef},
		{64, "8b 07", 0x1234_5678_89ab_cdef, rAX, 0x89ab_cdef},
		{32, "8b 07", 0x89ab_cdef, rAX, 0xf0e0_d0c0_89ab_cdef},
		{16, "66 8b 07", 0x89ab_cdef, rAX, 0xf0e0_d0c0_89ab_cdef},
		{64, "48 8b 07", 0x0123_4567_89ab_cdef, rAX, 0x0123_4567_89ab_cdef},
		{64, "66 8b 07", 0x1_beef, rAX, 0xf0e0_d0c0_b0a0_beef},
		{16, "8b 44 10", 0xbeef, rAX, 0xf0e0_d0c0_b0a0_beef},
		{64, "8a 02", 0x15a, rAX, 0xf0e0_d0c0_b0a0_905a},
		{64, "8a 26", 0x5a, rAX, 0xf0e0_d0c0_b0a0_5a80},    // ah
		{64, "8a 2e", 0xa5, rCX, 0xf1e1_d1c1_b1a1_a581},    // ch
		{32, "8a 3e", 0x01, rBX, 0xf3e3_d3c3_b3a3_0183},    // bh
		{64, "40 8a 26", 0x5a, rSP, 0xf4e4_d4c4_b4a4_945a}, // spl
		{64, "40 8a 36", 0x5a, rSI, 0xf6e6_d6c6_b6a6_965a}, // sil
		{64, "45 8a 3f", 0x00, r15, 0xffef_dfcf_bfaf_9f00}, // r15b
		{64, "4c 8b 2c 24", 0x1122_3344_5566_7788, r13, 0x1122_3344_5566_7788},
		{64, "a1 20 03 e0 fe 00 00 00 00", 0xfeed_face, rAX, 0xfeed_face},
		{16, "a1 20 03", 0xface, rAX, 0xf0e0_d0c0_b0a0_face},
		// MOVZX.
		{64, "0f b6 07", 0x1ff, rAX, 0xff},
		{64, "0f b7 07", 0xffff_8001, rAX, 0x8001},
		{64, "48 0f b6 07", 0x80, rAX, 0x80},
		{64, "66 0f b6 07", 0xff, rAX, 0xf0e0_d0c0_b0a0_00ff},
		{32, "0f b6 07", 0xff, rAX, 0xf0e0_d0c0_0000_00ff},
		{16, "0f b6 07", 0x80, rAX, 0xf0e0_d0c0_b0a0_0080},
		{16, "66 0f b7 07", 0xffff, rAX, 0xf0e0_d0c0_0000_ffff},
		{64, "44 0f b7 47 02", 0x1234, r8, 0x1234},
		// MOVSX.
		{64, "0f be 07", 0x80, rAX, 0xffff_ff80},
		{64, "0f be 07", 0x7f, rAX, 0x7f},
		{64, "0f bf 0f", 0x8001, rCX, 0xffff_8001},
		{64, "48 0f bf 07", 0x8001, rAX, 0xffff_ffff_ffff_8001},
		{64, "48 0f bf 07", 0xffff_7fff, rAX, 0x7fff},
		{64, "4c 0f be 3f", 0xfe, r15, 0xffff_ffff_ffff_fffe},
		{64, "66 0f be 07", 0xff, rAX, 0xf0e0_d0c0_b0a0_ffff},
		{32, "0f bf 07", 0x8000, rAX, 0xf0e0_d0c0_ffff_8000},
		{16, "66 0f be 07", 0x80, rAX, 0xf0e0_d0c0_ffff_ff80},
		// XCHG loads the old memory value.
		{64, "87 0f", 0xdead_beef, rCX, 0xdead_beef},
		{64, "48 87 0f", 0xdead_beef, rCX, 0xdead_beef},
		{64, "86 27", 0x11, rAX, 0xf0e0_d0c0_b0a0_1180},
		{32, "87 07", 0xdead_beef, rAX, 0xf0e0_d0c0_dead_beef},
		{16, "87 07", 0xbeef, rAX, 0xf0e0_d0c0_b0a0_beef},
	} {
		a, err := DecodeMMIO(hexBytes(t, tc.code), tc.mode)
		if err != nil {
			t.Fatalf("mode %d, %s: %v", tc.mode, tc.code, err)
		}
		g := testGPRs()
		want := g
		want[tc.reg] = tc.want
		a.Load(&g, tc.v)
		if g != want {
			t.Errorf("mode %d, %s (%s) Load(%#x):\n got %#x\nwant %#x", tc.mode, tc.code, a.Inst, tc.v, g, want)
		}
	}
}

// TestMMIOStoreNoLoad checks that Load does nothing for a plain store.
func TestMMIOStoreNoLoad(t *testing.T) {
	for _, code := range []string{"89 0a", "88 30", "48 c7 00 00 00 00 80", "a3 10 00 c0 fe 00 00 00 00"} {
		a, err := DecodeMMIO(hexBytes(t, code), 64)
		if err != nil {
			t.Fatal(err)
		}
		g := testGPRs()
		a.Load(&g, ^uint64(0))
		if g != testGPRs() {
			t.Errorf("%s: Load on a store changed registers: %#x", code, g)
		}
	}
}

// TestMMIOExchange runs an XCHG the way the exit handler does: the value to
// store is taken before Load replaces the register.
func TestMMIOExchange(t *testing.T) {
	a, err := DecodeMMIO(hexBytes(t, "f0 87 0f"), 64)
	if err != nil {
		t.Fatal(err)
	}
	g := testGPRs()
	mem := uint64(0x1111_2222)
	store := a.StoreValue(&g)
	a.Load(&g, mem)
	if store != 0xb1a1_9181 || g[rCX] != 0x1111_2222 {
		t.Fatalf("xchg: stored %#x, rcx = %#x", store, g[rCX])
	}
}

// TestGPRMapping checks the x86asm register to number mapping for every
// general-purpose register x86asm knows.
func TestGPRMapping(t *testing.T) {
	names := [16]string{"RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"}
	seen := 0
	for r := x86asm.Reg(0); r < x86asm.Reg(255); r++ {
		n, high, size, ok := gpr(r)
		if !ok {
			continue
		}
		seen++
		// x86asm's names: AL/AH/SPB/R8B, AX/R8W, EAX/R8L, RAX/R8.
		name := r.String()
		var want string
		switch {
		case high:
			want = string(names[n][1]) + "H"
		case size == 1 && n < 4:
			want = names[n][1:2] + "L"
		case size == 1 && n < 8:
			want = names[n][1:] + "B"
		case size == 1:
			want = names[n] + "B"
		case size == 2 && n < 8:
			want = names[n][1:]
		case size == 2:
			want = names[n] + "W"
		case size == 4 && n < 8:
			want = "E" + names[n][1:]
		case size == 4:
			want = names[n] + "L"
		default:
			want = names[n]
		}
		if name != want {
			t.Errorf("gpr(%v) = %d, high %v, size %d (%s)", r, n, high, size, want)
		}
	}
	const want = 16*4 + 4 // four sizes of 16 registers, and AH, CH, DH, BH
	if seen != want {
		t.Errorf("%d general-purpose registers mapped, want %d", seen, want)
	}
}

// FuzzMMIO decodes arbitrary bytes in all three modes. DecodeMMIO must not
// panic, a decoded access must be consistent with x86asm and the size rules,
// and StoreValue and Load must not panic, with Load changing only its
// destination register.
func FuzzMMIO(f *testing.F) {
	for _, tc := range mmioCases {
		f.Add(hexBytes(f, tc.code), uint64(0x8899_aabb_ccdd_eeff))
	}
	for _, s := range []string{"f3 a5", "0f 01 d9", "89 c8", "f0 89 08", "48 66 89 08", "66 66 66 66 66 66 66 66 66 66 66 66 66 89 08"} {
		f.Add(hexBytes(f, s), uint64(0))
	}
	f.Fuzz(func(t *testing.T, code []byte, v uint64) {
		for _, mode := range []int{16, 32, 64} {
			a, err := DecodeMMIO(code, mode)
			if err != nil {
				if errors.Is(err, ErrNotEmulated) && (a.Len < 1 || a.Len > MaxLen || a.Len > len(code) || a.Inst == "") {
					t.Fatalf("mode %d, % x: refused with %+v", mode, code, a)
				}
				continue
			}
			if a.Len < 1 || a.Len > MaxLen || a.Len > len(code) {
				t.Fatalf("mode %d, % x: Len %d", mode, code, a.Len)
			}
			inst, xerr := x86asm.Decode(code[:a.Len], mode)
			if xerr != nil || inst.Len != a.Len {
				t.Fatalf("mode %d, % x: Len %d, x86asm %d, %v", mode, code, a.Len, inst.Len, xerr)
			}
			if !validSize(a.Size) || a.Mode != mode || a.Reg >= numGPRs || a.Inst == "" {
				t.Fatalf("mode %d, % x: %+v", mode, code, a)
			}
			if a.HighByte && (a.Size != 1 || a.Reg >= 4) {
				t.Fatalf("mode %d, % x: high byte %+v", mode, code, a)
			}
			if a.Size == 8 && mode != 64 || a.DestSize == 8 && mode != 64 {
				t.Fatalf("mode %d, % x: 8-byte operand outside 64-bit mode: %+v", mode, code, a)
			}
			load := !a.Write || a.Exchange
			if load != (a.DestSize != 0) || load && (!validSize(a.DestSize) || a.DestSize < a.Size) || a.UseImm && (load || a.Reg != 0) {
				t.Fatalf("mode %d, % x: inconsistent %+v", mode, code, a)
			}
			if a.Imm&^sizeMask(a.Size) != 0 {
				t.Fatalf("mode %d, % x: Imm wider than Size: %+v", mode, code, a)
			}

			var g [16]uint64
			for i := range g {
				g[i] = v*uint64(2*i+1) ^ uint64(i)<<56
			}
			before := g
			if sv := a.StoreValue(&g); sv&^sizeMask(a.Size) != 0 || g != before {
				t.Fatalf("mode %d, % x: StoreValue %#x wider than %d bytes or changed registers", mode, code, sv, a.Size)
			}
			a.Load(&g, v)
			for i := range g {
				switch {
				case i == int(a.Reg) && load:
					if a.HighByte && (g[i]^before[i])&^uint64(highByte) != 0 {
						t.Fatalf("mode %d, % x: high-byte load changed %#x to %#x", mode, code, before[i], g[i])
					}
					if !a.HighByte && a.DestSize < 4 && (g[i]^before[i])>>(uint(a.DestSize)*byteBits) != 0 {
						t.Fatalf("mode %d, % x: %d-byte load changed %#x to %#x", mode, code, a.DestSize, before[i], g[i])
					}
				case g[i] != before[i]:
					t.Fatalf("mode %d, % x: Load of %+v changed register %d", mode, code, a, i)
				}
			}
		}
	})
}
