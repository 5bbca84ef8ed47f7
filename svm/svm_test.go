package svm

import (
	"errors"
	"strings"
	"testing"
	"unsafe"
)

// TestVMCBLayout checks field offsets against APM vol. 2, appendix B,
// tables B-1 (control area) and B-2 (state save area, at 0x400).
func TestVMCBLayout(t *testing.T) {
	var v VMCB
	c, s := &v.Control, &v.State
	base := uintptr(unsafe.Pointer(&v))
	off := func(p unsafe.Pointer) uintptr { return uintptr(p) - base }
	cases := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"InterceptCR", off(unsafe.Pointer(&c.InterceptCR)), 0x000},
		{"InterceptDR", off(unsafe.Pointer(&c.InterceptDR)), 0x004},
		{"InterceptExceptions", off(unsafe.Pointer(&c.InterceptExceptions)), 0x008},
		{"InterceptMisc1", off(unsafe.Pointer(&c.InterceptMisc1)), 0x00c},
		{"InterceptMisc2", off(unsafe.Pointer(&c.InterceptMisc2)), 0x010},
		{"InterceptMisc3", off(unsafe.Pointer(&c.InterceptMisc3)), 0x014},
		{"PauseFilterThresh", off(unsafe.Pointer(&c.PauseFilterThresh)), 0x03c},
		{"PauseFilterCount", off(unsafe.Pointer(&c.PauseFilterCount)), 0x03e},
		{"IOPMBasePA", off(unsafe.Pointer(&c.IOPMBasePA)), 0x040},
		{"MSRPMBasePA", off(unsafe.Pointer(&c.MSRPMBasePA)), 0x048},
		{"TSCOffset", off(unsafe.Pointer(&c.TSCOffset)), 0x050},
		{"GuestASID", off(unsafe.Pointer(&c.GuestASID)), 0x058},
		{"TLBControl", off(unsafe.Pointer(&c.TLBControl)), 0x05c},
		{"VIntr", off(unsafe.Pointer(&c.VIntr)), 0x060},
		{"InterruptShadow", off(unsafe.Pointer(&c.InterruptShadow)), 0x068},
		{"ExitCode", off(unsafe.Pointer(&c.ExitCode)), 0x070},
		{"ExitInfo1", off(unsafe.Pointer(&c.ExitInfo1)), 0x078},
		{"ExitInfo2", off(unsafe.Pointer(&c.ExitInfo2)), 0x080},
		{"ExitIntInfo", off(unsafe.Pointer(&c.ExitIntInfo)), 0x088},
		{"NPEnable", off(unsafe.Pointer(&c.NPEnable)), 0x090},
		{"AVICAPICBar", off(unsafe.Pointer(&c.AVICAPICBar)), 0x098},
		{"GHCBPA", off(unsafe.Pointer(&c.GHCBPA)), 0x0a0},
		{"EventInj", off(unsafe.Pointer(&c.EventInj)), 0x0a8},
		{"NCR3", off(unsafe.Pointer(&c.NCR3)), 0x0b0},
		{"LBRVirtEnable", off(unsafe.Pointer(&c.LBRVirtEnable)), 0x0b8},
		{"CleanBits", off(unsafe.Pointer(&c.CleanBits)), 0x0c0},
		{"NextRIP", off(unsafe.Pointer(&c.NextRIP)), 0x0c8},
		{"InsnLen", off(unsafe.Pointer(&c.InsnLen)), 0x0d0},
		{"InsnBytes", off(unsafe.Pointer(&c.InsnBytes)), 0x0d1},
		{"ES", off(unsafe.Pointer(&s.ES)), 0x400},
		{"CS", off(unsafe.Pointer(&s.CS)), 0x410},
		{"SS", off(unsafe.Pointer(&s.SS)), 0x420},
		{"DS", off(unsafe.Pointer(&s.DS)), 0x430},
		{"FS", off(unsafe.Pointer(&s.FS)), 0x440},
		{"GS", off(unsafe.Pointer(&s.GS)), 0x450},
		{"GDTR", off(unsafe.Pointer(&s.GDTR)), 0x460},
		{"LDTR", off(unsafe.Pointer(&s.LDTR)), 0x470},
		{"IDTR", off(unsafe.Pointer(&s.IDTR)), 0x480},
		{"TR", off(unsafe.Pointer(&s.TR)), 0x490},
		{"CPL", off(unsafe.Pointer(&s.CPL)), 0x4cb},
		{"EFER", off(unsafe.Pointer(&s.EFER)), 0x4d0},
		{"CR4", off(unsafe.Pointer(&s.CR4)), 0x548},
		{"CR3", off(unsafe.Pointer(&s.CR3)), 0x550},
		{"CR0", off(unsafe.Pointer(&s.CR0)), 0x558},
		{"DR7", off(unsafe.Pointer(&s.DR7)), 0x560},
		{"DR6", off(unsafe.Pointer(&s.DR6)), 0x568},
		{"RFLAGS", off(unsafe.Pointer(&s.RFLAGS)), 0x570},
		{"RIP", off(unsafe.Pointer(&s.RIP)), 0x578},
		{"RSP", off(unsafe.Pointer(&s.RSP)), 0x5d8},
		{"RAX", off(unsafe.Pointer(&s.RAX)), 0x5f8},
		{"STAR", off(unsafe.Pointer(&s.STAR)), 0x600},
		{"LSTAR", off(unsafe.Pointer(&s.LSTAR)), 0x608},
		{"CSTAR", off(unsafe.Pointer(&s.CSTAR)), 0x610},
		{"SFMASK", off(unsafe.Pointer(&s.SFMASK)), 0x618},
		{"KernelGSBase", off(unsafe.Pointer(&s.KernelGSBase)), 0x620},
		{"SysenterCS", off(unsafe.Pointer(&s.SysenterCS)), 0x628},
		{"SysenterESP", off(unsafe.Pointer(&s.SysenterESP)), 0x630},
		{"SysenterEIP", off(unsafe.Pointer(&s.SysenterEIP)), 0x638},
		{"CR2", off(unsafe.Pointer(&s.CR2)), 0x640},
		{"GPAT", off(unsafe.Pointer(&s.GPAT)), 0x668},
		{"DBGCTL", off(unsafe.Pointer(&s.DBGCTL)), 0x670},
		{"LastExcpTo", off(unsafe.Pointer(&s.LastExcpTo)), 0x690},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s at %#x, APM says %#x", tc.name, tc.got, tc.want)
		}
	}
	if sz := unsafe.Sizeof(v); sz != PageSize {
		t.Errorf("VMCB is %d bytes, want one page", sz)
	}
	if sz := unsafe.Sizeof(Segment{}); sz != 16 {
		t.Errorf("Segment is %d bytes, want 16", sz)
	}
}

