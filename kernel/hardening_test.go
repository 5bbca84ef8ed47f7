package kernel

import (
	"encoding/binary"
	"strings"
	"testing"

	"tamavisor/snapshot"
	"tamavisor/svm"
)

// Behaviour found by review: each case here failed before its fix.

// TestHypercallFromUserMode: the privilege check reads the VMCB CPL, not
// SS.DPL. After SYSRET on AMD, user code runs at CPL 3 with SS.DPL 0; a
// kernel may run with a DPL-3 SS selector loaded yet at CPL 0.
func TestHypercallFromUserMode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cpl     uint8
		ssDPL   uint16
		allowed bool
	}{
		{"CPL 3, SS.DPL 3", 3, 3, false},
		{"CPL 3, SS.DPL 0 (after SYSRET)", 3, 0, false},
		{"CPL 1", 1, 1, false},
		{"CPL 0, SS.DPL 3", 0, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, featNRIP)
			e.boot(Mode64)
			exit := e.insnExit(svm.ExitVMMCALL, encVMMCALL, func(v *svm.VMCB, r *svm.Regs) {
				v.State.CPL = tc.cpl
				v.State.SS.Attrib = v.State.SS.Attrib&^(3<<svm.SegDPLShift) | tc.ssDPL<<svm.SegDPLShift
				v.State.RAX = HCExit
			})
			if tc.allowed {
				if stop := e.stopped(exit); stop.Kind != StopExited {
					t.Errorf("EXIT from CPL 0 did not exit the VM: %v", stop)
				}
				return
			}
			if got := last(e.resume(exit)).vmcb.State.RAX; got != errno(EPERM) {
				t.Errorf("EXIT from CPL %d returned %#x, want EPERM and the VM running", tc.cpl, got)
			}
		})
	}
}

func TestHypercall32BitArguments(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode32)
	es := e.resume(e.insnExit(svm.ExitVMMCALL, encVMMCALL, func(v *svm.VMCB, r *svm.Regs) {
		v.State.RAX = 0xdead_0000_0000_0000 | HCVersion // stale upper half
	}))
	if got := last(es).vmcb.State.RAX; got != ABIVersion {
		t.Errorf("VERSION with a stale upper RAX in 32-bit mode: %#x", got)
	}
}

func TestBenchReportsBounded(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	var steps []step
	for i := 0; i < maxBenchReports+5; i++ {
		id := uint64(i)
		steps = append(steps, e.insnExit(svm.ExitVMMCALL, encVMMCALL, func(v *svm.VMCB, r *svm.Regs) {
			v.State.RAX, r.RBX, r.RCX = HCBenchReport, id, 1
		}))
	}
	es := e.resume(steps...)
	if len(vm.BenchReports) != maxBenchReports {
		t.Errorf("%d reports kept, want the cap %d", len(vm.BenchReports), maxBenchReports)
	}
	if got := last(es).vmcb.State.RAX; got != errno(EBUSY) {
		t.Errorf("report past the cap returned %#x, want EBUSY", got)
	}
}

func TestRDTSCPAndXSETBV(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	vm.VCPU.msrs.TSCAux = 7
	vm.VCPU.vmcb.Control.TSCOffset = 100
	es := e.resume(e.insnExit(svm.ExitRDTSCP, []byte{0x0f, 0x01, 0xf9}, nil),
		e.insnExit(svm.ExitXSETBV, []byte{0x0f, 0x01, 0xd1}, nil))
	r := es[1]
	if tsc := r.regs.RDX<<32 | r.vmcb.State.RAX; tsc != e.tsc+100 || r.regs.RCX != 7 {
		t.Errorf("RDTSCP: TSC %d (want %d), TSC_AUX %d (want 7)", tsc, e.tsc+100, r.regs.RCX)
	}
	if ev, ok := svm.DecodeEvent(last(es).vmcb.Control.EventInj); !ok || ev.Vector != svm.VectorUD {
		t.Errorf("XSETBV: event %+v %v, want #UD", ev, ok)
	}
}

