package boot

import "fmt"

// Memory type range registers (AMD APM vol. 2, section 7.7.1): the memory
// type of a physical address, which with the page tables' PAT type gives
// the effective type (7.8.3, Table 7-11: an MTRR type of UC makes any
// page type uncacheable).
const (
	MSRMTRRCap      = 0xfe  // MTRRcap: 7:0 VCNT, number of variable ranges
	MSRMTRRDefType  = 0x2ff // MTRRdefType: 7:0 default type, 11 E
	MSRMTRRPhysBase = 0x200 // MTRRphysBase n at 0x200+2n: 7:0 type, 51:12 base
	MSRMTRRPhysMask = 0x201 // MTRRphysMask n at 0x201+2n: 11 V, 51:12 mask

	mtrrCapVCNT     = 0xff
	mtrrDefTypeE    = 1 << 11
	mtrrTypeMask    = 0xff
	mtrrMaskValid   = 1 << 11
	mtrrAddrMask    = 0x000f_ffff_ffff_f000 // bits 51:12
	maxVariableMTRR = 64

	MTRRUncacheable  = 0
	MTRRWriteCombine = 1
	MTRRWriteThrough = 4
	MTRRWriteProtect = 5
	MTRRWriteBack    = 6
)

// VariableMTRR is one MTRRphysBase/MTRRphysMask pair.
type VariableMTRR struct{ Base, Mask uint64 }

// MTRRType returns the memory type the MTRRs give the physical address pa
// (at or above 1 MiB: the fixed-range MTRRs are not consulted), from
// MTRRdefType and the variable ranges. Overlapping ranges follow section
// 7.7.1's precedence: UC wins, then WT over WB; other overlaps are
// undefined, and the first match is returned.
func MTRRType(defType uint64, vars []VariableMTRR, pa uint64) uint8 {
	if defType&mtrrDefTypeE == 0 {
		return MTRRUncacheable // MTRRs disabled: all memory is UC
	}
	typ, matched := uint8(defType&mtrrTypeMask), false
	for _, v := range vars {
		if v.Mask&mtrrMaskValid == 0 {
			continue
		}
		m := v.Mask & mtrrAddrMask
		if pa&m != v.Base&mtrrAddrMask&m {
			continue
		}
		t := uint8(v.Base & mtrrTypeMask)
		switch {
		case !matched:
			typ, matched = t, true
		case t == MTRRUncacheable:
			typ = t
		case t == MTRRWriteThrough && typ == MTRRWriteBack:
			typ = t
		}
	}
	return typ
}

// MTRRTypeName names a memory type.
func MTRRTypeName(t uint8) string {
	switch t {
	case MTRRUncacheable:
		return "UC"
	case MTRRWriteCombine:
		return "WC"
	case MTRRWriteThrough:
		return "WT"
	case MTRRWriteProtect:
		return "WP"
	case MTRRWriteBack:
		return "WB"
	}
	return fmt.Sprintf("type %d", t)
}
