package svm

import "fmt"

// Architectural must-be-zero bits ValidateState checks besides Check's.
const (
	// rflagsReserved are RFLAGS bits 3, 5, 15 and 63:22 (APM vol. 2,
	// 3.1.6); bit 1 is reserved too but reads as one (RFLAGSFixed).
	rflagsReserved = 1<<3 | 1<<5 | 1<<15 | 0xffffffffffc00000

	// dr7Reserved are DR7 bits 11, 12, 14, 15 (read as zero) and 63:32
	// (must be zero) (APM vol. 2, 13.1.1.5). Bit 10 reads as one, but a
	// value with it clear is harmless: the CPU sets it, so it is not
	// refused.
	dr7Reserved = 1<<11 | 1<<12 | 1<<14 | 1<<15 | drReserved

	// segAttribReserved are the bits of a VMCB segment attribute field
	// above the 12 that hold descriptor bits 40-47 and 52-55 (table B-2).
	segAttribReserved = 0xf000

	// Canonical linear address widths (APM vol. 2, 5.3.1): 48 bits with
	// 4-level paging, 57 with CR4.LA57 (5-level paging).
	canonicalBits   = 48
	canonicalBitsLA = 57

	// descTableLimitMax is the largest GDTR/IDTR limit: LGDT and LIDT load
	// 16 bits.
	descTableLimitMax = 0xffff
)

