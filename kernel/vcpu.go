package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unsafe"

	"tamavisor/kernel/insn"
	"tamavisor/svm"
)

// VCPU is a virtual CPU: its VMCB, the registers the VMCB does not hold,
// and its x87/SSE state.
type VCPU struct {
	vm     *VM
	vmcbPA uint64
	vmcb   *svm.VMCB
	Regs   svm.Regs
	fx     *svm.FXArea // the first 512 bytes of xsave: the FXSAVE image
	fxBuf  []byte
	xsave  []byte // XSAVE area (standard format) when the host has XSAVE
	xcr0   uint64 // the guest's XCR0
	msrs   msrState
	cpu    insn.CPU // scratch for instruction fetch; refreshed per decode

	// Exits counts #VMEXITs; ExitsBy counts them by exit code (codes
	// up to maxCountedExit, the rest in the last slot).
	Exits   uint64
	ExitsBy [maxCountedExit + 2]uint64

	halted    bool   // in HLT with interrupts enabled, waiting for an event
	preempted bool   // the last exit was the host's preemption timer
	deferred  uint64 // an interrupt taken from the APIC, to inject next (irq.go)

	ibuf [insn.MaxLen]byte // instruction bytes for MMIO emulation
}

// Intercepts every tamavisor guest runs with (APM vol. 2, 15.9-15.13).
const (
	interceptsMisc1 = svm.InterceptINTR | svm.InterceptNMI | svm.InterceptRDPMC |
		svm.InterceptCPUID | svm.InterceptHLT | svm.InterceptIOIOProt |
		svm.InterceptMSRProt | svm.InterceptShutdown | svm.InterceptINVD |
		svm.InterceptINVLPGA | svm.InterceptFERRFreeze
	interceptsMisc2 = svm.InterceptVMRUN | svm.InterceptVMMCALL | svm.InterceptVMLOAD |
		svm.InterceptVMSAVE | svm.InterceptSTGI | svm.InterceptCLGI | svm.InterceptSKINIT |
		svm.InterceptMONITOR | svm.InterceptMWAIT | svm.InterceptMWAITC |
		svm.InterceptRDTSCP | svm.InterceptXSETBV | svm.InterceptWBINVD | svm.InterceptRDPRU
	// Machine checks are never reflected into a guest. #DB and #AC are
	// intercepted and reflected: a guest can make their delivery raise
	// them again, which without an intercept loops inside the CPU and
	// never gives it back to the hypervisor (CVE-2015-8104, CVE-2015-5307).
	interceptsExceptions = 1<<svm.VectorMC | 1<<svm.VectorDB | 1<<svm.VectorAC
)

func newVCPU(vm *VM) (*VCPU, error) {
	size := svm.XSaveSize(vm.plat.HostXCR0)
	v := &VCPU{vm: vm, fxBuf: make([]byte, size+svm.XSaveAlign), xcr0: svm.XCR0X87}
	off := (svm.XSaveAlign - int(uintptr(unsafe.Pointer(&v.fxBuf[0])))%svm.XSaveAlign) % svm.XSaveAlign
	v.xsave = v.fxBuf[off : off+size]
	v.fx = (*svm.FXArea)(v.xsave[:svm.XSaveLegacySize])
	v.fx.DefaultFX()
	v.setXStateBV()
	var err error
	if v.vmcbPA, err = vm.alloc(svm.PageSize, svm.PageSize); err != nil {
		return nil, err
	}
	iopm, err := vm.alloc(svm.IOPMSize, svm.PageSize)
	if err != nil {
		return nil, err
	}
	msrpm, err := vm.alloc(svm.MSRPMSize, svm.PageSize)
	if err != nil {
		return nil, err
	}
	mem := vm.plat.Mem
	svm.NewIOPM(mem.Bytes(iopm, svm.IOPMSize)) // every port exits
	mp := svm.NewMSRPM(mem.Bytes(msrpm, svm.MSRPMSize))
	for _, msr := range passThroughMSRs {
		if err := mp.Set(msr, false, false); err != nil {
			return nil, err
		}
	}
	v.vmcb = vmcbAt(mem, v.vmcbPA)
	c := &v.vmcb.Control
	c.InterceptMisc1 = interceptsMisc1
	c.InterceptMisc2 = interceptsMisc2
	c.InterceptExceptions = interceptsExceptions
	for n := range 8 {
		c.InterceptDR |= svm.InterceptDRWrite(n)
	}
	c.InterceptCR = svm.InterceptCRWrite(0) | svm.InterceptCRWrite(4)
	c.IOPMBasePA = iopm
	c.MSRPMBasePA = msrpm
	c.GuestASID = vm.ASID
	c.TLBControl = svm.TLBControlFlushAll // first run with a (re)used ASID
	c.NPEnable = svm.NPEnableNP
	c.NCR3 = vm.NPT.Root()
	c.VIntr = svm.VIntrMasking
	return v, nil
}

