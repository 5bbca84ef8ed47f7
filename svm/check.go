package svm

import (
	"fmt"
	"strings"
)

// MaxPhysAddrBits is the architectural limit of the physical address width
// (MAXPHYADDR, CPUID Fn8000_0008 EAX[7:0]; APM vol. 2, 5.1): 52 bits.
// Check assumes it when the CPU's own width is not known, so it never
// reports an address a CPU could accept.
const MaxPhysAddrBits = 52

// CR4Valid are the CR4 bits the AMD64 architecture defines (APM vol. 2,
// 3.1.3); every other bit is reserved, must be zero, and fails VMRUN. Bits
// 13 and 14 (VMXE, SMXE) are Intel's and reserved on AMD. Which of these a
// given CPU implements is a matter of CPUID: VMRUN also refuses a defined
// bit the CPU lacks, which this mask cannot tell.
const CR4Valid = CR4VME | CR4PVI | CR4TSD | CR4DE | CR4PSE | CR4PAE | CR4MCE |
	CR4PGE | CR4PCE | CR4OSFXSR | CR4OSXMMEXCPT | CR4UMIP | CR4LA57 |
	CR4FSGSBASE | CR4PCIDE | CR4OSXSAVE | CR4SMEP | CR4SMAP | CR4PKE | CR4CET

// Reserved (must-be-zero) bits checked by VMRUN (APM vol. 2, 15.5.1).
const (
	cr0Reserved  = 0xffffffff00000000 // CR0 bits 63:32
	cr3Reserved  = 0xfff0000000000000 // CR3 bits 63:52, in every paging mode
	drReserved   = 0xffffffff00000000 // DR6/DR7 bits 63:32
	eferReserved = 0xffffffffffff0000 | 1<<9 | 0xfe
	sCETReserved = 0xf << 6 // S_CET bits 9:6
)

// Check returns every reason VMRUN would refuse v with VMEXIT_INVALID,
// following the consistency checks of APM vol. 2, 15.5.1 "Canonicalization
// and Consistency Checks", the G_PAT check of 15.25.4 (nested paging) and
// the event injection rules of 15.20, with the conservative physical
// address width MaxPhysAddrBits. An empty result means the checks tamavisor
// knows of pass. Use it to explain a VMEXIT_INVALID, or before VMRUN.
// Each reason names the field and its value.
func Check(v *VMCB) []string { return CheckPhys(v, MaxPhysAddrBits) }

// CheckPhys is Check for a CPU whose physical addresses have physBits bits
// (MAXPHYADDR); 0 or more than MaxPhysAddrBits means MaxPhysAddrBits.
//
// The APM's list, in its order:
//   - EFER.SVME is zero;
//   - CR0.CD is zero and CR0.NW is set;
//   - CR0[63:32] are not zero;
//   - any MBZ bit of CR3 is set (bits 63:52; in long mode, any bit at or
//     above MAXPHYADDR);
//   - any MBZ bit of CR4 is set (outside CR4Valid);
//   - DR6[63:32] or DR7[63:32] are not zero;
//   - any MBZ bit of EFER is set;
//   - EFER.LME or EFER.LMA set on a CPU without long mode (never: tamavisor
//     runs in long mode);
//   - EFER.LME and CR0.PG set with CR4.PAE clear, or with CR0.PE clear;
//   - EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D all set;
//   - the VMRUN intercept is clear;
//   - the MSR or I/O permission map extends to or beyond MAXPHYADDR;
//   - illegal event injection (15.20): a reserved event type, or an
//     exception whose vector is NMI, reserved or 32 and above;
//   - the ASID is zero;
//   - CR4.CET set with CR0.WP clear, or reserved S_CET bits set;
//   - with nested paging, a G_PAT entry with a reserved memory type.
func CheckPhys(v *VMCB, physBits uint) []string {
	if physBits == 0 || physBits > MaxPhysAddrBits {
		physBits = MaxPhysAddrBits
	}
	var bad []string
	s, c := &v.State, &v.Control
	add := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	longMode := s.EFER&EFERLME != 0 && s.CR0&CR0PG != 0

	if s.EFER&EFERSVME == 0 {
		add("EFER %#x: EFER.SVME is clear", s.EFER)
	}
	if s.CR0&CR0CD == 0 && s.CR0&CR0NW != 0 {
		add("CR0 %#x: CR0.NW set with CR0.CD clear", s.CR0)
	}
	if s.CR0&cr0Reserved != 0 {
		add("CR0 %#x: bits 63:32 not zero", s.CR0)
	}
	if longMode && s.CR3>>physBits != 0 {
		add("CR3 %#x: bits %d and above set in long mode (MAXPHYADDR %d)", s.CR3, physBits, physBits)
	} else if s.CR3&cr3Reserved != 0 {
		add("CR3 %#x: reserved bits 63:52 set", s.CR3)
	}
	if r := s.CR4 &^ CR4Valid; r != 0 {
		add("CR4 %#x: reserved bits %#x set", s.CR4, r)
	}
	if s.DR6&drReserved != 0 {
		add("DR6 %#x: bits 63:32 not zero", s.DR6)
	}
	if s.DR7&drReserved != 0 {
		add("DR7 %#x: bits 63:32 not zero", s.DR7)
	}
	if r := s.EFER & eferReserved; r != 0 {
		add("EFER %#x: reserved bits %#x set", s.EFER, r)
	}
	if longMode {
		if s.CR4&CR4PAE == 0 {
			add("CR4 %#x: EFER.LME and CR0.PG set with CR4.PAE clear", s.CR4)
		}
		if s.CR0&CR0PE == 0 {
			add("CR0 %#x: EFER.LME and CR0.PG set with CR0.PE clear", s.CR0)
		}
		if s.CR4&CR4PAE != 0 && s.CS.Attrib&SegL != 0 && s.CS.Attrib&SegDB != 0 {
			add("CS attributes %#x: CS.L and CS.D both set in long mode", s.CS.Attrib)
		}
	}
	if c.InterceptMisc2&InterceptVMRUN == 0 {
		add("VMRUN intercept is clear (InterceptMisc2 %#x)", c.InterceptMisc2)
	}
	if !mapBelow(c.IOPMBasePA, IOPMSize, physBits) {
		add("IOPM_BASE_PA %#x: the I/O permission map reaches MAXPHYADDR (%d bits)", c.IOPMBasePA, physBits)
	}
	if !mapBelow(c.MSRPMBasePA, MSRPMSize, physBits) {
		add("MSRPM_BASE_PA %#x: the MSR permission map reaches MAXPHYADDR (%d bits)", c.MSRPMBasePA, physBits)
	}
	if msg := checkEventInj(c.EventInj); msg != "" {
		add("%s", msg)
	}
	if c.GuestASID == 0 {
		add("guest ASID is 0 (reserved for the host)")
	}
	if s.CR4&CR4CET != 0 && s.CR0&CR0WP == 0 {
		add("CR4 %#x: CR4.CET set with CR0.WP clear (CR0 %#x)", s.CR4, s.CR0)
	}
	if s.SCET&sCETReserved != 0 {
		add("S_CET %#x: reserved bits 9:6 set", s.SCET)
	}
	if c.NPEnable&NPEnableNP != 0 {
		if i, t, ok := patBadEntry(s.GPAT); !ok {
			add("G_PAT %#x: entry %d has reserved memory type %d (nested paging on)", s.GPAT, i, t)
		}
	}
	return bad
}

