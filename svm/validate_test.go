package svm

import (
	"fmt"
	"reflect"
	"testing"
	"unsafe"
)

// Segment attributes as kernel/image.go builds them.
const (
	tAttrCode16 = SegP | SegS | SegCode | SegWrite | SegAccessed // 0x09b
	tAttrData16 = SegP | SegS | SegWrite | SegAccessed           // 0x093
	tAttrCode32 = tAttrCode16 | SegDB | SegG                     // 0xc9b
	tAttrData32 = tAttrData16 | SegDB | SegG                     // 0xc93
	tAttrCode64 = tAttrCode16 | SegL | SegG                      // 0xa9b
	tAttrLDT    = SegP | SegTypeLDT                              // 0x082
	tAttrTR     = SegP | SegTypeTSS64Bsy                         // 0x08b
	tDPL3       = 3 << SegDPLShift

	tResetDR6 = 0xffff0ff0
	tResetDR7 = 0x400
	tResetPAT = 0x0007040600070406
)

// stateReal is the state kernel/image.go's load gives a mode-16 image:
// real mode at the entry point, flat 64 KiB segments.
func stateReal() StateSaveArea {
	var s StateSaveArea
	s.CR0 = CR0ET
	s.RFLAGS = RFLAGSFixed
	s.DR6, s.DR7 = tResetDR6, tResetDR7
	s.GPAT = tResetPAT
	s.RIP = 0x7c00
	s.LDTR = Segment{Attrib: tAttrLDT, Limit: 0xffff}
	s.TR = Segment{Attrib: tAttrTR, Limit: 0xffff}
	s.GDTR.Limit, s.IDTR.Limit = 0xffff, 0xffff
	s.CS = Segment{Attrib: tAttrCode16, Limit: 0xffff}
	for _, seg := range []*Segment{&s.DS, &s.ES, &s.SS, &s.FS, &s.GS} {
		*seg = Segment{Attrib: tAttrData16, Limit: 0xffff}
	}
	return s
}

// state32 is a mode-32 image's start: protected mode, flat 4 GiB code and
// data from a three-entry GDT at 0x500, no paging.
func state32() StateSaveArea {
	s := stateReal()
	s.RIP = 0x100000
	s.GDTR = Segment{Base: 0x500, Limit: 0x17}
	s.IDTR.Limit = 0
	s.CR0 |= CR0PE
	s.CS = Segment{Selector: 0x08, Attrib: tAttrCode32, Limit: 0xffffffff}
	for _, seg := range []*Segment{&s.DS, &s.ES, &s.SS, &s.FS, &s.GS} {
		*seg = Segment{Selector: 0x10, Attrib: tAttrData32, Limit: 0xffffffff}
	}
	return s
}

// state64 is a mode-64 image's start: long mode on the identity map at
// 0x1000, 64-bit code.
func state64() StateSaveArea {
	s := state32()
	s.CR3 = 0x1000
	s.CR4 = CR4PAE
	s.CR0 |= CR0PG
	s.EFER = EFERLME | EFERLMA
	s.CS.Attrib = tAttrCode64
	return s
}