// VMCB returns the vCPU's VMCB.
func (v *VCPU) VMCB() *svm.VMCB { return v.vmcb }

// VMCBPA returns the VMCB's host-physical address.
func (v *VCPU) VMCBPA() uint64 { return v.vmcbPA }

// handleExit dispatches one #VMEXIT. An event the exit interrupted
// (EXITINTINFO) is re-injected unless the handler injected another one or
// stopped the VM.
func (v *VCPU) handleExit() {
	c := &v.vmcb.Control
	code := svm.ExitCode(c.ExitCode)
	if code.Invalid() {
		// Explain the VMCB exactly as VMRUN refused it.
		st := &v.vmcb.State
		v.vm.stopFault(ClassInvalidState, "%v (CR0 %#x CR3 %#x CR4 %#x EFER %#x RFLAGS %#x DR6 %#x DR7 %#x CS %#x/%#x EVENTINJ %#x)",
			&svm.InvalidError{Reasons: svm.Check(v.vmcb)}, st.CR0, st.CR3, st.CR4, st.EFER, st.RFLAGS, st.DR6, st.DR7,
			st.CS.Selector, st.CS.Attrib, c.EventInj)
		return
	}
	c.TLBControl = svm.TLBControlNothing
	c.EventInj = 0
	pending := c.ExitIntInfo
	v.ExitsBy[min(uint64(code), maxCountedExit+1)]++

	switch code {
	case svm.ExitINTR, svm.ExitNMI:
		// A host interrupt (the preemption timer) or NMI: the host took
		// it when the world switch set GIF again. The guest resumes.
		v.preempted = true
	case svm.ExitVINTR:
		// The interrupt window opened: the next VMRUN injects.
		v.clearWindow()
	case svm.ExitCPUID:
		v.cpuid()
	case svm.ExitIOIO:
		v.ioio()
	case svm.ExitVMMCALL:
		v.hypercall()
	case svm.ExitMSR:
		v.msr()
	case svm.ExitHLT:
		v.hlt()
	case svm.ExitNPF:
		if v.vm.lazyFill.fault(c.ExitInfo2) {
			break // a page of a lazy restore not filled yet: now it is (lazy.go)
		}
		if c.ExitInfo1&(svm.NPFPresent|svm.NPFWrite) == svm.NPFPresent|svm.NPFWrite && v.vm.writeFault(c.ExitInfo2) {
			break // a write to a write-protected page, tracked (track.go)
		}
		if v.vm.MMIO.Claims(c.ExitInfo2) {
			v.mmio(c.ExitInfo2)
			break
		}
		v.vm.stopFault(ClassOutsideRAM, "nested page fault: guest touched guest-physical address %#x outside its %d KiB of RAM (%s) at RIP %#x",
			c.ExitInfo2, v.vm.Mem.Size>>10, svm.DescribeNPF(c.ExitInfo1), v.vmcb.State.RIP)
	case svm.ExitShutdown:
		v.vm.stopFault(ClassTripleFault, "triple fault (shutdown) at RIP %#x", v.vmcb.State.RIP)
	case svm.ExitCR0Write:
		v.writeCR0()
	case svm.ExitCR0Write + 4:
		v.writeCR4()
	case svm.ExitINVD, svm.ExitWBINVD:
		// No device of a guest writes memory behind the caches: a
		// (write-back and) invalidate has nothing to do, and the guest
		// may not stall the machine with it. QEMU TCG reports INVD as
		// a WBINVD exit: either instruction is skipped on either exit.
		if !v.skipOneOf(insn.OpWBINVD, insn.OpINVD) {
			v.skip(insn.OpINVD) // not either: stop, naming what is there
		}
	case svm.ExitDR0Write, svm.ExitDR0Write + 1, svm.ExitDR0Write + 2, svm.ExitDR0Write + 3,
		svm.ExitDR0Write + 4, svm.ExitDR0Write + 5, svm.ExitDR0Write + 6, svm.ExitDR0Write + 7:
		v.movToDR(int(code - svm.ExitDR0Write))
	case svm.ExitRDTSCP:
		v.rdtscp()
	case svm.ExitXSETBV:
		v.xsetbv()
	case svm.ExitRDPMC:
		// No performance counters are offered: with CR4.PCE a guest
		// would read the host's.
		v.inject(svm.Exception(svm.VectorGP, 0))
	case svm.ExitVMRUN, svm.ExitVMLOAD, svm.ExitVMSAVE, svm.ExitSTGI, svm.ExitCLGI,
		svm.ExitSKINIT, svm.ExitINVLPGA, svm.ExitMONITOR, svm.ExitMWAIT, svm.ExitMWAIT + 1, svm.ExitRDPRU:
		// SVM, MONITOR and RDPRU are hidden from the guest: their
		// instructions do not exist for it (RDPRU would read the host's
		// MPERF/APERF).
		v.inject(svm.Exception(svm.VectorUD, 0))
	case svm.ExitExcp0 + svm.VectorDB, svm.ExitExcp0 + svm.VectorAC:
		v.reflect(uint8(code - svm.ExitExcp0))
	case svm.ExitExcp0 + svm.VectorMC:
		v.vm.stopFault(ClassMachineCheck, "machine check (#MC) in the guest at RIP %#x", v.vmcb.State.RIP)
	case svm.ExitFERRFreeze:
		v.vm.stopFault(ClassUnexpectedExit, "x87 FERR freeze at RIP %#x", v.vmcb.State.RIP)
	default:
		v.vm.stopFault(ClassUnexpectedExit, "unexpected #VMEXIT %s (EXITINFO1 %#x, EXITINFO2 %#x) at RIP %#x",
			code, c.ExitInfo1, c.ExitInfo2, v.vmcb.State.RIP)
	}
	if pending&svm.EventValid != 0 && v.vm.stop == nil {
		switch {
		case c.EventInj == 0:
			c.EventInj = pending
		case isInterrupt(pending):
			// The handler injects an exception; the interrupt whose
			// delivery the exit cut short follows it.
			v.deferred = pending
		}
	}
}

