package kernel

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"tamavisor/svm"
)

// Encoded events.
const (
	evGP = 0x80000b0d // #GP(0): vector 13, exception, error code valid, valid
	evUD = 0x80000306 // #UD: vector 6, exception, no error code, valid
)

func (e *env) cpuidStep(leaf, sub uint32) step {
	return e.insnExit(svm.ExitCPUID, encCPUID, func(v *svm.VMCB, r *svm.Regs) {
		v.State.RAX = 0xdeadbeef_00000000 | uint64(leaf)
		r.RCX = 0xffffffff_00000000 | uint64(sub)
		r.RBX, r.RDX = ^uint64(0), ^uint64(0)
	})
}

// at moves the guest to rip before st.
func at(rip uint64, st step) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		v.State.RIP = rip
		st(v, r)
	}
}

func cpuidOut(en *entry) (a, b, c, d uint64) {
	return en.vmcb.State.RAX, en.regs.RBX, en.regs.RCX, en.regs.RDX
}

func TestCPUIDExit(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.boot(Mode64)
		leaves := []uint32{0, 1, 7, 0x80000000, 0x80000001, 0x8000000a, 0x40000000, 0x40000001, 0x20}
		var steps []step
		for _, l := range leaves {
			steps = append(steps, e.cpuidStep(l, 0))
		}
		es := e.resume(steps...)
		for i, l := range leaves {
			in, out := &es[i], &es[i+1]
			if got, want := out.vmcb.State.RIP, in.vmcb.State.RIP+2; got != want {
				t.Errorf("leaf %#x: RIP %#x, want %#x", l, got, want)
			}
			a, b, c, d := cpuidOut(out)
			if (a|b|c|d)>>32 != 0 {
				t.Errorf("leaf %#x: upper halves not cleared: %#x %#x %#x %#x", l, a, b, c, d)
			}
			var sig bytes.Buffer
			for _, x := range []uint64{b, d, c} {
				binary.Write(&sig, binary.LittleEndian, uint32(x))
			}
			switch l {
			case 0:
				if a != maxBasicLeaf || sig.String() != "AuthenticAMD" {
					t.Errorf("leaf 0: max %#x vendor %q", a, sig.String())
				}
			case 1:
				if c&hypervisorBit == 0 {
					t.Errorf("leaf 1 ECX %#x: hypervisor bit clear", c)
				}
				if c&(f1ecxVMX|f1ecxXSAVE|f1ecxOSXSAVE|f1ecxAVX|f1ecxMONITOR|f1ecxF16C) != 0 || c&1 == 0 || c&(1<<20) == 0 {
					t.Errorf("leaf 1 ECX %#x: hidden bits shown or SSE3/SSE4.2 lost", c)
				}
				if d&(f1edxMCE|f1edxMCA) != 0 || d&1 == 0 {
					t.Errorf("leaf 1 EDX %#x: MCE/MCA shown or FPU lost", d)
				}
				if b>>24 != 0 || b>>16&0xff != 1 {
					t.Errorf("leaf 1 EBX %#x: want APIC ID 0, one logical CPU", b)
				}
			case 7:
				if b != f7ebxFSGSBASE|f7ebxBMI1|f7ebxBMI2 || a|c|d != 0 {
					t.Errorf("leaf 7: %#x %#x %#x %#x (AVX2/AVX-512 must be hidden)", a, b, c, d)
				}
			case 0x80000000:
				if a != maxExtLeaf {
					t.Errorf("max extended leaf %#x", a)
				}
			case 0x80000001:
				if c&(e1ecxSVM|e1ecxIBS|e1ecxPerfCtrCor) != 0 || c&1 == 0 || d != hostExt1EDX {
					t.Errorf("leaf 0x80000001 ECX %#x EDX %#x: SVM/IBS/perf shown or others lost", c, d)
				}
			case 0x8000000a, 0x40000001, 0x20:
				if a|b|c|d != 0 {
					t.Errorf("leaf %#x: %#x %#x %#x %#x, want zeros", l, a, b, c, d)
				}
			case 0x40000000:
				sig.Reset()
				for _, x := range []uint64{b, c, d} {
					binary.Write(&sig, binary.LittleEndian, uint32(x))
				}
				if a != 0x40000000 || sig.String() != "TamaVisorHV\x00" {
					t.Errorf("leaf 0x40000000: max %#x signature %q", a, sig.String())
				}
			}
		}
	})
}