// stateLinuxUser is a 64-bit Linux process interrupted at CPL 3, with the
// features a Linux guest turns on, as QEMU saves it (TR of type 9: QEMU
// caches TR before LTR marks the descriptor busy).
func stateLinuxUser() StateSaveArea {
	s := state64()
	s.CPL = 3
	s.CR0 = CR0PE | CR0MP | CR0ET | CR0NE | CR0WP | CR0AM | CR0PG
	s.CR3 = 0x12345000 | 5 // PCID 5
	s.CR4 = CR4PAE | CR4PGE | CR4OSFXSR | CR4OSXMMEXCPT | CR4OSXSAVE | CR4FSGSBASE |
		CR4PCIDE | CR4SMEP | CR4SMAP | CR4UMIP | CR4MCE | CR4DE
	s.EFER = EFERSCE | EFERLME | EFERLMA | EFERNXE
	s.RFLAGS = RFLAGSFixed | RFLAGSIF | 1<<0 | 1<<6 | 1<<18 | 1<<21 // CF, ZF, AC, ID
	s.RIP, s.RSP = 0x7f12_3456_7890, 0x7ffd_0000_1000
	s.CS = Segment{Selector: 0x33, Attrib: tAttrCode64 | tDPL3, Limit: 0xffffffff}
	s.SS = Segment{Selector: 0x2b, Attrib: tAttrData32 | tDPL3, Limit: 0xffffffff}
	s.DS, s.ES = Segment{}, Segment{}      // null, not present
	s.FS = Segment{Base: 0x7f12_0000_0740} // null selector, TLS base
	s.GS = Segment{}                       // null
	s.TR = Segment{Selector: 0x40, Attrib: SegP | SegTypeTSS64Avl, Limit: 0x4087, Base: 0xfffffe00_00003000}
	s.LDTR = Segment{}
	s.GDTR = Segment{Base: 0xfffffe00_00001000, Limit: 0x7f}
	s.IDTR = Segment{Base: 0xfffffe00_00000000, Limit: 0xfff}
	s.KernelGSBase = 0xffff8880_7fc00000
	s.LSTAR = 0xffffffff_81a00080
	s.CSTAR = 0xffffffff_81a001c0
	s.STAR = 0x0023_0010_0000_0000
	s.SFMASK = 0x47700
	s.SysenterCS, s.SysenterESP, s.SysenterEIP = 0x10, 0xfffffe00_00003000&0xffffffff, 0x81a01000
	s.DR6, s.DR7 = tResetDR6, tResetDR7|1<<13|3 // GD, L0, G0
	s.GPAT = 0x0407050600070106
	return s
}

// legitimate states a CPU can be in: ValidateState and Check must pass them.
var legitimate = map[string]func() StateSaveArea{
	"real mode (mode-16 image)":      stateReal,
	"protected mode (mode-32 image)": state32,
	"long mode (mode-64 image)":      state64,
	"64-bit Linux user process":      stateLinuxUser,
	"64-bit kernel with null SS":     func() StateSaveArea { s := state64(); s.SS = Segment{Attrib: SegDB}; return s },
	"compatibility mode at CPL 3": func() StateSaveArea {
		s := stateLinuxUser()
		s.CS.Attrib = tAttrCode32 | tDPL3
		s.RIP = 0xf7f0_0000
		return s
	},
	"AMD SYSRET keeping kernel SS attrs": func() StateSaveArea { s := stateLinuxUser(); s.SS.Attrib = tAttrData32; return s },
	"virtual-8086 mode": func() StateSaveArea {
		s := state32()
		s.RFLAGS |= RFLAGSVM
		s.CPL = 3
		s.CS = Segment{Selector: 0xf000, Base: 0xf0000, Limit: 0xffff, Attrib: tAttrData16 | tDPL3}
		return s
	},
	"32-bit PAE paging": func() StateSaveArea {
		s := state32()
		s.CR0 |= CR0PG
		s.CR4 = CR4PAE | CR4PSE
		s.CR3 = 0xfff_f000
		return s
	},
	"5-level paging": func() StateSaveArea {
		s := stateLinuxUser()
		s.CR4 |= CR4LA57
		s.LSTAR, s.KernelGSBase = 0xff11_0000_0000_0000, 0xff60_0000_0000_0000
		s.GDTR.Base = 0xffd2_0000_0000_1000
		return s
	},
	"real mode after protected mode": func() StateSaveArea {
		s := stateReal()
		s.CS.Attrib, s.DS.Attrib = tAttrData16, tAttrCode16 // attributes mean nothing here
		s.TR = Segment{}                                    // QEMU's null TR
		return s
	},
}

// vmcbFor wraps s in a VMCB that passes Check's control-area rules, the
// way kernel/vcpu.go sets one up.
func vmcbFor(s StateSaveArea) *VMCB {
	v := new(VMCB)
	v.State = s
	v.State.EFER |= EFERSVME
	v.Control.InterceptMisc2 = InterceptVMRUN
	v.Control.GuestASID = 1
	v.Control.NPEnable = NPEnableNP
	v.Control.IOPMBasePA, v.Control.MSRPMBasePA = 0x7f00_0000, 0x7f00_3000
	return v
}

func TestLegitimateStatesPass(t *testing.T) {
	for name, mk := range legitimate {
		s := mk()
		if r := ValidateState(&s); len(r) != 0 {
			t.Errorf("%s: ValidateState %q", name, r)
		}
		if r := Check(vmcbFor(s)); len(r) != 0 {
			t.Errorf("%s: Check %q", name, r)
		}
	}
}