// Debug status and control bits (APM vol. 2, 13.1.1).
const (
	dr6B0          = 1  // B0-B3 (bits 0-3): breakpoint condition i was met
	dr7RWShift     = 16 // R/W field of breakpoint i at bit 16+4i: 00 = instruction execution
	dr7RWMask      = 3
	dr7FieldStride = 4
)

// reflect delivers an intercepted #DB or #AC to the guest as the CPU would
// have. Both are faults except #DB traps (single step, data breakpoints,
// task switch); a fault is injected with RFLAGS.RF set, as the CPU pushes
// it, so that returning from the handler does not hit the same
// instruction breakpoint again. The guest's DR6 already holds the cause.
func (v *VCPU) reflect(vector uint8) {
	s := &v.vmcb.State
	fault := vector == svm.VectorAC
	if vector == svm.VectorDB {
		for i := 0; i < 4; i++ {
			rw := s.DR7 >> (dr7RWShift + dr7FieldStride*i) & dr7RWMask
			if s.DR6&(dr6B0<<i) != 0 && rw == 0 {
				fault = true // instruction breakpoint
			}
		}
	}
	if fault {
		s.RFLAGS |= svm.RFLAGSRF
	}
	v.inject(svm.Exception(vector, 0))
}

// maxCountedExit is the highest exit code counted on its own (NPF, 0x400).
const maxCountedExit = uint64(svm.ExitNPF)