func TestEFERLMEWithPaging(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode32)
	vm.VCPU.vmcb.State.CR0 |= svm.CR0PG // 32-bit paging, no PAE
	es := e.resume(e.insnExit(svm.ExitMSR, encWRMSR, func(v *svm.VMCB, r *svm.Regs) {
		v.Control.ExitInfo1 = 1
		r.RCX, v.State.RAX, r.RDX = msrEFER, svm.EFERLME, 0
	}))
	if ev, ok := svm.DecodeEvent(last(es).vmcb.Control.EventInj); !ok || ev.Vector != svm.VectorGP {
		t.Errorf("setting EFER.LME with paging on: event %+v %v, want #GP", ev, ok)
	}
	if last(es).vmcb.State.EFER&svm.EFERLME != 0 {
		t.Error("EFER.LME was set")
	}
}

// TestSnapshotHypercallBeforeMonitor: an escape typed while a SNAPSHOT
// hypercall completes neither loses the save nor leaves RAX unset.
func TestSnapshotHypercallBeforeMonitor(t *testing.T) {
	e := newEnv(t, featNRIP)
	dev := snapshot.NewMemDevice(32<<20, 512)
	st := e.withStore(dev)
	e.boot(Mode16)
	e.input = []byte("\x1dcontinue\n")
	es := e.resume(snapshotStep(e, 0))
	if got := last(es).vmcb.State.RAX; got != 0 {
		t.Errorf("SNAPSHOT returned %#x, want 0", got)
	}
	if !strings.Contains(e.console.String(), "back to the guest console") {
		t.Error("the monitor did not run after the save")
	}
	vm, _, err := Restore(e.plat, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Destroy()
	if vm.VCPU.vmcb.State.RAX != resumedRAX {
		t.Errorf("resumed guest sees RAX %#x, want 1", vm.VCPU.vmcb.State.RAX)
	}
}

// TestRestoreRefusesHostileVCPU: saved state that would fault in the
// hypervisor (MXCSR) or switch on unmanaged features (AVIC, V_IRQ), and
// names that cannot be printed, are refused.
func TestRestoreRefusesHostileVCPU(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(st *vcpuState, cfg *vmConfig)
		want string
	}{
		"mxcsr": {func(st *vcpuState, _ *vmConfig) { binary.LittleEndian.PutUint32(st.FX[fxMXCSR:], 0xffff1f80) }, "MXCSR"},
		"avic":  {func(st *vcpuState, _ *vmConfig) { st.VIntr = 1 << 31 }, "virtual interrupt"},
		"virq":  {func(st *vcpuState, _ *vmConfig) { st.VIntr = svm.VIntrIRQ | 0x30<<svm.VIntrVectorShift }, "virtual interrupt"},
		"name":  {func(_ *vcpuState, cfg *vmConfig) { cfg.Name = "evil\x1b[2J" }, "VM name"},
		// Architectural state VMRUN would catch late or never (hole 7).
		"rflags":   {func(st *vcpuState, _ *vmConfig) { st.Save.RFLAGS = ^uint64(0) }, "RFLAGS"},
		"cpl":      {func(st *vcpuState, _ *vmConfig) { st.Save.CPL = 7 }, "CPL 7"},
		"lma":      {func(st *vcpuState, _ *vmConfig) { st.Save.EFER |= svm.EFERLMA }, "LMA"},
		"cr4":      {func(st *vcpuState, _ *vmConfig) { st.Save.CR4 |= 1 << 40 }, "CR4"},
		"dr7":      {func(st *vcpuState, _ *vmConfig) { st.Save.DR7 |= 1 << 40 }, "DR7"},
		"pat":      {func(st *vcpuState, _ *vmConfig) { st.Save.GPAT = 0x0202020202020202 }, "PAT"},
		"cs-attr":  {func(st *vcpuState, _ *vmConfig) { st.Save.CR0 |= svm.CR0PE; st.Save.CS.Attrib = 0x093 }, "CS"},
		"efer-bad": {func(st *vcpuState, _ *vmConfig) { st.Save.EFER |= 1 << 63 }, "EFER"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, featNRIP)
			vm := e.boot(Mode16)
			st := e.withStore(snapshot.NewMemDevice(32<<20, 512))
			vs := vm.VCPU.capture()
			cfg := vmConfig{Name: vm.Name, MemSize: vm.Mem.Size}
			tc.mod(vs, &cfg)
			err := craft(st, vm, cfg, vs)
			if err != nil {
				t.Fatal(err)
			}
			free := e.pool.FreeBytes()
			if _, _, err := Restore(e.plat, st, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("restore: %v, want a refusal naming %q", err, tc.want)
			}
			if e.pool.FreeBytes() != free {
				t.Error("refused restore leaked memory")
			}
		})
	}
}