func sameFindings(got, want []string) bool {
	if len(got) == 0 && len(want) == 0 {
		return true
	}
	return reflect.DeepEqual(got, want)
}

func TestValidateState(t *testing.T) {
	const nonCanon = 1 << 47
	for _, tc := range []struct {
		name string
		base func() StateSaveArea
		mod  func(s *StateSaveArea)
		want []string
	}{
		// RFLAGS.
		{"RFLAGS all ones", state64, func(s *StateSaveArea) { s.RFLAGS = ^uint64(0) }, []string{
			"RFLAGS 0xffffffffffffffff: reserved bits set",
			"RFLAGS 0xffffffffffffffff: VM (virtual-8086 mode) set in long mode"}},
		{"RFLAGS bit 1 clear", state64, func(s *StateSaveArea) { s.RFLAGS = RFLAGSIF }, []string{
			"RFLAGS 0x200: reserved bit 1 clear (it is always one)"}},
		{"RFLAGS bit 3", state64, func(s *StateSaveArea) { s.RFLAGS |= 1 << 3 }, []string{"RFLAGS 0xa: reserved bits set"}},
		{"RFLAGS bit 5", state32, func(s *StateSaveArea) { s.RFLAGS |= 1 << 5 }, []string{"RFLAGS 0x22: reserved bits set"}},
		{"RFLAGS bit 15", stateReal, func(s *StateSaveArea) { s.RFLAGS |= 1 << 15 }, []string{"RFLAGS 0x8002: reserved bits set"}},
		{"RFLAGS bit 22", state64, func(s *StateSaveArea) { s.RFLAGS |= 1 << 22 }, []string{"RFLAGS 0x400002: reserved bits set"}},
		{"RFLAGS bit 63", state64, func(s *StateSaveArea) { s.RFLAGS |= 1 << 63 }, []string{"RFLAGS 0x8000000000000002: reserved bits set"}},
		{"RFLAGS.VM in long mode", state64, func(s *StateSaveArea) { s.RFLAGS |= RFLAGSVM }, []string{
			"RFLAGS 0x20002: VM (virtual-8086 mode) set in long mode"}},
		{"RFLAGS.VM in real mode", stateReal, func(s *StateSaveArea) { s.RFLAGS |= RFLAGSVM }, []string{
			"RFLAGS 0x20002: VM (virtual-8086 mode) set with CR0.PE clear"}},

		// CPL.
		{"CPL 7", state64, func(s *StateSaveArea) { s.CPL = 7 }, []string{"CPL 7 (at most 3)"}},
		{"CPL 255 in real mode", stateReal, func(s *StateSaveArea) { s.CPL = 255 }, []string{"CPL 255 (at most 3)"}},
		{"CPL 3 in real mode", stateReal, func(s *StateSaveArea) { s.CPL = 3 }, []string{"CPL 3 in real mode (must be 0)"}},
		{"CPL 0 in virtual-8086 mode", legitimate["virtual-8086 mode"], func(s *StateSaveArea) { s.CPL = 0 }, []string{
			"CPL 0 in virtual-8086 mode (must be 3)"}},

		// CR0 and EFER.
		{"CR0.PG without PE", stateReal, func(s *StateSaveArea) { s.CR0 |= CR0PG }, []string{
			"CR0 0x80000010: CR0.PG set with CR0.PE clear"}},
		{"EFER.LMA without LME", state64, func(s *StateSaveArea) { s.EFER &^= EFERLME }, []string{
			"EFER 0x400: EFER.LMA set with EFER.LME clear"}},
		{"EFER.LMA without CR0.PG", state64, func(s *StateSaveArea) { s.CR0 &^= CR0PG }, []string{
			"EFER 0x500: EFER.LMA set with CR0.PG clear (CR0 0x11)"}},
		{"EFER.LMA in real mode", stateReal, func(s *StateSaveArea) { s.EFER = EFERLMA }, []string{
			"EFER 0x400: EFER.LMA set with EFER.LME clear",
			"EFER 0x400: EFER.LMA set with CR0.PG clear (CR0 0x10)"}},
		{"EFER.LME and CR0.PG without LMA", state64, func(s *StateSaveArea) { s.EFER &^= EFERLMA }, []string{
			"EFER 0x100: EFER.LMA clear with EFER.LME and CR0.PG set (CR0 0x80000011)"}},

		// Debug registers.
		{"DR6 bits 63:32", state64, func(s *StateSaveArea) { s.DR6 |= 1 << 40 }, []string{"DR6 0x100ffff0ff0: bits 63:32 not zero"}},
		{"DR7 bit 12", state64, func(s *StateSaveArea) { s.DR7 |= 1 << 12 }, []string{"DR7 0x1400: reserved bits 0x1000 set"}},
		{"DR7 bits 11, 14, 15", state64, func(s *StateSaveArea) { s.DR7 |= 1<<11 | 1<<14 | 1<<15 }, []string{"DR7 0xcc00: reserved bits 0xc800 set"}},
		{"DR7 bits 63:32", state64, func(s *StateSaveArea) { s.DR7 |= 1 << 32 }, []string{"DR7 0x100000400: reserved bits 0x100000000 set"}},
		{"DR7 bit 10 clear", state64, func(s *StateSaveArea) { s.DR7 = 0 }, nil},

		// Segment attributes.
		{"DS attribute bits 15:12", state64, func(s *StateSaveArea) { s.DS.Attrib |= 0x1000 }, []string{"DS attributes 0x1c93: bits 15:12 not zero"}},
		{"TR attribute bits 15:12 in real mode", stateReal, func(s *StateSaveArea) { s.TR.Attrib |= 0x8000 }, []string{"TR attributes 0x808b: bits 15:12 not zero"}},
		{"CS not present", state64, func(s *StateSaveArea) { s.CS.Attrib &^= SegP }, []string{"CS attributes 0xa1b: not present in protected mode"}},
		{"CS data", state32, func(s *StateSaveArea) { s.CS.Attrib = tAttrData32 }, []string{"CS attributes 0xc93: type 0x3 is a data segment, not code"}},
		{"CS system", state64, func(s *StateSaveArea) { s.CS.Attrib = tAttrTR }, []string{"CS attributes 0x8b: a system descriptor (type 0xb), not a code segment"}},
		{"CS data in real mode", stateReal, func(s *StateSaveArea) { s.CS.Attrib = 0 }, nil},
		{"SS not present outside long mode", state32, func(s *StateSaveArea) { s.SS.Attrib &^= SegP }, []string{
			"SS attributes 0xc13: not present in protected mode outside long mode"}},
		{"SS read-only", state64, func(s *StateSaveArea) { s.SS.Attrib &^= SegWrite }, []string{"SS attributes 0xc91: type 0x1 is not a writable data segment"}},
		{"SS code", state32, func(s *StateSaveArea) { s.SS.Attrib = tAttrCode32 }, []string{"SS attributes 0xc9b: type 0xb is not a writable data segment"}},
		{"SS system", state64, func(s *StateSaveArea) { s.SS.Attrib = tAttrLDT }, []string{"SS attributes 0x82: a system descriptor (type 0x2), not a writable data segment"}},
		{"DS system", state64, func(s *StateSaveArea) { s.DS.Attrib = tAttrLDT }, []string{"DS attributes 0x82: a system descriptor (type 0x2), not code or data"}},
		{"GS execute-only code", state32, func(s *StateSaveArea) { s.GS.Attrib = SegP | SegS | SegCode }, []string{"GS attributes 0x98: type 0x8 is execute-only code"}},
		{"ES readable code", state32, func(s *StateSaveArea) { s.ES.Attrib = tAttrCode32 }, nil},
		{"FS not present", state32, func(s *StateSaveArea) { s.FS.Attrib = SegS }, nil},
		{"TR an LDT", state64, func(s *StateSaveArea) { s.TR.Attrib = tAttrLDT }, []string{
			"TR attributes 0x82: present but not a long mode TSS (S 0, type 0x2)"}},
		{"TR 16-bit TSS in long mode", state64, func(s *StateSaveArea) { s.TR.Attrib = SegP | SegTypeTSS16Bsy }, []string{
			"TR attributes 0x83: present but not a long mode TSS (S 0, type 0x3)"}},
		{"TR 16-bit TSS in protected mode", state32, func(s *StateSaveArea) { s.TR.Attrib = SegP | SegTypeTSS16Bsy }, nil},
		{"TR code segment", state32, func(s *StateSaveArea) { s.TR.Attrib = tAttrCode32 }, []string{
			"TR attributes 0xc9b: present but not a legacy mode TSS (S 1, type 0xb)"}},
		{"TR null", state64, func(s *StateSaveArea) { s.TR = Segment{} }, nil},
		{"LDTR a TSS", state64, func(s *StateSaveArea) { s.LDTR.Attrib = tAttrTR }, []string{
			"LDTR attributes 0x8b: present but not an LDT (S 0, type 0xb)"}},
		{"LDTR data in real mode", stateReal, func(s *StateSaveArea) { s.LDTR.Attrib = tAttrData16 }, []string{
			"LDTR attributes 0x93: present but not an LDT (S 1, type 0x3)"}},
		{"LDTR not present", state64, func(s *StateSaveArea) { s.LDTR.Attrib = SegTypeTSS64Bsy }, nil},

		// Descriptor tables.
		{"GDTR limit", state64, func(s *StateSaveArea) { s.GDTR.Limit = 0x10000 }, []string{"GDTR limit 0x10000 (at most 0xffff)"}},
		{"IDTR limit", stateReal, func(s *StateSaveArea) { s.IDTR.Limit = 0xffffffff }, []string{"IDTR limit 0xffffffff (at most 0xffff)"}},

		// Canonical addresses.
		{"FS base", state64, func(s *StateSaveArea) { s.FS.Base = nonCanon }, []string{"FS base 0x800000000000: not canonical (48-bit addresses)"}},
		{"GS base", state64, func(s *StateSaveArea) { s.GS.Base = 0xfff0_0000_0000_0000 }, []string{"GS base 0xfff0000000000000: not canonical (48-bit addresses)"}},
		{"TR base", state64, func(s *StateSaveArea) { s.TR.Base = nonCanon }, []string{"TR base 0x800000000000: not canonical (48-bit addresses)"}},
		{"LDTR base", state64, func(s *StateSaveArea) { s.LDTR.Base = nonCanon }, []string{"LDTR base 0x800000000000: not canonical (48-bit addresses)"}},
		{"GDTR base", state64, func(s *StateSaveArea) { s.GDTR.Base = nonCanon }, []string{"GDTR base 0x800000000000: not canonical (48-bit addresses)"}},
		{"IDTR base", state64, func(s *StateSaveArea) { s.IDTR.Base = 0x0001_0000_0000_0000 }, []string{"IDTR base 0x1000000000000: not canonical (48-bit addresses)"}},
		{"FS base outside long mode", state32, func(s *StateSaveArea) { s.FS.Base = nonCanon }, nil},
		{"FS base with LA57", state64, func(s *StateSaveArea) { s.CR4 |= CR4LA57; s.FS.Base = nonCanon }, nil},
		{"FS base beyond LA57", state64, func(s *StateSaveArea) { s.CR4 |= CR4LA57; s.FS.Base = 1 << 56 }, []string{
			"FS base 0x100000000000000: not canonical (57-bit addresses)"}},
		{"RIP in 64-bit mode", state64, func(s *StateSaveArea) { s.RIP = nonCanon }, []string{"RIP 0x800000000000: not canonical in 64-bit mode (48-bit addresses)"}},
		{"RIP in compatibility mode", state64, func(s *StateSaveArea) { s.CS.Attrib = tAttrCode32; s.RIP = nonCanon }, nil},
		{"KernelGSBase", state64, func(s *StateSaveArea) { s.KernelGSBase = nonCanon }, []string{"KernelGSBase 0x800000000000: not canonical (48-bit addresses)"}},
		{"LSTAR", state64, func(s *StateSaveArea) { s.LSTAR = 0x8000_0000_0000_0000 }, []string{"LSTAR 0x8000000000000000: not canonical (48-bit addresses)"}},
		{"CSTAR in real mode", stateReal, func(s *StateSaveArea) { s.CSTAR = nonCanon }, []string{"CSTAR 0x800000000000: not canonical (48-bit addresses)"}},
		{"SYSENTER_ESP", state32, func(s *StateSaveArea) { s.SysenterESP = nonCanon }, []string{"SYSENTER_ESP 0x800000000000: not canonical (48-bit addresses)"}},
		{"SYSENTER_EIP", state64, func(s *StateSaveArea) { s.SysenterEIP = ^uint64(0) >> 1 }, []string{"SYSENTER_EIP 0x7fffffffffffffff: not canonical (48-bit addresses)"}},

		// PAT.
		{"G_PAT type 2", state64, func(s *StateSaveArea) { s.GPAT = 0x0007040600070402 }, []string{"G_PAT 0x7040600070402: entry 0 has reserved memory type 2"}},
		{"G_PAT type 8", stateReal, func(s *StateSaveArea) { s.GPAT = 0x0807040600070406 }, []string{"G_PAT 0x807040600070406: entry 7 has reserved memory type 8"}},
		{"G_PAT all ones", state32, func(s *StateSaveArea) { s.GPAT = ^uint64(0) }, []string{"G_PAT 0xffffffffffffffff: entry 0 has reserved memory type 255"}},
		{"G_PAT all UC", state64, func(s *StateSaveArea) { s.GPAT = 0 }, nil},
	} {
		s := tc.base()
		tc.mod(&s)
		if got := ValidateState(&s); !sameFindings(got, tc.want) {
			t.Errorf("%s:\n got  %q\n want %q", tc.name, got, tc.want)
		}
	}
}