// ExitProfile returns the exit counts by reason, most frequent first, as
// "REASON count" pairs.
func (v *VCPU) ExitProfile() []ExitCount {
	var p []ExitCount
	for code, n := range v.ExitsBy {
		if n == 0 {
			continue
		}
		name := svm.ExitCode(code).String()
		if uint64(code) > maxCountedExit {
			name = "other"
		}
		p = append(p, ExitCount{name, n})
	}
	sort.Slice(p, func(i, j int) bool { return p[i].N > p[j].N })
	return p
}

// ExitCount is one line of an exit profile.
type ExitCount struct {
	Reason string
	N      uint64
}

// inject queues an event for the next VMRUN. Real mode has no error codes:
// exceptions there push none (APM vol. 2, 8.4), so none is injected.
func (v *VCPU) inject(e svm.Event) {
	if v.vmcb.State.CR0&svm.CR0PE == 0 {
		e.HasError, e.Error = false, 0
	}
	v.vmcb.Control.EventInj = e.Encode()
}

// skip advances RIP past the intercepted instruction op: from NextRIP when
// the CPU saves it (NRIP save), else by decoding the guest's bytes. An
// instruction that is not op (the guest rewrote it) stops the VM.
func (v *VCPU) skip(op insn.Op) bool {
	if v.vm.plat.Features.NRIP() {
		v.vmcb.State.RIP = v.vmcb.Control.NextRIP
		v.vmcb.Control.InterruptShadow &^= svm.InterruptShadowMask
		return true
	}
	v.syncCPU()
	n, err := insn.Length(&v.vm.Mem, &v.cpu, op)
	if err != nil {
		v.vm.stopFault(ClassUndecodable, "cannot skip %v at RIP %#x: %v", op, v.vmcb.State.RIP, err)
		return false
	}
	v.advance(n)
	return true
}

// skipOneOf skips the instruction at RIP if it is one of ops, and
// reports whether it did.
func (v *VCPU) skipOneOf(ops ...insn.Op) bool {
	if v.vm.plat.Features.NRIP() {
		return v.skip(ops[0])
	}
	v.syncCPU()
	for _, op := range ops {
		if _, err := insn.Length(&v.vm.Mem, &v.cpu, op); err == nil {
			return v.skip(op)
		}
	}
	return false
}

// syncCPU gives the instruction decoder the guest's paging and code
// segment state from the VMCB.
func (v *VCPU) syncCPU() {
	s := &v.vmcb.State
	v.cpu.CR0, v.cpu.CR3, v.cpu.CR4, v.cpu.EFER = s.CR0, s.CR3, s.CR4, s.EFER
	v.cpu.CSBase, v.cpu.CSAttrib, v.cpu.RIP = s.CS.Base, s.CS.Attrib, s.RIP
}

// xstateBVOffset is XSTATE_BV in the XSAVE header (APM vol. 2, 11.5.2).
const xstateBVOffset = svm.XSaveLegacySize

// setXStateBV marks the x87 and SSE state of the XSAVE area as holding
// values (not the init state), so that XRSTOR loads the FXSAVE image: after
// reset, or after a restore wrote it.
func (v *VCPU) setXStateBV() {
	if len(v.xsave) > xstateBVOffset+8 {
		h := v.xsave[xstateBVOffset:]
		binary.LittleEndian.PutUint64(h, binary.LittleEndian.Uint64(h)|svm.XCR0X87|svm.XCR0SSE)
	}
}

// xsetbv emulates XSETBV: only XCR0, only at CPL 0 with CR4.OSXSAVE set,
// and only values with the components the host manages (APM vol. 3,
// XSETBV: #UD without OSXSAVE, #GP(0) otherwise).
func (v *VCPU) xsetbv() {
	s := &v.vmcb.State
	allowed := v.vm.plat.HostXCR0 & svm.XCR0Guest
	switch {
	case allowed == 0 || s.CR4&svm.CR4OSXSAVE == 0:
		v.inject(svm.Exception(svm.VectorUD, 0))
		return
	case s.CPL != 0 || uint32(v.Regs.RCX) != 0:
		v.inject(svm.Exception(svm.VectorGP, 0))
		return
	}
	val := v.Regs.RDX<<32 | s.RAX&0xffffffff
	if !svm.ValidXCR0(val, allowed) {
		v.inject(svm.Exception(svm.VectorGP, 0))
		return
	}
	if v.skip(insn.OpXSETBV) {
		v.xcr0 = val
	}
}