// TestCPUIDSubleaf: ECX selects the subleaf only where it matters.
func TestCPUIDSubleaf(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode32)
	es := e.resume(e.cpuidStep(7, 1), e.cpuidStep(1, 5))
	if a, b, c, d := cpuidOut(&es[1]); a|b|c|d != 0 {
		t.Errorf("leaf 7.1: %#x %#x %#x %#x, want zeros", a, b, c, d)
	}
	if _, _, c, _ := cpuidOut(&es[2]); c&hypervisorBit == 0 {
		t.Errorf("leaf 1 with ECX=5: ECX %#x, subleaf must be ignored", c)
	}
}

// TestSkipDecode: without NRIP save the instruction is decoded from guest
// memory in every mode; prefixes count; a wrong instruction stops the VM.
func TestSkipDecode(t *testing.T) {
	for _, mode := range []uint32{Mode16, Mode32, Mode64} {
		e := newEnv(t, featNoNRIP)
		e.boot(mode)
		prefixed := e.insnExit(svm.ExitCPUID, []byte{0x66, 0x0f, 0xa2}, nil)
		es := e.resume(e.cpuidStep(0, 0), prefixed, e.insnExit(svm.ExitHLT, encHLT, func(v *svm.VMCB, r *svm.Regs) {
			v.State.RFLAGS |= svm.RFLAGSIF
		}), e.insnExit(svm.ExitINVD, encINVD, nil))
		for i, n := range []uint64{2, 3, 1, 2} {
			if got, want := es[i+1].vmcb.State.RIP, es[i].vmcb.State.RIP+n; got != want {
				t.Errorf("mode %d exit %d: RIP %#x, want %#x", mode, i, got, want)
			}
		}

		e = newEnv(t, featNoNRIP)
		e.boot(mode)
		stop := e.stopped(e.insnExit(svm.ExitCPUID, []byte{0x90, 0x90}, nil))
		if stop.Kind != StopFault || !strings.Contains(stop.Reason, "CPUID") || !strings.Contains(stop.Reason, "RIP 0x8000") {
			t.Errorf("mode %d: NOPs at a CPUID exit: %v", mode, stop)
		}
		if len(e.runner.entries) != 1 {
			t.Errorf("mode %d: VM resumed after a failed skip", mode)
		}
	}
}

// TestSkipNRIP: with NRIP save, NextRIP is used and guest bytes are not read.
func TestSkipNRIP(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode64)
	es := e.resume(
		e.insnExit(svm.ExitCPUID, []byte{0x90, 0x90}, nil), // bytes changed since the exit: NextRIP rules
		func(v *svm.VMCB, r *svm.Regs) {
			v.Control.ExitCode = uint64(svm.ExitVMMCALL)
			v.Control.NextRIP = v.State.RIP + 7
		},
		func(v *svm.VMCB, r *svm.Regs) { // code outside RAM is never fetched
			v.State.RIP = testMem + 0x10000
			v.Control.ExitCode = uint64(svm.ExitCPUID)
			v.Control.NextRIP = v.State.RIP + 2
		},
	)
	if got, want := es[1].vmcb.State.RIP, es[0].vmcb.State.RIP+2; got != want {
		t.Errorf("RIP %#x, want NextRIP %#x", got, want)
	}
	if got, want := es[2].vmcb.State.RIP, es[1].vmcb.State.RIP+7; got != want {
		t.Errorf("RIP %#x, want NextRIP %#x", got, want)
	}
	if got := es[3].vmcb.State.RIP; got != testMem+0x10002 {
		t.Errorf("RIP %#x, want NextRIP %#x", got, testMem+0x10002)
	}
}

// TestSkipCodeOutsideRAM: a decode that cannot fetch stops the VM cleanly.
func TestSkipCodeOutsideRAM(t *testing.T) {
	for _, mode := range []uint32{Mode32, Mode64} {
		e := newEnv(t, featNoNRIP)
		e.boot(mode)
		stop := e.stopped(func(v *svm.VMCB, r *svm.Regs) {
			v.State.RIP = testMem + 0x1000
			v.Control.ExitCode = uint64(svm.ExitCPUID)
		})
		if stop.Kind != StopFault || !strings.Contains(stop.Reason, "cannot skip CPUID") || strings.Contains(stop.Reason, "hypervisor error") {
			t.Errorf("mode %d: %v", mode, stop)
		}
	}
}

// TestSkipSegmentBase: the decoder fetches at CS.base + IP in real mode.
func TestSkipSegmentBase(t *testing.T) {
	e := newEnv(t, featNoNRIP)
	e.boot(Mode16)
	es := e.resume(func(v *svm.VMCB, r *svm.Regs) {
		v.State.CS.Selector, v.State.CS.Base, v.State.RIP = 0x1000, 0x10000, 0x100
		e.code(0x100, 0x90, 0x90) // CS base ignored would find these
		e.code(0x10100, encCPUID...)
		v.Control.ExitCode = uint64(svm.ExitCPUID)
	})
	if got := last(es).vmcb.State.RIP; got != 0x102 {
		t.Errorf("RIP %#x, want 0x102", got)
	}
}