func TestCheckRules(t *testing.T) {
	top := uint64(1) << MaxPhysAddrBits
	for _, tc := range []struct {
		name     string
		base     func() StateSaveArea
		physBits uint // 0: Check
		mod      func(v *VMCB)
		want     []string
	}{
		{"EFER.SVME", state64, 0, func(v *VMCB) { v.State.EFER &^= EFERSVME }, []string{"EFER 0x500: EFER.SVME is clear"}},
		{"CR0.NW without CD", state64, 0, func(v *VMCB) { v.State.CR0 |= CR0NW }, []string{"CR0 0xa0000011: CR0.NW set with CR0.CD clear"}},
		{"CR0.NW with CD", state64, 0, func(v *VMCB) { v.State.CR0 |= CR0NW | CR0CD }, nil},
		{"CR0 bits 63:32", state64, 0, func(v *VMCB) { v.State.CR0 |= 1 << 32 }, []string{"CR0 0x180000011: bits 63:32 not zero"}},
		{"CR3 bit 52 in long mode", state64, 0, func(v *VMCB) { v.State.CR3 |= 1 << 52 }, []string{
			"CR3 0x10000000001000: bits 52 and above set in long mode (MAXPHYADDR 52)"}},
		{"CR3 above MAXPHYADDR 40", state64, 40, func(v *VMCB) { v.State.CR3 |= 1 << 45 }, []string{
			"CR3 0x200000001000: bits 40 and above set in long mode (MAXPHYADDR 40)"}},
		{"CR3 below MAXPHYADDR 40", state64, 40, func(v *VMCB) { v.State.CR3 |= 1 << 39 }, nil},
		{"CR3 bit 60 in real mode", stateReal, 0, func(v *VMCB) { v.State.CR3 = 1 << 60 }, []string{"CR3 0x1000000000000000: reserved bits 63:52 set"}},
		{"CR3 bit 45 in real mode", stateReal, 40, func(v *VMCB) { v.State.CR3 = 1 << 45 }, nil},
		{"CR4 VMXE", state64, 0, func(v *VMCB) { v.State.CR4 |= 1 << 13 }, []string{"CR4 0x2020: reserved bits 0x2000 set"}},
		{"CR4 bits 63:24", stateReal, 0, func(v *VMCB) { v.State.CR4 = 0xffffffffff000000 }, []string{"CR4 0xffffffffff000000: reserved bits 0xffffffffff000000 set"}},
		{"CR4 every defined bit", stateReal, 0, func(v *VMCB) { v.State.CR4 = CR4Valid &^ CR4CET }, nil},
		{"DR6 bits 63:32", state64, 0, func(v *VMCB) { v.State.DR6 |= 1 << 63 }, []string{"DR6 0x80000000ffff0ff0: bits 63:32 not zero"}},
		{"DR7 bits 63:32", state64, 0, func(v *VMCB) { v.State.DR7 |= 1 << 32 }, []string{"DR7 0x100000400: bits 63:32 not zero"}},
		{"EFER bit 20", state64, 0, func(v *VMCB) { v.State.EFER |= 1 << 20 }, []string{"EFER 0x101500: reserved bits 0x100000 set"}},
		{"EFER bit 9", state64, 0, func(v *VMCB) { v.State.EFER |= 1 << 9 }, []string{"EFER 0x1700: reserved bits 0x200 set"}},
		{"long mode without CR4.PAE", state64, 0, func(v *VMCB) { v.State.CR4 = 0 }, []string{
			"CR4 0x0: EFER.LME and CR0.PG set with CR4.PAE clear"}},
		{"long mode without CR0.PE", state64, 0, func(v *VMCB) { v.State.CR0 &^= CR0PE }, []string{
			"CR0 0x80000010: EFER.LME and CR0.PG set with CR0.PE clear"}},
		{"CS.L and CS.D", state64, 0, func(v *VMCB) { v.State.CS.Attrib |= SegDB }, []string{
			"CS attributes 0xe9b: CS.L and CS.D both set in long mode"}},
		{"CS.L and CS.D outside long mode", state32, 0, func(v *VMCB) { v.State.CS.Attrib |= SegL }, nil},
		{"VMRUN intercept", state64, 0, func(v *VMCB) { v.Control.InterceptMisc2 = InterceptVMMCALL }, []string{
			"VMRUN intercept is clear (InterceptMisc2 0x2)"}},
		{"IOPM reaching MAXPHYADDR", state64, 0, func(v *VMCB) { v.Control.IOPMBasePA = top - 0x2000 }, []string{
			fmt.Sprintf("IOPM_BASE_PA %#x: the I/O permission map reaches MAXPHYADDR (52 bits)", top-0x2000)}},
		{"IOPM just below MAXPHYADDR", state64, 0, func(v *VMCB) { v.Control.IOPMBasePA = top - 0x3000 + 0xfff }, nil},
		{"IOPM wrapping", state64, 0, func(v *VMCB) { v.Control.IOPMBasePA = ^uint64(0) }, []string{
			"IOPM_BASE_PA 0xffffffffffffffff: the I/O permission map reaches MAXPHYADDR (52 bits)"}},
		{"MSRPM above MAXPHYADDR 36", state64, 36, func(v *VMCB) { v.Control.MSRPMBasePA = 1<<36 - 0x1000 }, []string{
			"MSRPM_BASE_PA 0xffffff000: the MSR permission map reaches MAXPHYADDR (36 bits)"}},
		{"EVENTINJ reserved type", state64, 0, func(v *VMCB) { v.Control.EventInj = EventValid | 1<<EventTypeShift | 0x20 }, []string{
			"EVENTINJ 0x80000120: reserved event type 1"}},
		{"EVENTINJ exception 2", state64, 0, func(v *VMCB) { v.Control.EventInj = Exception(VectorNMI, 0).Encode() }, []string{
			"EVENTINJ 0x80000302: exception with vector 2 (NMI is its own event type)"}},
		{"EVENTINJ exception 9", state64, 0, func(v *VMCB) { v.Control.EventInj = Exception(9, 0).Encode() }, []string{
			"EVENTINJ 0x80000309: exception with vector 9, which is not an exception"}},
		{"EVENTINJ exception 31", state64, 0, func(v *VMCB) { v.Control.EventInj = Exception(31, 0).Encode() }, []string{
			"EVENTINJ 0x8000031f: exception with vector 31, which is not an exception"}},
		{"EVENTINJ exception 32", state64, 0, func(v *VMCB) { v.Control.EventInj = Exception(32, 0).Encode() }, []string{
			"EVENTINJ 0x80000320: exception with vector 32, which is not an exception"}},
		{"EVENTINJ #PF", state64, 0, func(v *VMCB) { v.Control.EventInj = Exception(VectorPF, 2).Encode() }, nil},
		{"EVENTINJ #SX", state64, 0, func(v *VMCB) { v.Control.EventInj = Exception(30, 0).Encode() }, nil},
		{"EVENTINJ NMI", state64, 0, func(v *VMCB) { v.Control.EventInj = Event{Type: EventNMI, Vector: 0x55}.Encode() }, nil},
		{"EVENTINJ INTn 0x80", state64, 0, func(v *VMCB) { v.Control.EventInj = Event{Type: EventSoftInt, Vector: 0x80}.Encode() }, nil},
		{"EVENTINJ not valid", state64, 0, func(v *VMCB) { v.Control.EventInj = 7 << EventTypeShift }, nil},
		{"ASID 0", state64, 0, func(v *VMCB) { v.Control.GuestASID = 0 }, []string{"guest ASID is 0 (reserved for the host)"}},
		{"CR4.CET without CR0.WP", state64, 0, func(v *VMCB) { v.State.CR4 |= CR4CET }, []string{
			"CR4 0x800020: CR4.CET set with CR0.WP clear (CR0 0x80000011)"}},
		{"CR4.CET with CR0.WP", state64, 0, func(v *VMCB) { v.State.CR4 |= CR4CET; v.State.CR0 |= CR0WP }, nil},
		{"S_CET reserved", state64, 0, func(v *VMCB) { v.State.SCET = 1 << 7 }, []string{"S_CET 0x80: reserved bits 9:6 set"}},
		{"G_PAT with nested paging", state64, 0, func(v *VMCB) { v.State.GPAT = 0x0007040600070403 }, []string{
			"G_PAT 0x7040600070403: entry 0 has reserved memory type 3 (nested paging on)"}},
		{"G_PAT without nested paging", state64, 0, func(v *VMCB) { v.State.GPAT = 2; v.Control.NPEnable = 0 }, nil},
		{"MAXPHYADDR above 52 is 52", state64, 60, func(v *VMCB) { v.State.CR3 |= 1 << 55 }, []string{
			"CR3 0x80000000001000: bits 52 and above set in long mode (MAXPHYADDR 52)"}},
	} {
		v := vmcbFor(tc.base())
		tc.mod(v)
		got := Check(v)
		if tc.physBits != 0 {
			got = CheckPhys(v, tc.physBits)
		}
		if !sameFindings(got, tc.want) {
			t.Errorf("%s:\n got  %q\n want %q", tc.name, got, tc.want)
		}
	}
}