// TestBenignExceptionsIntercepted: #DB and #AC are intercepted (a guest
// could otherwise loop forever inside the CPU delivering them) and
// reflected into the guest with the right fault/trap behaviour.
func TestBenignExceptionsIntercepted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		vector    uint8
		dr6, dr7  uint64
		wantRF    bool
		wantError bool
	}{
		{"#AC", svm.VectorAC, 0, 0, true, true},
		{"#DB instruction breakpoint 0 (fault)", svm.VectorDB, 1 << 0, 0, true, false},
		{"#DB single step (trap)", svm.VectorDB, 1 << 14, 0, false, false},
		{"#DB instruction breakpoint 2 (fault)", svm.VectorDB, 1 << 2, 0, true, false},
		{"#DB data breakpoint 1 (trap)", svm.VectorDB, 1 << 1, 1 << (16 + 4), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, featNRIP)
			vm := e.boot(Mode64)
			if got := vm.VCPU.vmcb.Control.InterceptExceptions; got&(1<<svm.VectorDB) == 0 || got&(1<<svm.VectorAC) == 0 {
				t.Fatalf("exception intercepts %#x lack #DB or #AC", got)
			}
			es := e.resume(func(v *svm.VMCB, r *svm.Regs) {
				v.State.RFLAGS &^= svm.RFLAGSRF
				v.State.DR6, v.State.DR7 = tc.dr6, tc.dr7
				v.Control.ExitCode = uint64(svm.ExitExcp0) + uint64(tc.vector)
			}, func(v *svm.VMCB, r *svm.Regs) {
				v.Control.ExitCode = uint64(svm.ExitCPUID) // resumes after the reflection
				v.Control.NextRIP = v.State.RIP
			})
			got, ok := svm.DecodeEvent(es[1].vmcb.Control.EventInj)
			if !ok || got.Type != svm.EventException || got.Vector != tc.vector || got.HasError != tc.wantError {
				t.Errorf("injected %+v, want exception %d (error code %v)", got, tc.vector, tc.wantError)
			}
			if rf := es[1].vmcb.State.RFLAGS&svm.RFLAGSRF != 0; rf != tc.wantRF {
				t.Errorf("RFLAGS.RF %v, want %v", rf, tc.wantRF)
			}
		})
	}
}

