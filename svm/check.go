package svm

import (
	"fmt"
	"strings"
)

// Reserved (must-be-zero) bits checked by VMRUN (APM vol. 2, 15.5.1).
const (
	cr0Reserved  = 0xffffffff00000000
	cr3Reserved  = 0xfff0000000000000 // bits 63:52
	cr4Reserved  = 0xffffffff00000000
	drReserved   = 0xffffffff00000000 // DR6/DR7 bits 63:32
	eferReserved = 0xffffffffffff0000 | 1<<9 | 0xfe
)

// Check returns every reason VMRUN would refuse v with VMEXIT_INVALID,
// following the consistency checks of APM vol. 2, 15.5.1 (and the event
// injection rules of 15.20). An empty result means the checks tamavisor
// knows of pass. Use it to explain a VMEXIT_INVALID, or before VMRUN.
func Check(v *VMCB) []string {
	var bad []string
	s, c := &v.State, &v.Control
	add := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }

	if s.EFER&EFERSVME == 0 {
		add("guest EFER.SVME is clear")
	}
	if s.CR0&CR0CD == 0 && s.CR0&CR0NW != 0 {
		add("CR0.NW set with CR0.CD clear")
	}
	if s.CR0&cr0Reserved != 0 {
		add("CR0 bits 63:32 not zero (CR0=%#x)", s.CR0)
	}
	if s.CR3&cr3Reserved != 0 {
		add("CR3 reserved bits 63:52 set (CR3=%#x)", s.CR3)
	}
	if s.CR4&cr4Reserved != 0 {
		add("CR4 reserved bits set (CR4=%#x)", s.CR4)
	}
	if s.DR6&drReserved != 0 {
		add("DR6 bits 63:32 not zero")
	}
	if s.DR7&drReserved != 0 {
		add("DR7 bits 63:32 not zero")
	}
	if s.EFER&eferReserved != 0 {
		add("EFER reserved bits set (EFER=%#x)", s.EFER)
	}
	if s.EFER&EFERLME != 0 && s.CR0&CR0PG != 0 {
		if s.CR4&CR4PAE == 0 {
			add("EFER.LME and CR0.PG set with CR4.PAE clear")
		}
		if s.CR0&CR0PE == 0 {
			add("EFER.LME and CR0.PG set with CR0.PE clear")
		}
		if s.CS.Attrib&SegL != 0 && s.CS.Attrib&SegDB != 0 {
			add("long mode with CS.L and CS.D both set")
		}
	}
	if c.InterceptMisc2&InterceptVMRUN == 0 {
		add("VMRUN intercept is clear")
	}
	if c.GuestASID == 0 {
		add("guest ASID is 0 (reserved for the host)")
	}
	if e, ok := DecodeEvent(c.EventInj); ok {
		switch e.Type {
		case EventIntr, EventNMI, EventSoftInt:
		case EventException:
			if e.Vector == VectorNMI || e.Vector >= 32 {
				add("EVENTINJ: exception with vector %d", e.Vector)
			}
		default:
			add("EVENTINJ: reserved event type %d", e.Type)
		}
	}
	return bad
}

// InvalidError is the error for a VMEXIT_INVALID, with the failed checks.
type InvalidError struct{ Reasons []string }

func (e *InvalidError) Error() string {
	if len(e.Reasons) == 0 {
		return "VMRUN refused the VMCB (VMEXIT_INVALID) for a reason tamavisor does not check"
	}
	return "VMRUN refused the VMCB (VMEXIT_INVALID): " + strings.Join(e.Reasons, "; ")
}