// mapBelow reports whether a permission map of size bytes at base (bits
// 11:0 ignored, APM vol. 2, 15.10.1) lies entirely below 2^physBits.
func mapBelow(base uint64, size uint64, physBits uint) bool {
	base &^= PageSize - 1
	last := base + size - 1
	return last >= base && last>>physBits == 0
}

// checkEventInj returns why VMRUN would refuse EVENTINJ e (APM vol. 2,
// 15.20), or "". Only the valid bit, the type and, for exceptions, the
// vector are checked by the CPU.
func checkEventInj(e uint64) string {
	ev, ok := DecodeEvent(e)
	if !ok {
		return ""
	}
	switch ev.Type {
	case EventIntr, EventNMI, EventSoftInt:
	case EventException:
		switch {
		case ev.Vector == VectorNMI:
			return fmt.Sprintf("EVENTINJ %#x: exception with vector 2 (NMI is its own event type)", e)
		case !exceptionVector(ev.Vector):
			return fmt.Sprintf("EVENTINJ %#x: exception with vector %d, which is not an exception", e, ev.Vector)
		}
	default:
		return fmt.Sprintf("EVENTINJ %#x: reserved event type %d", e, ev.Type)
	}
	return ""
}

// exceptionVector reports whether v is a defined exception vector (APM
// vol. 2, table 8-1), NMI included: 0-8, 10-14, 16-19, 21 (#CP), 28 (#HV),
// 29 (#VC) and 30 (#SX). Vectors 9 (the 386's coprocessor segment
// overrun), 15, 20, 22-27 and 31 are reserved, 32 and above are not
// exceptions. VMRUN refuses an exception event with a vector that is not an
// exception; KVM's nested VMRUN checks read the APM the same way.
func exceptionVector(v uint8) bool {
	const defined uint32 = 1<<9 - 1 | // 0-8
		0x1f<<10 | // 10-14
		0xf<<16 | // 16-19
		1<<21 | 7<<28 // #CP; #HV, #VC, #SX
	return v < 32 && defined&(1<<v) != 0 // v < 32: the shift stays in range
}

// InvalidError is the error for a VMEXIT_INVALID, with the failed checks.
type InvalidError struct{ Reasons []string }

func (e *InvalidError) Error() string {
	if len(e.Reasons) == 0 {
		return "VMRUN refused the VMCB (VMEXIT_INVALID) for a reason tamavisor does not check"
	}
	return "VMRUN refused the VMCB (VMEXIT_INVALID): " + strings.Join(e.Reasons, "; ")
}