// TestXSETBVAndCPUIDLeafD: with the host managing x87/SSE/AVX, the guest
// sees XSAVE, AVX and AVX2, leaf 0xD describes exactly those components,
// OSXSAVE and the current XSAVE size follow the guest, and XSETBV accepts
// only valid values from CPL 0 with CR4.OSXSAVE.
func TestXSETBVAndCPUIDLeafD(t *testing.T) {
	host := func(leaf, sub uint32) (uint32, uint32, uint32, uint32) {
		switch {
		case leaf == 0:
			return 0xd, 1, 2, 3
		case leaf == 1:
			return 0xf00, 0, f1ecxXSAVE | f1ecxAVX | f1ecxOSXSAVE, 0
		case leaf == 7 && sub == 0:
			return 0, f7ebxAVX2 | 1<<16, 0, 0 // AVX2 and AVX-512F
		case leaf == 0xd && sub == 0:
			return 0xe7, 2696, 2696, 0 // x87 SSE AVX + AVX-512 components
		case leaf == 0xd && sub == 1:
			return 0xf, 0, 0, 0 // XSAVEOPT XSAVEC XGETBV1 XSAVES
		case leaf == 0xd && sub == 2:
			return 256, 576, 0, 0
		}
		return 0, 0, 0, 0
	}
	m := NewCPUIDModelXSAVE(host, svm.XCR0Guest)
	if _, _, c, _ := m.Lookup(1, 0); c&(f1ecxXSAVE|f1ecxAVX) != f1ecxXSAVE|f1ecxAVX || c&f1ecxOSXSAVE != 0 {
		t.Errorf("leaf 1 ECX %#x: want XSAVE and AVX, OSXSAVE left to the guest", c)
	}
	if _, b, _, _ := m.Lookup(7, 0); b != f7ebxAVX2 {
		t.Errorf("leaf 7 EBX %#x: want AVX2 only", b)
	}
	for _, c := range []struct{ sub, a, b, cc, d uint32 }{
		{0, 7, 832, 832, 0}, {1, 1, 0, 0, 0}, {2, 256, 576, 0, 0}, {3, 0, 0, 0, 0},
	} {
		if a, b, cc, d := m.Lookup(0xd, c.sub); a != c.a || b != c.b || cc != c.cc || d != c.d {
			t.Errorf("leaf 0xd.%d: %d %d %d %d, want %d %d %d %d", c.sub, a, b, cc, d, c.a, c.b, c.cc, c.d)
		}
	}
	if _, _, c, _ := NewCPUIDModel(host).Lookup(1, 0); c&(f1ecxXSAVE|f1ecxAVX) != 0 {
		t.Errorf("without host XSAVE the guest sees leaf 1 ECX %#x", c)
	}

	e := newEnv(t, featNRIP)
	e.plat.HostXCR0 = svm.XCR0Guest
	e.plat.CPUID = host
	vm := e.boot(Mode64)
	xsetbv := func(cr4, cpl uint64, ecx, val uint64) step {
		return e.insnExit(svm.ExitXSETBV, []byte{0x0f, 0x01, 0xd1}, func(v *svm.VMCB, r *svm.Regs) {
			v.State.CR4 = v.State.CR4&^svm.CR4OSXSAVE | cr4
			v.State.CPL = uint8(cpl)
			r.RCX, r.RDX, v.State.RAX = ecx, val>>32, val&0xffffffff
		})
	}
	cpuidD := e.insnExit(svm.ExitCPUID, encCPUID, func(v *svm.VMCB, r *svm.Regs) { v.State.RAX, r.RCX = 0xd, 0 })
	es := e.resume(
		xsetbv(0, 0, 0, 7),                 // no OSXSAVE: #UD
		xsetbv(svm.CR4OSXSAVE, 3, 0, 7),    // CPL 3: #GP
		xsetbv(svm.CR4OSXSAVE, 0, 1, 7),    // XCR1: #GP
		xsetbv(svm.CR4OSXSAVE, 0, 0, 5),    // AVX without SSE: #GP
		xsetbv(svm.CR4OSXSAVE, 0, 0, 0xe7), // AVX-512: not managed, #GP
		xsetbv(svm.CR4OSXSAVE, 0, 0, 7),    // ok
		cpuidD,
	)
	for i, want := range []uint64{evUD, evGP, evGP, evGP, evGP, 0} {
		if got := es[i+1].vmcb.Control.EventInj; got != want {
			t.Errorf("XSETBV case %d: EVENTINJ %#x, want %#x", i, got, want)
		}
	}
	if vm.VCPU.xcr0 != 7 {
		t.Errorf("guest XCR0 %#x after a valid XSETBV, want 7", vm.VCPU.xcr0)
	}
	if b := last(es).regs.RBX; b != 832 {
		t.Errorf("CPUID 0xd.0 EBX %d with XCR0 7, want 832", b)
	}
}