// checkXCR0 keeps the guest's XCR0 within what the world switch saves:
// where XSETBV is not intercepted (QEMU TCG), the guest sets XCR0 itself,
// checked only against the emulated CPU. Components beyond the host's are
// dropped (their state would not be preserved anyway).
func (v *VCPU) checkXCR0() {
	if v.vm.plat.HostXCR0 == 0 {
		v.xcr0 = svm.XCR0X87
		return
	}
	allowed := v.vm.plat.HostXCR0 & svm.XCR0Guest
	if !svm.ValidXCR0(v.xcr0, allowed) {
		x := v.xcr0&allowed | svm.XCR0X87
		if x&svm.XCR0SSE == 0 {
			x &^= svm.XCR0AVX
		}
		v.xcr0 = x
	}
}

// cpuid answers from the VM's CPUID model. Results are 32-bit, so the upper
// halves of RAX, RBX, RCX and RDX are cleared, as the CPU does.
func (v *VCPU) cpuid() {
	s := &v.vmcb.State
	leaf, sub := uint32(s.RAX), uint32(v.Regs.RCX)
	a, b, c, d := v.vm.CPUID.Lookup(leaf, sub)
	// The bits that follow the guest's own state, as on the CPU.
	switch {
	case leaf == leafFeatures && s.CR4&svm.CR4OSXSAVE != 0 && c&f1ecxXSAVE != 0:
		c |= f1ecxOSXSAVE
	case leaf == leafXSAVE && sub == 0 && a != 0:
		b = uint32(svm.XSaveSize(v.xcr0))
	}
	if !v.skip(insn.OpCPUID) {
		return
	}
	s.RAX, v.Regs.RBX, v.Regs.RCX, v.Regs.RDX = uint64(a), uint64(b), uint64(c), uint64(d)
}

func (v *VCPU) msr() {
	s := &v.vmcb.State
	msr := uint32(v.Regs.RCX)
	if v.vmcb.Control.ExitInfo1 == 0 { // RDMSR
		val, ok := v.readMSR(msr)
		if !ok {
			v.inject(svm.Exception(svm.VectorGP, 0))
			return
		}
		if v.skip(insn.OpRDMSR) {
			s.RAX, v.Regs.RDX = val&0xffffffff, val>>32
		}
		return
	}
	val := v.Regs.RDX<<32 | s.RAX&0xffffffff
	if !v.writeMSR(msr, val) {
		v.inject(svm.Exception(svm.VectorGP, 0))
		return
	}
	v.skip(insn.OpWRMSR)
}

// rdtscp returns the guest's TSC and its TSC_AUX (emulated: the host's
// TSC_AUX is not the guest's).
func (v *VCPU) rdtscp() {
	s := &v.vmcb.State
	tsc := v.vm.plat.TSC() + v.vmcb.Control.TSCOffset
	if v.skip(insn.OpRDTSCP) {
		s.RAX, v.Regs.RDX, v.Regs.RCX = tsc&0xffffffff, tsc>>32, v.msrs.TSCAux
	}
}

// sizeMask is the part of RAX a port access of n bytes uses.
func sizeMask(n uint8) uint64 { return 1<<(8*uint64(n)) - 1 }

func (v *VCPU) ioio() {
	s, c := &v.vmcb.State, &v.vmcb.Control
	io := svm.DecodeIOIO(c.ExitInfo1)
	if io.String {
		v.vm.stopFault(ClassNotEmulated, "string port I/O (INS/OUTS) on port %#x at RIP %#x is not emulated", io.Port, s.RIP)
		return
	}
	if io.In {
		if io.Port >= COM1Base && io.Port < COM1Base+COM1Ports {
			v.pollInput()
		}
		val := uint64(v.vm.Bus.In(io.Port, io.Size))
		if io.Size == 4 {
			s.RAX = val // a 32-bit result clears the upper half
		} else {
			s.RAX = s.RAX&^sizeMask(io.Size) | val
		}
	} else {
		v.vm.Bus.Out(io.Port, io.Size, uint32(s.RAX&sizeMask(io.Size)))
	}
	if io.Port >= COM1Base && io.Port < COM1Base+COM1Ports {
		v.vm.updateUARTIRQ()
	}
	s.RIP = c.ExitInfo2 // IOIO always saves the next RIP (APM vol. 2, 15.10.2)
	c.InterruptShadow &^= svm.InterruptShadowMask
}