func TestExitCodeNames(t *testing.T) {
	for code, want := range map[ExitCode]string{
		ExitCPUID: "CPUID", ExitNPF: "NPF", ExitCR0Write + 3: "CR3_WRITE",
		ExitExcp0 + 13: "EXCP13", 0xffffffffffffffff: "INVALID", 0x00000000ffffffff: "INVALID",
		0x3ff: "0x3ff",
	} {
		if got := code.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint64(code), got, want)
		}
	}
	if ExitCode(0xfffffffe).Invalid() {
		t.Error("0xfffffffe reported as VMEXIT_INVALID")
	}
}

func TestDecodeIOIO(t *testing.T) {
	// OUT DX, AL to 0x3f8: type 0, size 8.
	io := DecodeIOIO(0x3f8<<16 | IOIOSize8)
	if io.Port != 0x3f8 || io.In || io.Size != 1 || io.String || io.Rep {
		t.Errorf("out 0x3f8: %+v", io)
	}
	io = DecodeIOIO(0x510<<16 | IOIOSize32 | IOIOTypeIn | IOIOString | IOIORep)
	if io.Port != 0x510 || !io.In || io.Size != 4 || !io.String || !io.Rep {
		t.Errorf("rep insd 0x510: %+v", io)
	}
	if DecodeIOIO(IOIOSize16).Size != 2 {
		t.Error("size 16")
	}
}

func TestEventEncoding(t *testing.T) {
	gp := Exception(VectorGP, 0)
	if got, want := gp.Encode(), uint64(0x80000b0d); got != want {
		t.Errorf("#GP(0) = %#x, want %#x", got, want)
	}
	ud := Exception(VectorUD, 0)
	if got, want := ud.Encode(), uint64(0x80000306); got != want {
		t.Errorf("#UD = %#x, want %#x", got, want)
	}
	pf := Exception(VectorPF, 2)
	e, ok := DecodeEvent(pf.Encode())
	if !ok || e != pf {
		t.Errorf("round trip %+v -> %+v %v", pf, e, ok)
	}
	if _, ok := DecodeEvent(0x30d); ok {
		t.Error("event without valid bit decoded as valid")
	}
}