// TestSpeculationAndCounters: RDPMC is intercepted (#GP: no counters are
// offered, and with CR4.PCE the guest would read the host's), RDPRU too
// (#UD: hidden, it would read the host's MPERF/APERF); CPUID leaf
// 0x8000_0008 EBX shows IBPB only, 0x8000_0001 ECX no MONITORX; a guest's
// PRED_CMD write is an IBPB on the host where IBPB is shown, #GP
// elsewhere; the host does an IBPB when the CPU switches to another VM.
func TestSpeculationAndCounters(t *testing.T) {
	host := func(leaf, sub uint32) (uint32, uint32, uint32, uint32) {
		switch leaf {
		case 0, 0x80000000:
			return 0x80000008, 1, 2, 3
		case 0x80000001:
			return 0, 0, 1<<29 | 1<<0, 0 // MONITORX, LAHF
		case 0x80000008:
			return 0x3030, 1<<12 | 1<<14 | 1<<15 | 1<<24 | 1<<4 | 1<<0, 0, 0 // IBPB IBRS STIBP SSBD RDPRU CLZERO
		}
		return 0, 0, 0, 0
	}
	m := NewCPUIDModel(host)
	if _, b, _, _ := m.Lookup(0x80000008, 0); b != 1<<12 {
		t.Errorf("leaf 0x80000008 EBX %#x, want IBPB only", b)
	}
	if _, _, c, _ := m.Lookup(0x80000001, 0); c != 1 {
		t.Errorf("leaf 0x80000001 ECX %#x, want LAHF only (no MONITORX)", c)
	}

	e := newEnv(t, featNRIP)
	e.plat.CPUID = host
	ibpb := 0
	e.plat.IBPB = func() { ibpb++ }
	vm := e.boot(Mode64)
	if vm.VCPU.vmcb.Control.InterceptMisc1&svm.InterceptRDPMC == 0 {
		t.Fatal("RDPMC not intercepted")
	}
	if vm.VCPU.vmcb.Control.InterceptMisc2&svm.InterceptRDPRU == 0 {
		t.Fatal("RDPRU not intercepted")
	}
	es := e.resume(
		exitStep(svm.ExitRDPMC, 0, 0),
		e.msrStep(true, msrPredCmd, predCmdIBPB),
		e.msrStep(true, msrPredCmd, 2),
		exitStep(svm.ExitRDPRU, 0, 0),
	)
	evUD := svm.Exception(svm.VectorUD, 0).Encode()
	for i, want := range []uint64{evGP, 0, evGP, evUD} {
		if got := es[i+1].vmcb.Control.EventInj; got != want {
			t.Errorf("exit %d: EVENTINJ %#x, want %#x", i, got, want)
		}
	}
	// Five VMRUNs of the same VM: one IBPB before the first, one for
	// PRED_CMD.
	if ibpb != 2 {
		t.Errorf("%d IBPBs, want 2", ibpb)
	}
}

// TestRestoreMXCSRMask: the MXCSR a restore accepts follows the CPU's
// MXCSR_MASK: bit 17 (misaligned SSE, AMD) passes where the CPU has it.
func TestRestoreMXCSRMask(t *testing.T) {
	for _, tc := range []struct {
		mask uint32
		ok   bool
	}{{0, false}, {0xffbf, false}, {0x2ffff, true}} {
		e := newEnv(t, featNRIP)
		e.plat.MXCSRMask = tc.mask
		vm := e.boot(Mode16)
		st := e.withStore(snapshot.NewMemDevice(32<<20, 512))
		vs := vm.VCPU.capture()
		binary.LittleEndian.PutUint32(vs.FX[fxMXCSR:], 0x1f80|1<<17)
		if err := craft(st, vm, vmConfig{Name: vm.Name, MemSize: vm.Mem.Size}, vs); err != nil {
			t.Fatal(err)
		}
		_, _, err := Restore(e.plat, st, nil)
		if (err == nil) != tc.ok {
			t.Errorf("MXCSR_MASK %#x: restore of MXCSR bit 17: %v, want ok %v", tc.mask, err, tc.ok)
		}
	}
}