// pollInput moves console input into the guest UART, as much as it takes;
// the rest waits in the VM's input queue, so no typed byte is lost.
func (v *VCPU) pollInput() {
	vm := v.vm
	vm.pollConsole()
	n := 0
	for n < len(vm.input) && vm.UART.Receive(vm.input[n]) {
		n++
	}
	vm.input = vm.input[:copy(vm.input, vm.input[n:])]
	if n > 0 {
		vm.updateUARTIRQ()
	}
}

// hlt: a guest halted with interrupts disabled can never wake up, so it is
// stopped with a report. With interrupts enabled the vCPU waits (VM.idle)
// until it has an interrupt to take or the next console service, while the
// host sleeps.
func (v *VCPU) hlt() {
	s := &v.vmcb.State
	if s.RFLAGS&svm.RFLAGSIF == 0 {
		v.vm.stopFault(ClassDeadHalt, "guest halted with interrupts disabled (CLI; HLT) at RIP %#x: it can never wake up", s.RIP)
		return
	}
	v.pollInput()
	if v.skip(insn.OpHLT) {
		v.halted = true
	}
}

// Debug register bits (APM vol. 2, 13.1.1): what a MOV to DR7 may set
// (L0-G3, LE, GE, GD, the R/W and LEN fields; bit 10 reads as one, the
// others as 0), and to DR6 (B0-B3, BD, BS, BT; the rest reads as fixed
// ones, bit 12 as 0).
const (
	dr7Writable = 0xFFFF_23FF
	dr6Writable = 0xE00F
	dr6Fixed    = 0xFFFF_0FF0
)

// movToDR emulates MOV DRn, reg. Every debug register write is
// intercepted so that the guest's breakpoints exist only in its VMCB and
// its saved DR0-DR3, which the world switch loads: under QEMU TCG (7.2) a
// debug register the guest wrote itself arms breakpoints on the host that
// survive #VMEXIT, and one that matches later crashes QEMU (found by the
// random guests, through DR7, DR5 and DR0-DR3). DR4 and DR5 are DR6 and
// DR7 while CR4.DE is clear, else #UD. The CPU raises #GP for CPL > 0
// before the intercept; it is checked again here.
func (v *VCPU) movToDR(dr int) {
	s := &v.vmcb.State
	code, mode, ok := v.fetchInsn(fmt.Sprintf("MOV to DR%d", dr))
	if !ok {
		return
	}
	m, err := insn.DecodeMovToDR(code, mode)
	if err != nil || m.DR != dr {
		v.vm.stopFault(ClassUndecodable, "DR%d write exit at RIP %#x: %v (decoded %+v)", dr, s.RIP, err, m)
		return
	}
	if s.CPL != 0 {
		v.inject(svm.Exception(svm.VectorGP, 0))
		return
	}
	if dr == 4 || dr == 5 {
		if s.CR4&svm.CR4DE != 0 {
			v.inject(svm.Exception(svm.VectorUD, 0))
			return
		}
		dr += 2
	}
	g := v.gprs()
	val := g[m.GPR]
	if mode != 64 {
		val &= 0xFFFF_FFFF
	}
	switch dr {
	case 0, 1, 2, 3:
		*[]*uint64{&v.Regs.DR0, &v.Regs.DR1, &v.Regs.DR2, &v.Regs.DR3}[dr] = val
	case 6, 7:
		if val>>32 != 0 {
			v.inject(svm.Exception(svm.VectorGP, 0))
			return
		}
		if dr == 6 {
			s.DR6 = val&dr6Writable | dr6Fixed
		} else {
			s.DR7 = val&dr7Writable | resetDR7
		}
	}
	v.advance(m.Len)
}