// ValidateState returns what is architecturally impossible in s, the state
// save area of a vCPU being restored: the checks a restore needs that
// VMRUN does not make (or makes only obscurely). It complements Check,
// which covers what VMRUN itself refuses (EFER.SVME, CR0/CR3/CR4 and EFER
// reserved bits, long-mode consistency, ...); a restore should pass both.
// An empty result means s is a state a CPU can be in. Each finding names
// the field and its value, e.g. "CPL 7 (at most 3)".
//
// The checks:
//   - RFLAGS: bit 1 set; bits 3, 5, 15 and 63:22 clear; VM (virtual-8086
//     mode) neither in long mode nor with CR0.PE clear;
//   - CPL: at most 3; 0 in real mode; 3 in virtual-8086 mode;
//   - CR0.PG only with CR0.PE; EFER.LMA exactly when EFER.LME and CR0.PG;
//   - DR6 bits 63:32 and DR7 bits 11, 12, 14, 15 and 63:32 clear;
//   - segment attribute bits 15:12 clear (ES, CS, SS, DS, FS, GS, LDTR, TR);
//   - in protected mode outside virtual-8086 mode: CS present, a code
//     segment; SS a writable data segment when present, and present
//     outside long mode (64-bit code may run with a null SS); DS, ES, FS
//     and GS code or data (S set), and not execute-only code, when present;
//   - TR, when present: a TSS (S clear, type 1, 3, 9 or 11; 9 or 11 in long
//     mode); LDTR, when present: an LDT (S clear, type 2);
//   - GDTR and IDTR limits at most 0xffff;
//   - canonical addresses (48 bits, 57 with CR4.LA57): in long mode the FS,
//     GS, TR, LDTR, GDTR and IDTR bases, and RIP in 64-bit mode; always
//     KernelGSBase, LSTAR, CSTAR, SYSENTER_ESP and SYSENTER_EIP;
//   - G_PAT: every entry a defined memory type (0, 1, 4, 5, 6, 7).
//
// Deliberately not checked, because a CPU does produce them: SS.DPL
// against CPL (AMD's SYSRET leaves the SS attributes unchanged), available
// (not busy) TSS types in TR (QEMU caches TR before LTR marks the
// descriptor busy), DR7 bit 10 clear (the CPU forces it to one), segment
// attributes in real and virtual-8086 mode (the CPU ignores them there).
func ValidateState(s *StateSaveArea) []string {
	var bad []string
	add := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	pe := s.CR0&CR0PE != 0
	lma := s.EFER&EFERLMA != 0
	vm86 := pe && !lma && s.RFLAGS&RFLAGSVM != 0

	// RFLAGS (APM vol. 2, 3.1.6).
	if s.RFLAGS&RFLAGSFixed == 0 {
		add("RFLAGS %#x: reserved bit 1 clear (it is always one)", s.RFLAGS)
	}
	if s.RFLAGS&rflagsReserved != 0 {
		add("RFLAGS %#x: reserved bits set", s.RFLAGS)
	}
	if s.RFLAGS&RFLAGSVM != 0 {
		if lma {
			add("RFLAGS %#x: VM (virtual-8086 mode) set in long mode", s.RFLAGS)
		} else if !pe {
			add("RFLAGS %#x: VM (virtual-8086 mode) set with CR0.PE clear", s.RFLAGS)
		}
	}

	// CPL against the mode.
	switch {
	case s.CPL > 3:
		add("CPL %d (at most 3)", s.CPL)
	case !pe && s.CPL != 0:
		add("CPL %d in real mode (must be 0)", s.CPL)
	case vm86 && s.CPL != 3:
		add("CPL %d in virtual-8086 mode (must be 3)", s.CPL)
	}

	// Paging and long mode (APM vol. 2, 3.1.1, 14.6).
	if s.CR0&CR0PG != 0 && !pe {
		add("CR0 %#x: CR0.PG set with CR0.PE clear", s.CR0)
	}
	if lma {
		if s.EFER&EFERLME == 0 {
			add("EFER %#x: EFER.LMA set with EFER.LME clear", s.EFER)
		}
		if s.CR0&CR0PG == 0 {
			add("EFER %#x: EFER.LMA set with CR0.PG clear (CR0 %#x)", s.EFER, s.CR0)
		}
	} else if s.EFER&EFERLME != 0 && s.CR0&CR0PG != 0 {
		add("EFER %#x: EFER.LMA clear with EFER.LME and CR0.PG set (CR0 %#x)", s.EFER, s.CR0)
	}

	// Debug registers (APM vol. 2, 13.1.1).
	if s.DR6&drReserved != 0 {
		add("DR6 %#x: bits 63:32 not zero", s.DR6)
	}
	if r := s.DR7 & dr7Reserved; r != 0 {
		add("DR7 %#x: reserved bits %#x set", s.DR7, r)
	}

	// Segment registers (APM vol. 2, 4.7, 4.8).
	segs := [...]struct {
		name string
		seg  *Segment
	}{{"ES", &s.ES}, {"CS", &s.CS}, {"SS", &s.SS}, {"DS", &s.DS}, {"FS", &s.FS}, {"GS", &s.GS}, {"LDTR", &s.LDTR}, {"TR", &s.TR}}
	for _, r := range segs {
		if r.seg.Attrib&segAttribReserved != 0 {
			add("%s attributes %#x: bits 15:12 not zero", r.name, r.seg.Attrib)
		}
	}
	if pe && !vm86 {
		if msg := checkCS(s.CS.Attrib); msg != "" {
			add("CS attributes %#x: %s", s.CS.Attrib, msg)
		}
		if msg := checkSS(s.SS.Attrib, lma); msg != "" {
			add("SS attributes %#x: %s", s.SS.Attrib, msg)
		}
		for _, r := range []struct {
			name string
			seg  *Segment
		}{{"DS", &s.DS}, {"ES", &s.ES}, {"FS", &s.FS}, {"GS", &s.GS}} {
			if msg := checkDataSeg(r.seg.Attrib); msg != "" {
				add("%s attributes %#x: %s", r.name, r.seg.Attrib, msg)
			}
		}
	}
	if msg := checkTR(s.TR.Attrib, lma); msg != "" {
		add("TR attributes %#x: %s", s.TR.Attrib, msg)
	}
	if a := s.LDTR.Attrib; a&SegP != 0 && (a&SegS != 0 || a&SegType != SegTypeLDT) {
		add("LDTR attributes %#x: present but not an LDT (S %d, type %#x)", a, a&SegS>>4, a&SegType)
	}
	if s.GDTR.Limit > descTableLimitMax {
		add("GDTR limit %#x (at most 0xffff)", s.GDTR.Limit)
	}
	if s.IDTR.Limit > descTableLimitMax {
		add("IDTR limit %#x (at most 0xffff)", s.IDTR.Limit)
	}

	// Canonical addresses (APM vol. 2, 5.3.1): only long mode uses the
	// upper half of segment and descriptor-table bases; WRMSR refuses a
	// non-canonical value for the MSRs in any mode.
	bits := uint(canonicalBits)
	if s.CR4&CR4LA57 != 0 {
		bits = canonicalBitsLA
	}
	if lma {
		for _, r := range []struct {
			name string
			base uint64
		}{{"FS", s.FS.Base}, {"GS", s.GS.Base}, {"TR", s.TR.Base}, {"LDTR", s.LDTR.Base}, {"GDTR", s.GDTR.Base}, {"IDTR", s.IDTR.Base}} {
			if !canonical(r.base, bits) {
				add("%s base %#x: not canonical (%d-bit addresses)", r.name, r.base, bits)
			}
		}
		if s.CS.Attrib&SegL != 0 && !canonical(s.RIP, bits) {
			add("RIP %#x: not canonical in 64-bit mode (%d-bit addresses)", s.RIP, bits)
		}
	}
	for _, r := range []struct {
		name string
		v    uint64
	}{{"KernelGSBase", s.KernelGSBase}, {"LSTAR", s.LSTAR}, {"CSTAR", s.CSTAR}, {"SYSENTER_ESP", s.SysenterESP}, {"SYSENTER_EIP", s.SysenterEIP}} {
		if !canonical(r.v, bits) {
			add("%s %#x: not canonical (%d-bit addresses)", r.name, r.v, bits)
		}
	}

	if i, t, ok := patBadEntry(s.GPAT); !ok {
		add("G_PAT %#x: entry %d has reserved memory type %d", s.GPAT, i, t)
	}
	return bad
}