// TestSkipRealModeWrap: IP wraps at 64 KiB in 16-bit code.
func TestSkipRealModeWrap(t *testing.T) {
	e := newEnv(t, featNoNRIP)
	e.boot(Mode16)
	es := e.resume(at(0xfffe, e.cpuidStep(0, 0)))
	if got := last(es).vmcb.State.RIP; got != 0 {
		knownBug(t, "vcpu.go skip: 16-bit code skipping CPUID at IP 0xfffe sets RIP %#x, want 0 (IP wraps at 64 KiB; skip only masks to 32 bits)", got)
	}
}

// ioStep is an IOIO exit for an instruction of n bytes; NextRIP is junk so
// that only EXITINFO2 can give the next RIP.
func ioStep(port uint16, size uint8, in bool, rax uint64) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		info := uint64(port) << svm.IOIOPortShift
		switch size {
		case 1:
			info |= svm.IOIOSize8
		case 2:
			info |= svm.IOIOSize16
		case 4:
			info |= svm.IOIOSize32
		}
		if in {
			info |= svm.IOIOTypeIn
		}
		v.State.RAX = rax
		v.Control.ExitCode = uint64(svm.ExitIOIO)
		v.Control.ExitInfo1 = info
		v.Control.ExitInfo2 = v.State.RIP + 1
		v.Control.NextRIP = 0xbad
		v.Control.InterruptShadow = 1
	}
}

func TestIOIO(t *testing.T) {
	e := newEnv(t, featNoNRIP)
	e.boot(Mode64)
	const junk = 0x11223344_55667788
	type io struct {
		port    uint16
		size    uint8
		in      bool
		rax     uint64
		wantRAX uint64
	}
	ios := []io{
		{0x3f8, 1, false, 0xffffffff_ffffff41, 0xffffffff_ffffff41}, // 'A' to the UART
		{0xe9, 1, false, 0x142, 0x142},                              // 'B' to the debug port
		{0x3ff, 1, false, 0x5a, 0x5a},                               // UART scratch
		{0x3ff, 1, true, junk, 0x11223344_5566775a},
		{0x80, 4, true, junk, 0xffffffff},
		{0x80, 2, true, junk, 0x11223344_5566ffff},
		{0x80, 1, true, junk, 0x11223344_556677ff},
		{0xe9, 1, true, junk, 0x11223344_556677e9},
		{0x80, 4, false, 0x43434343, 0x43434343}, // nobody listens
		{0x3f8, 2, false, 0x4443, 0x4443},        // "CD": one byte per port... THR then IER
	}
	var steps []step
	for _, x := range ios {
		steps = append(steps, ioStep(x.port, x.size, x.in, x.rax))
	}
	es := e.resume(steps...)
	for i, x := range ios {
		out := &es[i+1].vmcb
		if out.State.RAX != x.wantRAX {
			t.Errorf("%+v: RAX %#x, want %#x", x, out.State.RAX, x.wantRAX)
		}
		if got, want := out.State.RIP, es[i].vmcb.State.RIP+1; got != want {
			t.Errorf("%+v: RIP %#x, want EXITINFO2 %#x", x, got, want)
		}
		if out.Control.InterruptShadow != 0 {
			t.Errorf("%+v: interrupt shadow kept", x)
		}
	}
	if got := e.console.String(); got != "ABC" {
		t.Errorf("console %q, want %q", got, "ABC")
	}
	if ier := e.vm.UART.In(COM1Base+1, 1); ier != 0x04 {
		t.Errorf("UART IER %#x after the 16-bit OUT, want 0x04 (second byte 0x44 masked)", ier)
	}
}

func TestIOIOString(t *testing.T) {
	for _, bits := range []uint64{svm.IOIOString, svm.IOIOString | svm.IOIORep, svm.IOIOString | svm.IOIOTypeIn} {
		e := newEnv(t, featNRIP)
		e.boot(Mode32)
		stop := e.stopped(func(v *svm.VMCB, r *svm.Regs) {
			v.Control.ExitCode = uint64(svm.ExitIOIO)
			v.Control.ExitInfo1 = 0x3f8<<svm.IOIOPortShift | svm.IOIOSize8 | bits
			v.Control.ExitInfo2 = v.State.RIP + 2
		})
		if stop.Kind != StopFault || !strings.Contains(stop.Reason, "string port I/O") || !strings.Contains(stop.Reason, "0x3f8") {
			t.Errorf("string I/O %#x: %v", bits, stop)
		}
		if e.console.Len() != 0 {
			t.Errorf("string I/O wrote %q", e.console.String())
		}
	}
}