// fetchInsn reads the instruction bytes at the guest's RIP, with the CPU
// mode to decode them in; on failure it stops the VM naming what.
func (v *VCPU) fetchInsn(what string) (code []byte, mode int, ok bool) {
	s := &v.vmcb.State
	v.syncCPU()
	n, err := insn.Fetch(&v.vm.Mem, &v.cpu, v.ibuf[:])
	if n == 0 {
		v.vm.stopFault(ClassUndecodable, "%s at RIP %#x: cannot fetch the instruction: %v", what, s.RIP, err)
		return nil, 0, false
	}
	return v.ibuf[:n], v.cpu.Mode(), true
}

// advance moves RIP past an emulated or skipped instruction of n bytes
// (NextRIP where the CPU saved it; else n, IP wrapping in its segment's
// size) and ends any interrupt shadow.
func (v *VCPU) advance(n int) {
	s, c := &v.vmcb.State, &v.vmcb.Control
	if v.vm.plat.Features.NRIP() && c.NextRIP != 0 { // as KVM: a CPU may leave it 0
		s.RIP = c.NextRIP
	} else {
		s.RIP += uint64(n)
		switch v.cpu.Mode() { // synced by the caller's decode
		case 16:
			s.RIP &= 0xffff // IP wraps within the code segment
		case 32:
			s.RIP &= 0xffffffff
		}
	}
	c.InterruptShadow &^= svm.InterruptShadowMask
}

// writeCR0 emulates a write to CR0 (MOV CR0, CLTS, LMSW), intercepted so
// that a value the architecture refuses raises #GP instead of reaching
// the VMCB: QEMU TCG accepts, for example, clearing CR0.PG in 64-bit
// mode, and the VMRUN after it left QEMU's own CPU state broken (found by
// the random guests). The #GP conditions are those of MOV CRn (APM vol.
// 3) and of paging activation (APM vol. 2, 14.6.1); setting CR0.PG with
// EFER.LME activates long mode (EFER.LMA), clearing it leaves it.
func (v *VCPU) writeCR0() {
	s, c := &v.vmcb.State, &v.vmcb.Control
	code, mode, ok := v.fetchInsn("CR0 write")
	if !ok {
		return
	}
	w, err := insn.DecodeCRWrite(code, mode)
	if err == nil && w.Kind == insn.CRWriteMov && w.CR != 0 {
		err = fmt.Errorf("a write to CR%d, not CR0", w.CR)
	}
	if err != nil {
		class := ClassUndecodable
		if errors.Is(err, insn.ErrNotEmulated) {
			class = ClassNotEmulated // LMSW from memory
		}
		v.vm.stopFault(class, "CR0 write exit at RIP %#x: %v", s.RIP, err)
		return
	}
	if s.CPL != 0 {
		v.inject(svm.Exception(svm.VectorGP, 0))
		return
	}
	old, g := s.CR0, v.gprs()
	var val uint64
	switch w.Kind {
	case insn.CRWriteCLTS:
		val = old &^ svm.CR0TS
	case insn.CRWriteLMSW:
		// Bits 3:0 (PE, MP, EM, TS); PE can be set but not cleared.
		const msw = svm.CR0PE | svm.CR0MP | svm.CR0EM | svm.CR0TS
		val = old&^msw | g[w.GPR]&msw | old&svm.CR0PE
	default:
		val = g[w.GPR]
		if mode != 64 {
			val &= 0xFFFF_FFFF
		}
	}
	if cr0Refused(old, val, s) {
		v.inject(svm.Exception(svm.VectorGP, 0))
		return
	}
	switch {
	case old&svm.CR0PG == 0 && val&svm.CR0PG != 0 && s.EFER&svm.EFERLME != 0:
		s.EFER |= svm.EFERLMA
	case old&svm.CR0PG != 0 && val&svm.CR0PG == 0:
		s.EFER &^= svm.EFERLMA
	}
	s.CR0 = val | svm.CR0ET // ET is fixed at 1
	if (old^s.CR0)&(svm.CR0PG|svm.CR0PE|svm.CR0WP|svm.CR0CD|svm.CR0NW) != 0 {
		// Translations change. Flush by ASID needs a CPU feature;
		// flushing everything is always valid and this is rare.
		c.TLBControl = svm.TLBControlFlushAll
	}
	v.advance(w.Len)
}