// TestMovToDR7Intercepted: DR7 writes exit and are emulated into the
// VMCB: the writable bits land, bit 10 stays set, reserved bits drop, a
// value above 32 bits raises #GP, and user mode gets #GP. WBINVD exits
// and is skipped.
func TestMovToDR7Intercepted(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		if vm.VCPU.vmcb.Control.InterceptDR != 0x00FF0000 {
			t.Fatalf("InterceptDR %#x", vm.VCPU.vmcb.Control.InterceptDR)
		}
		if vm.VCPU.vmcb.Control.InterceptMisc2&svm.InterceptWBINVD == 0 {
			t.Fatal("WBINVD not intercepted")
		}
		movDR7R9 := []byte{0x41, 0x0f, 0x23, 0xf9}
		es := e.resume(
			e.insnExit(svm.ExitDR0Write+7, movDR7R9, func(v *svm.VMCB, r *svm.Regs) { r.R9 = 0xFFFF_FFFF }),
			e.insnExit(svm.ExitDR0Write+7, movDR7R9, func(v *svm.VMCB, r *svm.Regs) { r.R9 = 1 << 32 }),
			e.insnExit(svm.ExitDR0Write+7, movDR7R9, func(v *svm.VMCB, r *svm.Regs) { r.R9 = 0x3; v.State.CPL = 3 }),
			e.insnExit(svm.ExitWBINVD, []byte{0x0f, 0x09}, nil),
		)
		if got := es[1].vmcb.State.DR7; got != 0xFFFF_27FF {
			t.Errorf("DR7 %#x after writing all ones to the low half, want 0xffff27ff", got)
		}
		if got, want := es[1].vmcb.State.RIP, es[0].vmcb.State.RIP+4; got != want {
			t.Errorf("RIP %#x after MOV DR7, want %#x", got, want)
		}
		for i, what := range []string{"a 64-bit value", "CPL 3"} {
			if got := es[2+i].vmcb.Control.EventInj; got != svm.Exception(svm.VectorGP, 0).Encode() {
				t.Errorf("%s: EVENTINJ %#x, want #GP(0)", what, got)
			}
		}
		if got := es[3].vmcb.State.DR7; got != 0xFFFF_27FF {
			t.Errorf("DR7 %#x changed by a refused write", got)
		}
		if got, want := es[4].vmcb.State.RIP, es[3].vmcb.State.RIP+2; got != want {
			t.Errorf("RIP %#x after WBINVD, want %#x", got, want)
		}
	})
}

// TestMovToDRAliases: DR0-DR3 writes land in the saved registers the
// world switch loads; DR5 is DR7 while CR4.DE is clear and #UD when set;
// DR4 is DR6.
func TestMovToDRAliases(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.boot(Mode64)
		setRAX := func(x uint64) func(v *svm.VMCB, r *svm.Regs) {
			return func(v *svm.VMCB, r *svm.Regs) { v.State.RAX = x; v.State.CR4 &^= svm.CR4DE }
		}
		es := e.resume(
			e.insnExit(svm.ExitDR0Write+2, []byte{0x0f, 0x23, 0xd0}, setRAX(0xffff_8000_1234_5678)), // mov dr2, rax
			e.insnExit(svm.ExitDR0Write+5, []byte{0x0f, 0x23, 0xe8}, setRAX(0x1)),                   // mov dr5, rax
			e.insnExit(svm.ExitDR0Write+4, []byte{0x0f, 0x23, 0xe0}, setRAX(0x1)),                   // mov dr4, rax
			e.insnExit(svm.ExitDR0Write+5, []byte{0x0f, 0x23, 0xe8}, func(v *svm.VMCB, r *svm.Regs) {
				v.State.RAX = 0xff
				v.State.CR4 |= svm.CR4DE
			}),
		)
		if got := es[1].regs.DR2; got != 0xffff_8000_1234_5678 {
			t.Errorf("DR2 %#x", got)
		}
		if got := es[2].vmcb.State.DR7; got != 0x401 {
			t.Errorf("DR7 %#x after MOV DR5 with CR4.DE clear, want 0x401", got)
		}
		if got := es[3].vmcb.State.DR6; got != dr6Fixed|1 {
			t.Errorf("DR6 %#x after MOV DR4, want %#x", got, dr6Fixed|1)
		}
		if got := es[4].vmcb.Control.EventInj; got != svm.Exception(svm.VectorUD, 0).Encode() {
			t.Errorf("MOV DR5 with CR4.DE: EVENTINJ %#x, want #UD", got)
		}
		if got := es[4].vmcb.State.DR7; got != 0x401 {
			t.Errorf("DR7 %#x changed by a #UD write", got)
		}
	})
}