func TestConsoleInput(t *testing.T) {
	const lsr, rbr = COM1Base + 5, COM1Base
	e := newEnv(t, featNRIP)
	e.boot(Mode32)
	e.input = []byte("x")
	es := e.resume(ioStep(lsr, 1, true, 0), ioStep(rbr, 1, true, 0), ioStep(lsr, 1, true, 0))
	if got := es[1].vmcb.State.RAX; got&1 == 0 {
		t.Errorf("LSR %#x with input pending: DR clear", got)
	}
	if got := es[2].vmcb.State.RAX; got != 'x' {
		t.Errorf("RBR %#x, want 'x'", got)
	}
	if got := es[3].vmcb.State.RAX; got&1 != 0 {
		t.Errorf("LSR %#x after the read: DR set", got)
	}
}

// TestConsoleInputNotLost: every byte of a burst reaches the guest, also
// when the UART (FIFOs off after reset: one byte of buffer) is full.
func TestConsoleInputNotLost(t *testing.T) {
	const rbr = COM1Base
	e := newEnv(t, featNRIP)
	e.boot(Mode32)
	e.input = []byte("abc")
	es := e.resume(ioStep(rbr, 1, true, 0), ioStep(rbr, 1, true, 0), ioStep(rbr, 1, true, 0))
	var got []byte
	for _, en := range es[1:] {
		got = append(got, byte(en.vmcb.State.RAX))
	}
	if string(got) != "abc" {
		knownBug(t, "vcpu.go pollInput drops console input when the UART is full: guest read %q, want \"abc\" (the byte taken from Platform.Input is discarded when UART16550.Receive returns false)", got)
	}
}

// msrStep is RDMSR (val ignored) or WRMSR of val, with junk in the upper
// halves of RAX and RDX.
func (e *env) msrStep(write bool, msr uint32, val uint64) step {
	enc := encRDMSR
	if write {
		enc = encWRMSR
	}
	return e.insnExit(svm.ExitMSR, enc, func(v *svm.VMCB, r *svm.Regs) {
		r.RCX = 0xabcd0000_00000000 | uint64(msr)
		v.State.RAX = 0xeeeeeeee_00000000 | val&0xffffffff
		r.RDX = 0xdddddddd_00000000 | val>>32
		v.Control.ExitInfo1 = 0
		if write {
			v.Control.ExitInfo1 = 1
		}
	})
}