func fakeCPUID(ecx81, edxA uint32) CPUIDFunc {
	return func(leaf, _ uint32) (a, b, c, d uint32) {
		switch leaf {
		case 0x80000000:
			return 0x80000021, 0, 0, 0
		case CPUIDExtFeatures:
			return 0, 0, ecx81, 0
		case CPUIDSVMFeatures:
			return 1, 16, 0, edxA
		}
		return
	}
}

func TestDetect(t *testing.T) {
	vmcrRead := false
	readVMCR := func() uint64 { vmcrRead = true; return 0 }
	if _, err := Detect(fakeCPUID(0, FeatNP), readVMCR); !errors.Is(err, ErrNoSVM) {
		t.Errorf("no SVM bit: %v", err)
	}
	if vmcrRead {
		t.Error("VM_CR read on a CPU without SVM")
	}
	if _, err := Detect(fakeCPUID(ExtFeaturesSVM, FeatNP), func() uint64 { return VMCRSVMDis }); !errors.Is(err, ErrSVMDisabled) {
		t.Errorf("SVMDIS: %v", err)
	}
	if _, err := Detect(fakeCPUID(ExtFeaturesSVM, 0), readVMCR); !errors.Is(err, ErrNoNPT) {
		t.Errorf("no NPT: %v", err)
	}
	// QEMU TCG -cpu EPYC,+svm: EDX = 0x1.
	f, err := Detect(fakeCPUID(ExtFeaturesSVM, 0x1), readVMCR)
	if err != nil || f.NRIP() || f.DecodeAssists() || f.NASID != 16 {
		t.Errorf("EPYC,+svm: %v %v", f, err)
	}
	// QEMU TCG -cpu max: 0x10010001; real Zen: NRIPS and decode assists.
	f, _ = Detect(fakeCPUID(ExtFeaturesSVM, FeatNP|FeatNRIPS|FeatDecodeAssists), readVMCR)
	if !f.NRIP() || !f.DecodeAssists() || !strings.Contains(f.String(), "NRIPS") {
		t.Errorf("zen: %v", f)
	}
}

func TestIOPM(t *testing.T) {
	m := NewIOPM(make([]byte, IOPMSize))
	if !m.Intercepted(0x80, 1) {
		t.Error("new map must intercept everything")
	}
	m.Set(0x80, 1, false)
	if m.Intercepted(0x80, 1) || !m.Intercepted(0x81, 1) || !m.Intercepted(0x7f, 1) {
		t.Error("pass-through of 0x80 only")
	}
	if !m.Intercepted(0x80, 2) {
		t.Error("a word access touching an intercepted port must exit")
	}
	m.Set(0xfffe, 10, false) // clipped at 0xffff, no panic
	if m.Intercepted(0xffff, 1) {
		t.Error("0xffff not cleared")
	}
}

func TestMSRPM(t *testing.T) {
	m := NewMSRPM(make([]byte, MSRPMSize))
	for _, tc := range []struct {
		msr      uint32
		idx, bit int
	}{
		{0x00000000, 0x0000, 0}, {0x00000010, 0x0004, 0}, {0x00000277, 0x9d, 6},
		{0xc0000080, 0x0820, 0}, {0xc0000101, 0x0840, 2}, {0xc0010114, 0x1045, 0},
	} {
		if err := m.Set(tc.msr, false, false); err != nil {
			t.Fatal(err)
		}
		if m[tc.idx]&(3<<tc.bit) != 0 {
			t.Errorf("MSR %#x: bits not cleared at byte %#x bit %d", tc.msr, tc.idx, tc.bit)
		}
		if m.Intercepted(tc.msr, false) || m.Intercepted(tc.msr, true) {
			t.Errorf("MSR %#x still intercepted", tc.msr)
		}
		m.Set(tc.msr, false, true)
		if m.Intercepted(tc.msr, false) || !m.Intercepted(tc.msr, true) {
			t.Errorf("MSR %#x write-only intercept wrong", tc.msr)
		}
	}
	if err := m.Set(0x40000000, false, false); err == nil || !m.Intercepted(0x40000000, false) {
		t.Error("MSR outside the map ranges must be refused and always intercepted")
	}
}