// TestCR0WriteValidated: CR0 writes exit and are checked as MOV CR0 is
// architecturally: refused values raise #GP and leave CR0 alone; setting
// PG with LME activates long mode; CLTS and LMSW work.
func TestCR0WriteValidated(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode32)
		if vm.VCPU.vmcb.Control.InterceptCR != svm.InterceptCRWrite(0)|svm.InterceptCRWrite(4) {
			t.Fatalf("InterceptCR %#x", vm.VCPU.vmcb.Control.InterceptCR)
		}
		movCR0EAX := []byte{0x0f, 0x22, 0xc0}
		set := func(eax uint64, f func(s *svm.StateSaveArea)) func(v *svm.VMCB, r *svm.Regs) {
			return func(v *svm.VMCB, r *svm.Regs) {
				v.State.RAX = eax
				if f != nil {
					f(&v.State)
				}
			}
		}
		gp := svm.Exception(svm.VectorGP, 0).Encode()
		pe := uint64(svm.CR0PE | svm.CR0ET)
		es := e.resume(
			e.insnExit(svm.ExitCR0Write, movCR0EAX, set(svm.CR0PG, nil)),                                                     // PG without PE
			e.insnExit(svm.ExitCR0Write, movCR0EAX, set(pe|svm.CR0NW, nil)),                                                  // NW without CD
			e.insnExit(svm.ExitCR0Write, movCR0EAX, set(pe|svm.CR0PG, func(s *svm.StateSaveArea) { s.EFER |= svm.EFERLME })), // LME without PAE
			e.insnExit(svm.ExitCR0Write, movCR0EAX, set(pe|svm.CR0PG, func(s *svm.StateSaveArea) { s.CR4 |= svm.CR4PAE })),   // into long mode
			e.insnExit(svm.ExitCR0Write, []byte{0x0f, 0x06}, func(v *svm.VMCB, r *svm.Regs) {
				v.State.CR0 = pe | svm.CR0TS // back to flat protected mode
				v.State.EFER &^= svm.EFERLME | svm.EFERLMA
			}), // CLTS
			e.insnExit(svm.ExitCR0Write, []byte{0x0f, 0x01, 0xf3}, func(v *svm.VMCB, r *svm.Regs) { r.RBX = 0xE }), // LMSW BX: PE stays
		)
		for i, what := range []string{"PG without PE", "NW without CD", "LME without PAE"} {
			if got := es[i+1].vmcb.Control.EventInj; got != gp {
				t.Errorf("%s: EVENTINJ %#x, want #GP(0)", what, got)
			}
			if got := es[i+1].vmcb.State.CR0; got != es[0].vmcb.State.CR0 {
				t.Errorf("%s: CR0 %#x, want it unchanged", what, got)
			}
		}
		if s := es[4].vmcb.State; s.CR0&svm.CR0PG == 0 || s.EFER&svm.EFERLMA == 0 || es[4].vmcb.Control.EventInj != 0 {
			t.Errorf("into long mode: CR0 %#x EFER %#x EVENTINJ %#x", s.CR0, s.EFER, es[4].vmcb.Control.EventInj)
		}
		if es[4].vmcb.Control.TLBControl != svm.TLBControlFlushAll {
			t.Errorf("paging on without a TLB flush (TLBControl %d)", es[4].vmcb.Control.TLBControl)
		}
		if got := es[5].vmcb.State.CR0; got&svm.CR0TS != 0 {
			t.Errorf("CLTS left CR0 %#x", got)
		}
		if got := es[6].vmcb.State.CR0 & 0xF; got != 0xF {
			t.Errorf("LMSW 0xE: CR0 low bits %#x, want 0xf (PE kept)", got)
		}

		// Paging off from 64-bit code: #GP (QEMU TCG let it through).
		e64 := newEnv(t, e.plat.Features)
		e64.boot(Mode64)
		es = e64.resume(e64.insnExit(svm.ExitCR0Write, movCR0EAX, set(pe, nil)))
		if got := es[1].vmcb.Control.EventInj; got != gp {
			t.Errorf("PG off in 64-bit code: EVENTINJ %#x, want #GP(0)", got)
		}
		if s := es[1].vmcb.State; s.CR0&svm.CR0PG == 0 || s.EFER&svm.EFERLMA == 0 {
			t.Errorf("PG off in 64-bit code: CR0 %#x EFER %#x changed", s.CR0, s.EFER)
		}
	})
}