func TestMSRExit(t *testing.T) {
	const (
		lme, lma, nxe, sce, svme = svm.EFERLME, svm.EFERLMA, svm.EFERNXE, svm.EFERSCE, svm.EFERSVME
		pat                      = 0x0706050401000706
	)
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		type op struct {
			name   string
			st     step
			gp     bool   // #GP expected
			read   bool   // RDMSR: result expected in EDX:EAX
			want   uint64 // RDMSR result
			verify func(v *svm.VMCB) string
		}
		efer := func(want uint64) func(v *svm.VMCB) string {
			return func(v *svm.VMCB) string {
				if v.State.EFER != want {
					return "EFER wrong"
				}
				return ""
			}
		}
		ops := []op{
			{name: "read EFER", st: e.msrStep(false, msrEFER, 0), read: true, want: lme | lma},
			{name: "write EFER", st: e.msrStep(true, msrEFER, lme|lma|nxe|sce), verify: efer(svme | lme | lma | nxe | sce)},
			{name: "EFER reserved bit 9", st: e.msrStep(true, msrEFER, lme|lma|1<<9), gp: true, verify: efer(svme | lme | lma | nxe | sce)},
			{name: "EFER bit 32", st: e.msrStep(true, msrEFER, lme|lma|1<<32), gp: true},
			{name: "EFER.SVME by guest", st: e.msrStep(true, msrEFER, lme|lma|svme), gp: true},
			{name: "EFER LMA read-only", st: e.msrStep(true, msrEFER, lme), verify: efer(svme | lme | lma)},
			{name: "read EFER again", st: e.msrStep(false, msrEFER, 0), read: true, want: lme | lma},
			{name: "write PAT", st: e.msrStep(true, msrPAT, pat), verify: func(v *svm.VMCB) string {
				if v.State.GPAT != pat {
					return "GPAT not written"
				}
				return ""
			}},
			{name: "read PAT", st: e.msrStep(false, msrPAT, 0), read: true, want: pat},
			{name: "PAT type 2", st: e.msrStep(true, msrPAT, 0x0007040600070402), gp: true},
			{name: "PAT type 3 high", st: e.msrStep(true, msrPAT, 0x0000000300000000), gp: true},
			{name: "PAT type 8", st: e.msrStep(true, msrPAT, 0x0800000000000000), gp: true, verify: func(v *svm.VMCB) string {
				if v.State.GPAT != pat {
					return "GPAT changed by a refused write"
				}
				return ""
			}},
			{name: "read VM_CR", st: e.msrStep(false, svm.MSRVMCR, 0), gp: true},
			{name: "write VM_HSAVE_PA", st: e.msrStep(true, svm.MSRVMHsavePA, 0x1000), gp: true},
			{name: "read 0x12345678", st: e.msrStep(false, 0x12345678, 0), gp: true},
			{name: "write MCG_CAP", st: e.msrStep(true, msrMCGCap, 0), gp: true},
			{name: "read MTRRcap", st: e.msrStep(false, msrMTRRCap, 0), read: true, want: 0},
			{name: "read MCG_CAP", st: e.msrStep(false, msrMCGCap, 0), read: true, want: 0},
			{name: "read MCG_STATUS", st: e.msrStep(false, msrMCGStatus, 0), read: true, want: 0},
			{name: "read MTRR fix 4K", st: e.msrStep(false, msrMTRRFix4KLast, 0), read: true, want: 0},
			{name: "write MTRR phys", st: e.msrStep(true, msrMTRRPhysFirst, 0x6)},
			{name: "write MTRRdefType", st: e.msrStep(true, msrMTRRDefType, 0xc06)},
			{name: "read MTRRdefType", st: e.msrStep(false, msrMTRRDefType, 0), read: true, want: 0xc06},
			{name: "write TSC_AUX high", st: e.msrStep(true, msrTSCAux, 1<<32), gp: true},
			{name: "write TSC_AUX", st: e.msrStep(true, msrTSCAux, 7)},
			{name: "read TSC_AUX", st: e.msrStep(false, msrTSCAux, 0), read: true, want: 7},
		}
		var steps []step
		for _, o := range ops {
			steps = append(steps, o.st)
		}
		es := e.resume(steps...)
		for i, o := range ops {
			in, out := &es[i], &es[i+1]
			rip := out.vmcb.State.RIP
			ev := out.vmcb.Control.EventInj
			if o.gp {
				if ev != evGP || rip != in.vmcb.State.RIP {
					t.Errorf("%s: EVENTINJ %#x RIP %#x, want #GP(0) %#x at unchanged RIP %#x", o.name, ev, rip, uint64(evGP), in.vmcb.State.RIP)
				}
			} else {
				if ev != 0 || rip != in.vmcb.State.RIP+2 {
					t.Errorf("%s: EVENTINJ %#x RIP %#x, want none, RIP %#x", o.name, ev, rip, in.vmcb.State.RIP+2)
				}
			}
			if o.read {
				if a, d := out.vmcb.State.RAX, out.regs.RDX; a != o.want&0xffffffff || d != o.want>>32 {
					t.Errorf("%s: EDX:EAX %#x:%#x, want %#x", o.name, d, a, o.want)
				}
			}
			if o.verify != nil {
				if msg := o.verify(&out.vmcb); msg != "" {
					t.Errorf("%s: %s (EFER %#x GPAT %#x)", o.name, msg, out.vmcb.State.EFER, out.vmcb.State.GPAT)
				}
			}
			if r := svm.Check(&out.vmcb); len(r) != 0 {
				t.Errorf("%s: VMCB fails checks: %q", o.name, r)
			}
		}
		_ = vm
	})
}

func TestMSRTSC(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.boot(Mode32)
		e.tsc = 1_000_000
		es := e.resume(
			func(v *svm.VMCB, r *svm.Regs) {
				v.Control.TSCOffset = 500
				e.msrStep(false, msrTSC, 0)(v, r)
			},
			e.msrStep(true, msrTSC, 5_000_000),
			e.msrStep(false, msrTSC, 0),
			e.msrStep(true, msrTSC, 5),
			e.msrStep(false, msrTSC, 0),
		)
		tsc := func(en *entry) uint64 { return en.regs.RDX<<32 | en.vmcb.State.RAX }
		if got := tsc(&es[1]); got != 1_000_500 {
			t.Errorf("TSC read %d, want host TSC + offset = 1000500", got)
		}
		if got := es[2].vmcb.Control.TSCOffset; got != 4_000_000 {
			t.Errorf("TSC offset %d after writing 5000000, want 4000000", got)
		}
		if got := tsc(&es[3]); got != 5_000_000 {
			t.Errorf("TSC read %d, want 5000000", got)
		}
		if got := tsc(&es[5]); got != 5 {
			t.Errorf("TSC read %d after writing 5 (below the host TSC), want 5", got)
		}
	})
}