// cr4Base are the CR4 bits every vCPU has (APM vol. 2, 3.1.3); the
// others follow the VM's CPUID model (cr4Allowed).
const cr4Base = svm.CR4VME | svm.CR4PVI | svm.CR4TSD | svm.CR4DE | svm.CR4PSE | svm.CR4PAE |
	svm.CR4MCE | svm.CR4PGE | svm.CR4PCE | svm.CR4OSFXSR | svm.CR4OSXMMEXCPT

// CPUID bits that allow CR4 bits (APM vol. 3, appendix E).
const (
	cpuid1ECXXSAVE     = 1 << 26
	cpuid7EBXFSGSBASE  = 1 << 0
	cpuid7EBXSMEP      = 1 << 7
	cpuid7EBXSMAP      = 1 << 20
	cpuid7ECXUMIP      = 1 << 2
	cr4PagingSensitive = svm.CR4PSE | svm.CR4PAE | svm.CR4PGE | svm.CR4SMEP | svm.CR4SMAP
)

// cr4Allowed returns the CR4 bits a guest may set: the base set and what
// its CPUID model offers. PCIDE, PKE, LA57 and CET are never offered.
func (v *VCPU) cr4Allowed() uint64 {
	m := v.vm.CPUID
	allowed := uint64(cr4Base)
	if _, _, c, _ := m.Lookup(1, 0); c&cpuid1ECXXSAVE != 0 {
		allowed |= svm.CR4OSXSAVE
	}
	_, b, c, _ := m.Lookup(7, 0)
	for _, f := range []struct {
		have bool
		bit  uint64
	}{{b&cpuid7EBXFSGSBASE != 0, svm.CR4FSGSBASE}, {b&cpuid7EBXSMEP != 0, svm.CR4SMEP},
		{b&cpuid7EBXSMAP != 0, svm.CR4SMAP}, {c&cpuid7ECXUMIP != 0, svm.CR4UMIP}} {
		if f.have {
			allowed |= f.bit
		}
	}
	return allowed
}

// writeCR4 emulates MOV CR4, intercepted so that bits the VM's CPU model
// does not have raise #GP (and never reach VMRUN, which would refuse them
// or give the guest a feature its state is not switched for), as does
// clearing PAE in long mode (APM vol. 3, "MOV CRn").
func (v *VCPU) writeCR4() {
	s, c := &v.vmcb.State, &v.vmcb.Control
	code, mode, ok := v.fetchInsn("CR4 write")
	if !ok {
		return
	}
	w, err := insn.DecodeCRWrite(code, mode)
	if err == nil && (w.Kind != insn.CRWriteMov || w.CR != 4) {
		err = fmt.Errorf("not a MOV to CR4")
	}
	if err != nil {
		v.vm.stopFault(ClassUndecodable, "CR4 write exit at RIP %#x: %v", s.RIP, err)
		return
	}
	g := v.gprs()
	val := g[w.GPR]
	if mode != 64 {
		val &= 0xFFFF_FFFF
	}
	if s.CPL != 0 || val&^v.cr4Allowed() != 0 || s.EFER&svm.EFERLMA != 0 && val&svm.CR4PAE == 0 {
		v.inject(svm.Exception(svm.VectorGP, 0))
		return
	}
	if (s.CR4^val)&cr4PagingSensitive != 0 {
		c.TLBControl = svm.TLBControlFlushAll // translations change
	}
	s.CR4 = val
	v.advance(w.Len)
}

// cr0Refused reports whether writing val to CR0 (now old) raises #GP.
func cr0Refused(old, val uint64, s *svm.StateSaveArea) bool {
	pgOn := old&svm.CR0PG == 0 && val&svm.CR0PG != 0
	switch {
	case val>>32 != 0:
		return true // reserved bits 63:32
	case val&svm.CR0PG != 0 && val&svm.CR0PE == 0:
		return true // paging without protection
	case val&svm.CR0NW != 0 && val&svm.CR0CD == 0:
		return true // not write-through with caching enabled
	case pgOn && s.EFER&svm.EFERLME != 0 && s.CR4&svm.CR4PAE == 0:
		return true // long mode needs PAE
	case old&svm.CR0PG != 0 && val&svm.CR0PG == 0 && s.EFER&svm.EFERLMA != 0 && s.CS.Attrib&svm.SegL != 0:
		return true // paging off from 64-bit code
	}
	return false
}