// TestCR4WriteValidated: CR4 bits outside the VM's CPU model and clearing
// PAE in long mode raise #GP; an allowed write lands with a TLB flush
// when paging bits change.
func TestCR4WriteValidated(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.boot(Mode64)
		movCR4RAX := []byte{0x0f, 0x22, 0xe0}
		set := func(rax uint64) func(v *svm.VMCB, r *svm.Regs) {
			return func(v *svm.VMCB, r *svm.Regs) { v.State.RAX = rax }
		}
		gp := svm.Exception(svm.VectorGP, 0).Encode()
		es := e.resume(
			e.insnExit(svm.ExitCR0Write+4, movCR4RAX, set(svm.CR4PAE|svm.CR4PKE)),               // PKE is never offered
			e.insnExit(svm.ExitCR0Write+4, movCR4RAX, set(svm.CR4PAE|1<<13)),                    // VMXE: reserved on AMD
			e.insnExit(svm.ExitCR0Write+4, movCR4RAX, set(svm.CR4PSE)),                          // PAE off in long mode
			e.insnExit(svm.ExitCR0Write+4, movCR4RAX, set(svm.CR4PAE|svm.CR4PGE|svm.CR4OSFXSR)), // fine
		)
		for i, what := range []string{"PKE", "VMXE", "PAE off in long mode"} {
			if got := es[i+1].vmcb.Control.EventInj; got != gp {
				t.Errorf("%s: EVENTINJ %#x, want #GP(0)", what, got)
			}
			if got := es[i+1].vmcb.State.CR4; got != es[0].vmcb.State.CR4 {
				t.Errorf("%s: CR4 %#x changed", what, got)
			}
		}
		if got := es[4].vmcb.State.CR4; got != svm.CR4PAE|svm.CR4PGE|svm.CR4OSFXSR || es[4].vmcb.Control.EventInj != 0 {
			t.Errorf("allowed write: CR4 %#x, EVENTINJ %#x", got, es[4].vmcb.Control.EventInj)
		}
		if es[4].vmcb.Control.TLBControl != svm.TLBControlFlushAll {
			t.Errorf("PGE set without a TLB flush")
		}
	})
}

// TestRegWriteLengthAndWrap: MOV CR0 with a ModRM mod field other than 11
// is still 3 bytes (the mod field is ignored), and IP wraps at 64 KiB in
// real mode, on the decode path.
func TestRegWriteLengthAndWrap(t *testing.T) {
	e := newEnv(t, featNoNRIP) // lengths come from the decoder
	e.boot(Mode16)
	es := e.resume(
		e.insnExit(svm.ExitCR0Write, []byte{0x0f, 0x22, 0x40}, func(v *svm.VMCB, r *svm.Regs) {
			v.State.RAX = svm.CR0ET // mov cr0, eax with mod 01: 3 bytes, no displacement
		}),
		func(v *svm.VMCB, r *svm.Regs) {
			v.State.RIP = 0xFFFD // the last 3 bytes of the segment
			e.code(0xFFFD, 0x0f, 0x22, 0xc0)
			v.State.RAX = svm.CR0ET
			v.Control.ExitCode = uint64(svm.ExitCR0Write)
		},
	)
	if got, want := es[1].vmcb.State.RIP, es[0].vmcb.State.RIP+3; got != want {
		t.Errorf("RIP %#x after a mod-01 MOV CR0, want %#x", got, want)
	}
	if got := es[2].vmcb.State.RIP; got != 0 {
		t.Errorf("RIP %#x after MOV CR0 at IP 0xfffd in real mode, want 0 (IP wraps)", got)
	}
}