// hcStep is a VMMCALL.
func (e *env) hcStep(fn, rbx, rcx, rdx uint64) step {
	return e.insnExit(svm.ExitVMMCALL, encVMMCALL, func(v *svm.VMCB, r *svm.Regs) {
		v.State.RAX, r.RBX, r.RCX, r.RDX = fn, rbx, rcx, rdx
		r.RSI, r.R15 = 0x5151, 0x1515
	})
}

func TestHypercalls(t *testing.T) {
	neg := func(n int64) uint64 { return uint64(n) }
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		msg := bytes.Repeat([]byte("0123456789abcdef"), 256) // 4096 bytes
		if err := vm.Mem.WriteGPA(0x20000, msg); err != nil {
			t.Fatal(err)
		}
		calls := []struct {
			name         string
			fn, rbx, rcx uint64
			want         uint64
			console      string
		}{
			{"VERSION", HCVersion, 0, 0, ABIVersion, ""},
			{"CONSOLE_WRITE", HCConsoleWrite, 0x20000, 5, 5, "01234"},
			{"CONSOLE_WRITE 4096", HCConsoleWrite, 0x20000, 4096, 4096, string(msg)},
			{"CONSOLE_WRITE 0", HCConsoleWrite, 0x20000, 0, 0, ""},
			{"CONSOLE_WRITE 4097", HCConsoleWrite, 0x20000, 4097, neg(EINVAL), ""},
			{"CONSOLE_WRITE huge len", HCConsoleWrite, 0x20000, 1 << 63, neg(EINVAL), ""},
			{"CONSOLE_WRITE past RAM", HCConsoleWrite, testMem - 2, 5, neg(EINVAL), ""},
			{"CONSOLE_WRITE at RAM end", HCConsoleWrite, testMem, 1, neg(EINVAL), ""},
			{"CONSOLE_WRITE wraps", HCConsoleWrite, ^uint64(0) - 1, 4, neg(EINVAL), ""},
			{"CONSOLE_WRITE last bytes", HCConsoleWrite, testMem - 2, 2, 2, "\x00\x00"},
			{"BENCH_REPORT", HCBenchReport, 7, 123, 0, ""},
			{"BENCH_REPORT again", HCBenchReport, 7, 456, 0, ""},
			{"SNAPSHOT without a disk", HCSnapshot, 0, 0, neg(ENODEV), "tamavisor: " + ErrNoDisk.Error() + "\n"},
			{"unknown 6", 6, 0, 0, neg(ENOSYS), ""},
			{"snapshot wait, none started", HCSnapshotWait, 0, 0, 0, ""},
			{"unknown huge", ^uint64(0), 0, 0, neg(ENOSYS), ""},
		}
		var steps []step
		var wantConsole strings.Builder
		for _, c := range calls {
			steps = append(steps, e.hcStep(c.fn, c.rbx, c.rcx, 0x77))
			wantConsole.WriteString(c.console)
		}
		es := e.resume(steps...)
		for i, c := range calls {
			in, out := &es[i], &es[i+1]
			if got := out.vmcb.State.RAX; got != c.want {
				t.Errorf("%s: RAX %#x, want %#x", c.name, got, c.want)
			}
			if got, want := out.vmcb.State.RIP, in.vmcb.State.RIP+3; got != want {
				t.Errorf("%s: RIP %#x, want %#x", c.name, got, want)
			}
			if r := out.regs; r.RBX != c.rbx || r.RCX != c.rcx || r.RDX != 0x77 || r.RSI != 0x5151 || r.R15 != 0x1515 {
				t.Errorf("%s: registers changed: %+v", c.name, r)
			}
			if out.vmcb.Control.EventInj != 0 {
				t.Errorf("%s: event injected %#x", c.name, out.vmcb.Control.EventInj)
			}
		}
		if e.console.String() != wantConsole.String() {
			t.Errorf("console got %d bytes, want %d", e.console.Len(), wantConsole.Len())
		}
		if len(vm.BenchReports) != 1 || vm.BenchReports[7] != 456 {
			t.Errorf("bench reports %v, want map[7:456]", vm.BenchReports)
		}
	})
}

func TestHypercallExit(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode16)
		stop := e.stopped(e.hcStep(HCVersion, 0, 0, 0), e.hcStep(HCExit, 0x1234, 0, 0), e.hcStep(HCVersion, 0, 0, 0))
		if stop.Kind != StopExited || stop.Status != 0x34 {
			t.Errorf("stop %+v, want exited with status 0x34", stop)
		}
		if s := stop.String(); s != "exited with status 52" {
			t.Errorf("Stop.String() %q", s)
		}
		if len(e.runner.entries) != 2 {
			t.Errorf("%d VMRUNs, want 2 (none after EXIT)", len(e.runner.entries))
		}
		if vm.Stopped() != stop {
			t.Error("Stopped() differs from Run's result")
		}
		// Run on a stopped VM does not enter the guest again.
		if again := vm.Run(); again != stop || len(e.runner.entries) != 2 {
			t.Errorf("Run after stop: %v, %d VMRUNs", again, len(e.runner.entries))
		}
	})
}