func TestASIDs(t *testing.T) {
	a := NewASIDs(3)
	x, _ := a.Alloc()
	y, _ := a.Alloc()
	if x != 1 || y != 2 {
		t.Fatalf("got %d %d", x, y)
	}
	if _, err := a.Alloc(); !errors.Is(err, ErrNoASID) {
		t.Error("expected exhaustion")
	}
	a.Free(1)
	if z, _ := a.Alloc(); z != 1 {
		t.Errorf("reuse: %d", z)
	}
}

func validVMCB() *VMCB {
	v := new(VMCB)
	v.Control.InterceptMisc2 = InterceptVMRUN
	v.Control.GuestASID = 1
	v.State.EFER = EFERSVME
	v.State.CR0 = CR0ET
	return v
}

func TestCheck(t *testing.T) {
	if r := Check(validVMCB()); len(r) != 0 {
		t.Fatalf("valid VMCB refused: %v", r)
	}
	for name, tc := range map[string]struct {
		mod  func(v *VMCB)
		want string
	}{
		"svme":  {func(v *VMCB) { v.State.EFER = 0 }, "SVME"},
		"nw":    {func(v *VMCB) { v.State.CR0 |= CR0NW }, "CR0.NW"},
		"asid":  {func(v *VMCB) { v.Control.GuestASID = 0 }, "ASID"},
		"vmrun": {func(v *VMCB) { v.Control.InterceptMisc2 = 0 }, "VMRUN intercept"},
		"nmi":   {func(v *VMCB) { v.Control.EventInj = Exception(VectorNMI, 0).Encode() }, "vector 2"},
		"pae":   {func(v *VMCB) { v.State.EFER |= EFERLME; v.State.CR0 |= CR0PG | CR0PE }, "CR4.PAE"},
		"efer":  {func(v *VMCB) { v.State.EFER |= 1 << 20 }, "EFER 0x101000: reserved bits 0x100000"},
		"cr3":   {func(v *VMCB) { v.State.CR3 = 1 << 60 }, "CR3"},
		"csl+d": {func(v *VMCB) {
			v.State.EFER |= EFERLME
			v.State.CR0 |= CR0PG | CR0PE
			v.State.CR4 = CR4PAE
			v.State.CS.Attrib = SegL | SegDB
		}, "CS.L"},
	} {
		v := validVMCB()
		tc.mod(v)
		r := strings.Join(Check(v), "; ")
		if !strings.Contains(r, tc.want) {
			t.Errorf("%s: %q lacks %q", name, r, tc.want)
		}
	}
	err := &InvalidError{Reasons: Check(func() *VMCB { v := validVMCB(); v.Control.GuestASID = 0; return v }())}
	if !strings.Contains(err.Error(), "VMEXIT_INVALID") || !strings.Contains(err.Error(), "ASID") {
		t.Error(err)
	}
}

func TestRegsLayout(t *testing.T) {
	var r Regs
	if o := unsafe.Offsetof(r.RBX); o != regsRBX {
		t.Errorf("RBX at %d", o)
	}
	if o := unsafe.Offsetof(r.RBP); o != regsRBP {
		t.Errorf("RBP at %d", o)
	}
	if o := unsafe.Offsetof(r.R8); o != regsR8 {
		t.Errorf("R8 at %d", o)
	}
	if o := unsafe.Offsetof(r.R15); o != regsR15 {
		t.Errorf("R15 at %d", o)
	}
	r = Regs{RCX: 1, RDX: 2, RBX: 3, RBP: 5, RSI: 6, RDI: 7, R8: 8, R15: 15}
	for n, want := range map[int]uint64{0: 100, 1: 1, 2: 2, 3: 3, 4: 104, 5: 5, 6: 6, 7: 7, 8: 8, 15: 15} {
		if got := r.GPR(n, 100, 104); got != want {
			t.Errorf("GPR(%d)=%d want %d", n, got, want)
		}
	}
	a := FXAreaAligned(make([]byte, 600))
	if uintptr(unsafe.Pointer(a))%16 != 0 {
		t.Error("FXArea not aligned")
	}
}
