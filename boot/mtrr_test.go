package boot

import "testing"

func TestMTRRType(t *testing.T) {
	const on = mtrrDefTypeE
	// OVMF-like: default WB, 0xc0000000-0xffffffff UC (1 GiB range).
	hole := VariableMTRR{Base: 0xc0000000 | MTRRUncacheable, Mask: 0xf_c000_0000 | mtrrMaskValid}
	wt := VariableMTRR{Base: 0x80000000 | MTRRWriteThrough, Mask: 0xf_8000_0000 | mtrrMaskValid}
	wb := VariableMTRR{Base: 0x0 | MTRRWriteBack, Mask: 0xf_0000_0000 | mtrrMaskValid} // 0-4 GiB WB
	for _, tc := range []struct {
		name string
		def  uint64
		vars []VariableMTRR
		pa   uint64
		want uint8
	}{
		{"disabled", MTRRWriteBack, []VariableMTRR{wb}, 0x1000_0000, MTRRUncacheable},
		{"default", on | MTRRWriteBack, nil, 0xfebd_0000, MTRRWriteBack},
		{"in the UC range", on | MTRRWriteBack, []VariableMTRR{hole}, 0xfebd_0000, MTRRUncacheable},
		{"below the UC range", on | MTRRWriteBack, []VariableMTRR{hole}, 0xbfff_f000, MTRRWriteBack},
		{"invalid range ignored", on | MTRRWriteBack, []VariableMTRR{{Base: hole.Base, Mask: hole.Mask &^ mtrrMaskValid}}, 0xfebd_0000, MTRRWriteBack},
		{"UC wins over WB", on | MTRRUncacheable, []VariableMTRR{wb, hole}, 0xc000_0000, MTRRUncacheable},
		{"UC wins in either order", on | MTRRUncacheable, []VariableMTRR{hole, wb}, 0xc000_0000, MTRRUncacheable},
		{"WT over WB", on | MTRRUncacheable, []VariableMTRR{wb, wt}, 0x8000_0000, MTRRWriteThrough},
		{"WB range, UC default", on | MTRRUncacheable, []VariableMTRR{wb}, 0x4000_0000, MTRRWriteBack},
		{"above the WB range", on | MTRRUncacheable, []VariableMTRR{wb}, 0x1_0000_0000, MTRRUncacheable},
	} {
		if got := MTRRType(tc.def, tc.vars, tc.pa); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, MTRRTypeName(got), MTRRTypeName(tc.want))
		}
	}
}