func TestValidPAT(t *testing.T) {
	for v, want := range map[uint64]bool{
		tResetPAT: true, 0: true, 0x0707070707070707: true, 0x0100000504060701: true,
		0x0200000000000000: false, 0x0000000000000300: false, 0x0000000000000800: false, 1 << 63: false,
	} {
		if ValidPAT(v) != want {
			t.Errorf("ValidPAT(%#x) = %v", v, !want)
		}
	}
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct {
		a    uint64
		bits uint
		want bool
	}{
		{0, 48, true}, {0x7fff_ffff_ffff, 48, true}, {0x8000_0000_0000, 48, false},
		{0xffff_8000_0000_0000, 48, true}, {0xfffe_8000_0000_0000, 48, false},
		{0x00ff_ffff_ffff_ffff, 57, true}, {0x0100_0000_0000_0000, 57, false},
		{0xff00_0000_0000_0000, 57, true}, {^uint64(0), 48, true},
	} {
		if got := canonical(tc.a, tc.bits); got != tc.want {
			t.Errorf("canonical(%#x, %d) = %v", tc.a, tc.bits, got)
		}
	}
}

func stateBytes(s *StateSaveArea) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(s)), unsafe.Sizeof(*s))
}

// FuzzValidateState: any bytes as a state save area (and as the start of a
// control area) neither panic ValidateState nor Check, and every finding
// names something.
func FuzzValidateState(f *testing.F) {
	for _, mk := range legitimate {
		s := mk()
		f.Add(append([]byte(nil), stateBytes(&s)...))
	}
	f.Add([]byte{})
	f.Add(make([]byte, 0x800))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s StateSaveArea
		copy(stateBytes(&s), data)
		bad := ValidateState(&s)
		for _, b := range bad {
			if b == "" {
				t.Fatal("empty finding")
			}
		}
		if again := ValidateState(&s); !sameFindings(again, bad) {
			t.Fatalf("not deterministic: %q then %q", bad, again)
		}
		v := new(VMCB)
		v.State = s
		if len(data) > int(unsafe.Sizeof(s)) {
			c := unsafe.Slice((*byte)(unsafe.Pointer(&v.Control)), unsafe.Sizeof(v.Control))
			copy(c, data[unsafe.Sizeof(s):])
		}
		for _, b := range CheckPhys(v, uint(len(data)%64)) {
			if b == "" {
				t.Fatal("empty Check reason")
			}
		}
	})
}