func TestHLT(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.boot(Mode32)
		es := e.resume(e.insnExit(svm.ExitHLT, encHLT, func(v *svm.VMCB, r *svm.Regs) {
			v.State.RFLAGS |= svm.RFLAGSIF
		}))
		if got, want := es[1].vmcb.State.RIP, es[0].vmcb.State.RIP+1; got != want {
			t.Errorf("HLT with IF=1: RIP %#x, want %#x", got, want)
		}
		e = newEnv(t, e.plat.Features)
		e.boot(Mode32)
		stop := e.stopped(e.insnExit(svm.ExitHLT, encHLT, nil))
		if stop.Kind != StopFault || !strings.Contains(stop.Reason, "interrupts disabled") || !strings.Contains(stop.Reason, "0x8000") {
			t.Errorf("HLT with IF=0: %v", stop)
		}
	})
}

// TestStopExits: exits that end the VM with a report.
func TestStopExits(t *testing.T) {
	invalidASID0 := func(code uint64) step {
		return func(v *svm.VMCB, r *svm.Regs) {
			v.Control.GuestASID = 0
			v.Control.ExitCode = code
		}
	}
	for _, c := range []struct {
		name string
		st   step
		want []string
	}{
		{"NPF", exitStep(svm.ExitNPF, svm.NPFWrite|svm.NPFFinalAddr, 0x12345678), []string{"nested page fault", "0x12345678", "write"}},
		{"NPF fetch", exitStep(svm.ExitNPF, svm.NPFFetch|svm.NPFPresent, testMem), []string{"0x400000", "instruction fetch"}},
		{"SHUTDOWN", exitStep(svm.ExitShutdown, 0, 0), []string{"triple fault", "0x8000"}},
		{"#MC", exitStep(svm.ExitExcp0+18, 0, 0), []string{"machine check"}},
		{"FERR", exitStep(svm.ExitFERRFreeze, 0, 0), []string{"FERR"}},
		{"INVALID 32-bit", invalidASID0(0xffffffff), []string{"VMEXIT_INVALID", "guest ASID is 0"}},
		{"INVALID 64-bit", invalidASID0(0xffffffff_ffffffff), []string{"VMEXIT_INVALID", "guest ASID is 0"}},
		{"INVALID SVME", func(v *svm.VMCB, r *svm.Regs) {
			v.State.EFER &^= svm.EFERSVME
			v.State.CR0 |= svm.CR0NW
			v.Control.ExitCode = 0xffffffff
		}, []string{"EFER.SVME is clear", "CR0.NW"}},
		{"INVALID unexplained", exitStep(svm.ExitInvalidLow, 0, 0), []string{"VMEXIT_INVALID", "does not check"}},
		{"RDTSC", exitStep(svm.ExitRDTSC, 1, 2), []string{"unexpected #VMEXIT RDTSC"}},
		{"CR3 write", exitStep(svm.ExitCR0Write+3, 0, 0), []string{"unexpected #VMEXIT CR3_WRITE"}},
		{"CR0 write not at a CR0 write", exitStep(svm.ExitCR0Write, 0, 0), []string{"CR0 write exit", "not a write to a control register"}},
		{"0x3ff", exitStep(0x3ff, 0xaa, 0xbb), []string{"unexpected #VMEXIT 0x3ff", "0xaa", "0xbb"}},
		{"0x100000000", exitStep(0x1_00000000, 0, 0), []string{"unexpected #VMEXIT"}},
	} {
		e := newEnv(t, featNRIP)
		e.boot(Mode64)
		stop := e.stopped(c.st)
		if stop.Kind != StopFault {
			t.Errorf("%s: %v", c.name, stop)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(stop.Reason, w) {
				t.Errorf("%s: report %q lacks %q", c.name, stop.Reason, w)
			}
		}
		if !strings.HasPrefix(stop.String(), "stopped: ") {
			t.Errorf("%s: Stop.String() %q", c.name, stop.String())
		}
	}
}