// checkCS returns what is wrong with protected-mode CS attributes a, or "".
func checkCS(a uint16) string {
	switch {
	case a&SegP == 0:
		return "not present in protected mode"
	case a&SegS == 0:
		return fmt.Sprintf("a system descriptor (type %#x), not a code segment", a&SegType)
	case a&SegCode == 0:
		return fmt.Sprintf("type %#x is a data segment, not code", a&SegType)
	}
	return ""
}

// checkSS returns what is wrong with protected-mode SS attributes a, or "".
// In long mode SS may be null (not present) at CPL 0-2.
func checkSS(a uint16, longMode bool) string {
	switch {
	case a&SegP == 0:
		if !longMode {
			return "not present in protected mode outside long mode"
		}
	case a&SegS == 0:
		return fmt.Sprintf("a system descriptor (type %#x), not a writable data segment", a&SegType)
	case a&SegCode != 0 || a&SegWrite == 0:
		return fmt.Sprintf("type %#x is not a writable data segment", a&SegType)
	}
	return ""
}

// checkDataSeg returns what is wrong with protected-mode DS/ES/FS/GS
// attributes a, or "": when present, a code or data segment (S set) that
// can be read.
func checkDataSeg(a uint16) string {
	switch {
	case a&SegP == 0:
	case a&SegS == 0:
		return fmt.Sprintf("a system descriptor (type %#x), not code or data", a&SegType)
	case a&SegCode != 0 && a&SegWrite == 0: // for code, the W bit is R
		return fmt.Sprintf("type %#x is execute-only code", a&SegType)
	}
	return ""
}

// checkTR returns what is wrong with TR attributes a, or "": when present,
// a TSS; in long mode a 64-bit one. Busy and available types are both
// accepted (see ValidateState).
func checkTR(a uint16, longMode bool) string {
	if a&SegP == 0 {
		return ""
	}
	t := a & SegType
	ok := t == SegTypeTSS64Avl || t == SegTypeTSS64Bsy
	if !longMode {
		ok = ok || t == SegTypeTSS16Avl || t == SegTypeTSS16Bsy
	}
	if a&SegS != 0 || !ok {
		mode := "legacy mode"
		if longMode {
			mode = "long mode"
		}
		return fmt.Sprintf("present but not a %s TSS (S %d, type %#x)", mode, a&SegS>>4, t)
	}
	return ""
}

// canonical reports whether addr is canonical with bits-bit linear
// addresses: bits 63 to bits-1 all equal.
func canonical(addr uint64, bits uint) bool {
	sh := 64 - bits
	return uint64(int64(addr<<sh)>>sh) == addr
}

// ValidPAT reports whether every entry of the PAT value v (PAT MSR or the
// VMCB's G_PAT) is a defined memory type: UC (0), WC (1), WT (4), WP (5),
// WB (6) or UC- (7) (APM vol. 2, 7.8.1). WRMSR refuses anything else with
// #GP, and so does VMRUN for G_PAT with nested paging.
func ValidPAT(v uint64) bool {
	_, _, ok := patBadEntry(v)
	return ok
}

// patBadEntry returns the first PAT entry of v with a reserved type (2, 3
// or 8-255) and that type; ok is true when there is none.
func patBadEntry(v uint64) (entry int, typ uint8, ok bool) {
	for i := 0; i < 8; i++ {
		switch t := uint8(v >> (8 * i)); t {
		case 0, 1, 4, 5, 6, 7:
		default:
			return i, t, false
		}
	}
	return 0, 0, true
}