// TestInvalidReportsInjectedEvent: the explanation of a VMEXIT_INVALID is
// computed on the VMCB VMRUN refused, including its EVENTINJ.
func TestInvalidReportsInjectedEvent(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode64)
	const bad = svm.EventValid | 1<<svm.EventTypeShift | 0x20 // reserved type 1
	stop := e.stopped(
		func(v *svm.VMCB, r *svm.Regs) { // an exit during delivery of a (bogus) event
			e.cpuidStep(0, 0)(v, r)
			v.Control.ExitIntInfo = bad
		},
		exitStep(svm.ExitInvalidLow, 0, 0), // VMRUN refuses the re-injection
	)
	if got := e.runner.entries[1].vmcb.Control.EventInj; got != bad {
		t.Fatalf("EVENTINJ %#x, want EXITINTINFO %#x re-injected", got, uint64(bad))
	}
	if !strings.Contains(stop.Reason, "EVENTINJ") {
		knownBug(t, "vcpu.go handleExit clears Control.EventInj before svm.Check explains a VMEXIT_INVALID, so a refused EVENTINJ is never reported: %q", stop.Reason)
	}
}

// TestUDExits: SVM and MONITOR instructions do not exist for the guest.
func TestUDExits(t *testing.T) {
	codes := []svm.ExitCode{svm.ExitVMRUN, svm.ExitVMLOAD, svm.ExitVMSAVE, svm.ExitSTGI, svm.ExitCLGI,
		svm.ExitSKINIT, svm.ExitINVLPGA, svm.ExitMONITOR, svm.ExitMWAIT, svm.ExitMWAIT + 1}
	e := newEnv(t, featNoNRIP)
	e.boot(Mode64)
	var steps []step
	for _, c := range codes {
		steps = append(steps, exitStep(c, 0, 0))
	}
	es := e.resume(steps...)
	for i, c := range codes {
		out := &es[i+1].vmcb
		if out.Control.EventInj != evUD || out.State.RIP != es[i].vmcb.State.RIP {
			t.Errorf("%v: EVENTINJ %#x RIP %#x, want #UD %#x at RIP %#x", c, out.Control.EventInj, out.State.RIP, uint64(evUD), es[i].vmcb.State.RIP)
		}
	}
}

// TestEventReinjection: an event interrupted by an exit is delivered again;
// when the handler injects its own exception, an interrupted interrupt is
// delivered on the VMRUN after; injections last one VMRUN.
func TestEventReinjection(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.boot(Mode64)
		const (
			intr = svm.EventValid | 0x20                                                   // external interrupt 0x20
			pf   = svm.EventValid | 3<<svm.EventTypeShift | 14 | svm.EventErrValid | 2<<32 // #PF, error code 2
		)
		withIF := func(st step) step {
			return func(v *svm.VMCB, r *svm.Regs) {
				st(v, r)
				v.State.RFLAGS |= svm.RFLAGSIF
			}
		}
		withPending := func(st step, ev uint64) step {
			return func(v *svm.VMCB, r *svm.Regs) {
				st(v, r)
				v.Control.ExitIntInfo = ev
			}
		}
		es := e.resume(
			withPending(ioStep(0x80, 1, false, 0), intr),
			withPending(e.cpuidStep(0, 0), pf),
			e.cpuidStep(0, 0),
			withPending(e.msrStep(false, 0x12345678, 0), intr),           // handler injects #GP; the interrupt follows
			withIF(withPending(e.cpuidStep(0, 0), intr&^svm.EventValid)), // not valid; IF set: the deferred interrupt
			e.cpuidStep(0, 0),
		)
		for i, want := range []uint64{0, intr, pf, 0, evGP, intr, 0} {
			if got := es[i].vmcb.Control.EventInj; got != want {
				t.Errorf("entry %d: EVENTINJ %#x, want %#x", i, got, want)
			}
		}
		if got := es[0].vmcb.Control.TLBControl; got != svm.TLBControlFlushAll {
			t.Errorf("first VMRUN TLB control %d, want flush", got)
		}
		for i := 1; i < len(es); i++ {
			if got := es[i].vmcb.Control.TLBControl; got != svm.TLBControlNothing {
				t.Errorf("entry %d: TLB control %d, want nothing", i, got)
			}
		}
	})
}

// TestInterruptShadowCleared: skipping an instruction ends its shadow.
func TestInterruptShadowCleared(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		e.boot(Mode32)
		es := e.resume(func(v *svm.VMCB, r *svm.Regs) {
			e.cpuidStep(0, 0)(v, r)
			v.Control.InterruptShadow = 1
		})
		if got := es[1].vmcb.Control.InterruptShadow; got != 0 {
			t.Errorf("interrupt shadow %#x after CPUID", got)
		}
	})
}

func TestExitCounter(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode32)
	e.resume(e.cpuidStep(0, 0), e.cpuidStep(1, 0), e.cpuidStep(2, 0))
	if vm.VCPU.Exits != 4 { // three scripted exits and the final shutdown
		t.Errorf("Exits = %d, want 4", vm.VCPU.Exits)
	}
}
