package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/devices/acpipm"
	"tamavisor/kernel/devices/ioapic"
	"tamavisor/kernel/devices/lapic"
	"tamavisor/kernel/devices/legacy"
	"tamavisor/kernel/devices/pic"
	"tamavisor/kernel/devices/pit"
	"tamavisor/kernel/devices/rtc"
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// tamavisor's chunks (docs/snapshot-format.md, "tamavisor's chunks"). The
// manifest and RAM chunks are the snapshot package's own.
const (
	// ChunkVM holds what a VM is made of before any state: its name and
	// RAM size. It comes right after the manifest so RAM can be placed as
	// it streams in.
	ChunkVM        = "vm"
	ChunkVMVersion = 1
	// ChunkVCPU holds one vCPU: the VMCB state save area, the GPRs the
	// VMCB does not hold, pending event, interrupt shadow, guest TSC, MSRs
	// kept outside the VMCB, and the FXSAVE area.
	ChunkVCPU        = "vcpu"
	ChunkVCPUVersion = 2 // 2: deferred interrupt, halt state, XCR0 and XSAVE area, DR0-DR3

	devUART  = "uart16550"
	devDebug = "debugport"

	fxAreaSize = 512
	maxVMName  = 32 // the snapshot header's limit

	// fxMXCSR is the offset of MXCSR in the FXSAVE area. FXRSTOR of a
	// value with bits set outside the CPU's MXCSR_MASK faults in the
	// hypervisor (Platform.MXCSRMask).
	fxMXCSR          = 24
	mxcsrDefaultMask = 0xffbf // MXCSR_MASK when the platform does not say (APM vol. 2, 11.5.4)

	// Limits for decoding a snapshot (hostile input).
	maxChunkBody = 1 << 20 // manifest, vm, vcpu and device chunks are small
	maxRetained  = 4 << 20
)

// stateful is a device model that saves and restores its state.
type stateful interface {
	MarshalState() []byte
	UnmarshalState(version uint16, b []byte) error
}

// deviceModels are the device models this tamavisor saves and restores:
// their snapshot name, newest state version, whether a restore needs their
// chunk, and the VM's instance. The manifest, the save and the restore all
// walk this one table.
var deviceModels = []struct {
	name     string
	version  uint16
	required bool
	model    func(vm *VM) stateful
}{
	{devUART, devices.UART16550StateVersion, true, func(vm *VM) stateful { return vm.UART }},
	{devDebug, devices.DebugPortStateVersion, false, func(vm *VM) stateful { return vm.Debug }},
	{"lapic", lapic.StateVersion, false, func(vm *VM) stateful { return vm.PC.LAPIC }},
	{"ioapic", ioapic.StateVersion, false, func(vm *VM) stateful { return vm.PC.IOAPIC }},
	{"pic", pic.StateVersion, false, func(vm *VM) stateful { return vm.PC.PIC }},
	{"pit", pit.StateVersion, false, func(vm *VM) stateful { return vm.PC.PIT }},
	{"rtc", rtc.StateVersion, false, func(vm *VM) stateful { return vm.PC.RTC }},
	{"post", legacy.StateVersion, false, func(vm *VM) stateful { return vm.PC.POST }},
	{"pci-host", legacy.StateVersion, false, func(vm *VM) stateful { return vm.PC.PCIHost }},
	{"i8042", legacy.StateVersion, false, func(vm *VM) stateful { return vm.PC.I8042 }},
	{"acpi-pm", acpipm.StateVersion, false, func(vm *VM) stateful { return vm.PC.PM }},
}

// vmConfig is the body of ChunkVM.
type vmConfig struct {
	Name    string
	MemSize uint64
}

// vcpuState is the body of ChunkVCPU, field by field.
type vcpuState struct {
	Save        svm.StateSaveArea // the architectural fields listed in encodeVCPU
	Regs        svm.Regs
	Shadow      uint64 // VMCB INTERRUPT_SHADOW
	EventInj    uint64 // event to deliver on the next VMRUN
	VIntr       uint64 // V_TPR, V_IRQ... (VMCB offset 0x060)
	GuestTSC    uint64 // the TSC the guest read at the pause
	TSCAux      uint64
	MTRRDefType uint64
	FX          [fxAreaSize]byte
	Deferred    uint64 // an interrupt taken from the APIC, not yet injected (v2)
	Halted      bool   // in HLT with interrupts enabled (v2)
	XCR0        uint64 // the guest's XCR0 (v2; version 1: x87 only)
	XSave       []byte // the XSAVE area after the FXSAVE image: header, AVX (v2)
}

// VMConfig and VCPUState are the decoded values (snapshot.Chunk.Value) of
// the vm chunk (a VMConfig) and the vcpu chunk (a *VCPUState) that
// Registry's decoders return, for host tools that show them
// (tamavisor-snap inspect).
type (
	VMConfig  = vmConfig
	VCPUState = vcpuState
)

// maxXSaveExt bounds the saved XSAVE area beyond the FXSAVE image.
const maxXSaveExt = 4096

func segments(s *svm.StateSaveArea) []*svm.Segment {
	return []*svm.Segment{&s.ES, &s.CS, &s.SS, &s.DS, &s.FS, &s.GS, &s.GDTR, &s.LDTR, &s.IDTR, &s.TR}
}

func saveRegs(s *svm.StateSaveArea) []*uint64 {
	return []*uint64{&s.EFER, &s.CR0, &s.CR2, &s.CR3, &s.CR4, &s.DR6, &s.DR7,
		&s.RFLAGS, &s.RIP, &s.RSP, &s.RAX, &s.STAR, &s.LSTAR, &s.CSTAR, &s.SFMASK,
		&s.KernelGSBase, &s.SysenterCS, &s.SysenterESP, &s.SysenterEIP, &s.GPAT}
}

func gprs(r *svm.Regs) []*uint64 {
	return []*uint64{&r.RBX, &r.RCX, &r.RDX, &r.RSI, &r.RDI, &r.RBP,
		&r.R8, &r.R9, &r.R10, &r.R11, &r.R12, &r.R13, &r.R14, &r.R15}
}

func encodeVCPU(st *vcpuState) []byte {
	e := snapshot.NewEncoder(1024)
	for _, seg := range segments(&st.Save) {
		e.PutU16(seg.Selector)
		e.PutU16(seg.Attrib)
		e.PutU32(seg.Limit)
		e.PutU64(seg.Base)
	}
	e.PutU8(st.Save.CPL)
	for _, r := range saveRegs(&st.Save) {
		e.PutU64(*r)
	}
	for _, r := range gprs(&st.Regs) {
		e.PutU64(*r)
	}
	for _, v := range []uint64{st.Shadow, st.EventInj, st.VIntr, st.GuestTSC, st.TSCAux, st.MTRRDefType} {
		e.PutU64(v)
	}
	e.PutBytes(st.FX[:])
	e.PutU64(st.Deferred)
	halted := uint8(0)
	if st.Halted {
		halted = 1
	}
	e.PutU8(halted)
	e.PutU64(st.XCR0)
	e.PutBytes(st.XSave)
	for _, r := range debugRegs(&st.Regs) {
		e.PutU64(*r)
	}
	return e.Bytes()
}

// debugRegs are DR0-DR3 (version 2; version 1: zero).
func debugRegs(r *svm.Regs) []*uint64 { return []*uint64{&r.DR0, &r.DR1, &r.DR2, &r.DR3} }

// decodeVCPU1 decodes version 1 (no deferred interrupt, not halted).
func decodeVCPU1(d *snapshot.Decoder) (any, error) {
	st, err := decodeVCPUFields(d)
	if err != nil {
		return nil, err
	}
	return st, d.Finish()
}

func decodeVCPU(d *snapshot.Decoder) (any, error) {
	st, err := decodeVCPUFields(d)
	if err != nil {
		return nil, err
	}
	st.Deferred = d.U64()
	switch d.U8() {
	case 0:
	case 1:
		st.Halted = true
	default:
		d.Failf("halt state is neither 0 nor 1")
	}
	if st.Deferred != 0 && !isInterrupt(st.Deferred) || st.Deferred != 0 && st.Deferred&svm.EventValid == 0 {
		d.Failf("deferred event %#x is not a valid interrupt", st.Deferred)
	}
	st.XCR0 = d.U64()
	st.XSave = d.Bytes()
	for _, r := range debugRegs(&st.Regs) {
		*r = d.U64()
	}
	if d.Err() == nil && !svm.ValidXCR0(st.XCR0, svm.XCR0Guest) {
		d.Failf("XCR0 %#x is not a valid x87/SSE/AVX combination", st.XCR0)
	}
	if d.Err() == nil && len(st.XSave) > maxXSaveExt {
		d.Failf("XSAVE area of %d bytes beyond the FXSAVE image (at most %d)", len(st.XSave), maxXSaveExt)
	}
	return st, d.Finish()
}

func decodeVCPUFields(d *snapshot.Decoder) (*vcpuState, error) {
	st := &vcpuState{}
	for _, seg := range segments(&st.Save) {
		seg.Selector = d.U16()
		seg.Attrib = d.U16()
		seg.Limit = d.U32()
		seg.Base = d.U64()
	}
	st.Save.CPL = d.U8()
	for _, r := range saveRegs(&st.Save) {
		*r = d.U64()
	}
	for _, r := range gprs(&st.Regs) {
		*r = d.U64()
	}
	for _, v := range []*uint64{&st.Shadow, &st.EventInj, &st.VIntr, &st.GuestTSC, &st.TSCAux, &st.MTRRDefType} {
		*v = d.U64()
	}
	fx := d.Bytes()
	if d.Err() == nil && len(fx) != fxAreaSize {
		d.Failf("FXSAVE area of %d bytes, want %d", len(fx), fxAreaSize)
	}
	copy(st.FX[:], fx)
	return st, d.Err()
}

func encodeVMConfig(c vmConfig) []byte {
	e := snapshot.NewEncoder(64)
	e.PutString(c.Name)
	e.PutU64(c.MemSize)
	return e.Bytes()
}

func decodeVMConfig(d *snapshot.Decoder) (any, error) {
	c := vmConfig{Name: d.String(), MemSize: d.U64()}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	if len(c.Name) == 0 || len(c.Name) > maxVMName || sanitize([]byte(c.Name)) != c.Name {
		return nil, fmt.Errorf("VM name %q is not 1-%d printable ASCII characters", c.Name, maxVMName)
	}
	if c.MemSize == 0 || c.MemSize%svm.PageSize != 0 || c.MemSize > MaxGuestRAM {
		return nil, fmt.Errorf("guest RAM size %#x not a multiple of 4 KiB up to %d MiB", c.MemSize, MaxGuestRAM>>20)
	}
	return c, nil
}

// Registry returns the codecs of every chunk tamavisor writes: a snapshot
// with a chunk this build does not know, or a newer version of one, is
// refused by name.
func Registry() *snapshot.Registry { return registry(nil) }

// registry builds the Registry; onVM, if set, sees the vm chunk as it
// streams by (before RAM).
func registry(onVM func(vmConfig)) *snapshot.Registry {
	r := snapshot.NewRegistry()
	vmDecoder := decodeVMConfig
	if onVM != nil {
		vmDecoder = func(d *snapshot.Decoder) (any, error) {
			v, err := decodeVMConfig(d)
			if err == nil {
				onVM(v.(vmConfig))
			}
			return v, err
		}
	}
	r.MustRegister(snapshot.Codec{Type: ChunkVM, Current: ChunkVMVersion,
		Decoders: map[uint16]snapshot.DecodeFunc{1: vmDecoder}})
	r.MustRegister(snapshot.Codec{Type: ChunkVCPU, Current: ChunkVCPUVersion,
		Decoders: map[uint16]snapshot.DecodeFunc{1: decodeVCPU1, 2: decodeVCPU},
		// Version 1 had no interrupt controller: nothing deferred, and a
		// HLT completed at once, so never halted.
		Upgrades: map[uint16]snapshot.UpgradeFunc{1: func(v any) (any, error) {
			v.(*vcpuState).XCR0 = svm.XCR0X87 // the reset value
			return v, nil
		}}})
	for _, d := range deviceModels {
		if err := r.RegisterRaw(snapshot.DevicePrefix+d.name, d.version); err != nil {
			panic(err)
		}
	}
	return r
}

// captureVCPU takes the vCPU's state at an exit boundary.
func (v *VCPU) capture() *vcpuState {
	c := &v.vmcb.Control
	st := &vcpuState{
		Save:        v.vmcb.State,
		Regs:        v.Regs,
		Shadow:      c.InterruptShadow,
		EventInj:    c.EventInj,
		VIntr:       c.VIntr & svm.VIntrTPRMask, // V_TPR; the rest is tamavisor's
		GuestTSC:    v.vm.plat.TSC() + c.TSCOffset,
		TSCAux:      v.msrs.TSCAux,
		MTRRDefType: v.msrs.MTRRDefType,
		Deferred:    v.deferred,
		Halted:      v.halted,
		XCR0:        v.xcr0,
	}
	if len(v.xsave) > svm.XSaveLegacySize {
		st.XSave = append([]byte(nil), v.xsave[svm.XSaveLegacySize:]...)
	}
	copy(st.FX[:], v.fx[:])
	return st
}

// apply installs a saved vCPU state. The TSC offset is chosen so that the
// guest's TSC continues from the value it had at the pause: time spent
// saved on disk is invisible to the guest's TSC, which never goes back.
func (v *VCPU) apply(st *vcpuState) error {
	// The architectural state first, field by field, as a CPU would hold
	// it: a hostile snapshot is refused here naming the field, before
	// VMRUN sees it (svm.ValidateState; svm.Check below for the rest).
	if bad := svm.ValidateState(&st.Save); len(bad) > 0 {
		return &RefusedError{"saved vCPU state: " + strings.Join(bad, "; ")}
	}
	if st.Save.EFER&^(eferWritable|svm.EFERLMA|svm.EFERSVME) != 0 {
		return &RefusedError{fmt.Sprintf("saved vCPU state: EFER %#x has bits a guest cannot set", st.Save.EFER)}
	}
	s := &v.vmcb.State
	*s = svm.StateSaveArea{}
	for i, seg := range segments(&st.Save) {
		*segments(s)[i] = *seg
	}
	s.CPL = st.Save.CPL
	src := saveRegs(&st.Save)
	for i, r := range saveRegs(s) {
		*r = *src[i]
	}
	s.EFER |= svm.EFERSVME
	mask := v.vm.plat.MXCSRMask
	if mask == 0 {
		mask = mxcsrDefaultMask
	}
	if mx := binary.LittleEndian.Uint32(st.FX[fxMXCSR:]); mx&^mask != 0 {
		return &RefusedError{fmt.Sprintf("saved MXCSR %#x has reserved bits set", mx)}
	}
	// Only V_TPR is guest state; no virtual interrupt, VGIF or AVIC bit is
	// ever set by tamavisor.
	if st.VIntr&^svm.VIntrTPRMask != 0 {
		return &RefusedError{fmt.Sprintf("saved virtual interrupt control %#x uses features tamavisor does not manage", st.VIntr)}
	}
	c := &v.vmcb.Control
	c.InterruptShadow = st.Shadow & svm.InterruptShadowMask
	c.EventInj = st.EventInj
	c.VIntr = st.VIntr | svm.VIntrMasking
	c.TSCOffset = st.GuestTSC - v.vm.plat.TSC()
	v.Regs = st.Regs
	v.msrs = msrState{TSCAux: st.TSCAux, MTRRDefType: st.MTRRDefType}
	v.deferred, v.halted = st.Deferred, st.Halted
	if err := v.applyXSave(st); err != nil {
		return err
	}
	copy(v.fx[:], st.FX[:])
	if bad := svm.Check(v.vmcb); len(bad) > 0 {
		return fmt.Errorf("saved vCPU state would be refused by VMRUN: %v", bad)
	}
	return nil
}

// XSAVE header fields (APM vol. 2, 11.5.2): XSTATE_BV, XCOMP_BV, then 48
// reserved bytes that must be zero for XRSTOR.
const (
	xcompBVOffset = 8
	xsaveHdrEnd   = svm.XSaveHeaderSize
)

// applyXSave installs the saved XCR0 and extended state, refusing what
// this host cannot hold (AVX state where the CPU or the world switch has
// none) or what would make XRSTOR fault in the hypervisor.
func (v *VCPU) applyXSave(st *vcpuState) error {
	allowed := v.vm.plat.HostXCR0&svm.XCR0Guest | svm.XCR0X87
	if !svm.ValidXCR0(st.XCR0, allowed) {
		return &RefusedError{fmt.Sprintf("the guest's XCR0 %#x uses state this host cannot run (XSAVE components %#x)", st.XCR0, allowed)}
	}
	v.xcr0 = st.XCR0
	ext := v.xsave[svm.XSaveLegacySize:]
	for i := range ext {
		ext[i] = 0
	}
	if len(st.XSave) >= xsaveHdrEnd {
		h := st.XSave[:xsaveHdrEnd]
		bv := binary.LittleEndian.Uint64(h)
		if bv&^(allowed|svm.XCR0SSE) != 0 { // x87 and SSE are the FXSAVE image: always restorable
			return &RefusedError{fmt.Sprintf("the saved XSAVE state holds components %#x this host cannot restore (it has %#x)", bv, allowed)}
		}
		for _, b := range h[xcompBVOffset:] {
			if b != 0 {
				return &RefusedError{"the saved XSAVE header has compacted-format or reserved bits set"}
			}
		}
		if len(st.XSave) > len(ext) && bv&svm.XCR0AVX != 0 {
			return &RefusedError{"the saved XSAVE area is larger than this host's"}
		}
		copy(ext, st.XSave)
	}
	v.setXStateBV()
	return nil
}

// manifest describes the VM for a snapshot.
func (vm *VM) manifest() *snapshot.Manifest {
	m := &snapshot.Manifest{
		VCPUs:  1,
		Memory: []snapshot.MemRegion{{GPA: 0, Size: vm.Mem.Size, Kind: snapshot.MemRAM, Name: "ram"}},
		Properties: []snapshot.Property{
			{Key: "hypervisor", Value: "tamavisor"},
			{Key: "guest-abi", Value: strconv.Itoa(ABIVersion)},
			{Key: "vm.name", Value: vm.Name},
		},
	}
	for _, d := range deviceModels {
		m.Devices = append(m.Devices, snapshot.DeviceEntry{Name: d.name, StateVersion: d.version, Required: d.required})
	}
	for _, e := range vm.CPUID.Entries {
		m.CPUID = append(m.CPUID, snapshot.CPUIDLeaf{Leaf: e.Leaf, Subleaf: e.Subleaf, EAX: e.EAX, EBX: e.EBX, ECX: e.ECX, EDX: e.EDX})
	}
	return m
}

// WriteSnapshot writes the VM, paused at an exit boundary, into w.
// progress, if set, is told the RAM bytes written and the total to write
// (the pages that are not all zero), reaching total at the end.
func (vm *VM) WriteSnapshot(w *snapshot.Writer, progress func(written, total uint64)) error {
	if err := vm.fillAll(); err != nil {
		return err
	}
	return vm.freeze().write(w, ramSource{&vm.Mem}, snapshot.RAMOptions{Progress: progress})
}

// frozen is the state of a VM at a save request, encoded: every chunk of
// its snapshot but RAM.
type frozen struct {
	manifest *snapshot.Manifest
	config   []byte   // the vm chunk
	vcpu     []byte   // the vcpu chunk
	devices  [][]byte // in deviceModels order
	ram      uint64
}

// freeze encodes the VM's state at this exit boundary.
func (vm *VM) freeze() *frozen {
	f := &frozen{
		manifest: vm.manifest(),
		config:   encodeVMConfig(vmConfig{Name: vm.Name, MemSize: vm.Mem.Size}),
		vcpu:     encodeVCPU(vm.VCPU.capture()),
		ram:      vm.Mem.Size,
	}
	for _, d := range deviceModels {
		f.devices = append(f.devices, d.model(vm).MarshalState())
	}
	return f
}

// write writes the frozen state and the RAM src holds into w.
func (f *frozen) write(w *snapshot.Writer, src snapshot.MemorySource, opts snapshot.RAMOptions) error {
	if err := w.WriteManifest(f.manifest); err != nil {
		return err
	}
	if err := w.WriteChunk(ChunkVM, 0, ChunkVMVersion, snapshot.Required, f.config); err != nil {
		return err
	}
	if err := w.WriteChunk(ChunkVCPU, 0, ChunkVCPUVersion, snapshot.Required, f.vcpu); err != nil {
		return err
	}
	for i, d := range deviceModels {
		if err := w.WriteDevice(d.name, 0, f.devices[i]); err != nil {
			return err
		}
	}
	return w.WriteRAM(src, []snapshot.MemRange{{GPA: 0, Size: f.ram}}, opts)
}

// Save writes a snapshot of the VM to store (crash-safe: the previous
// snapshot stays valid until the new one is committed): an increment on
// the last snapshot when the VM tracked its writes since (track.go), else
// a full snapshot. RAM stays write-protected after, to track the next.
func (vm *VM) Save(store *snapshot.Store, key []byte, created int64, progress func(written, total uint64)) (*snapshot.Commit, error) {
	return vm.save(store, key, created, progress, false)
}

// save is Save; byGuest: the guest asked (it may not overwrite the
// operator's snapshot).
func (vm *VM) save(store *snapshot.Store, key []byte, created int64, progress func(written, total uint64), byGuest bool) (*snapshot.Commit, error) {
	// A lazy restore still filling RAM completes first: a snapshot is
	// of all of it.
	if err := vm.fillAll(); err != nil {
		return nil, err
	}
	var dirty []byte
	if vm.track.on {
		dirty = vm.track.dirty
	}
	h := snapshot.Header{Created: created, VMName: vm.Name, VMID: vm.ID}
	c, err := vm.store(store, key, h, vm.freeze(), ramSource{&vm.Mem}, dirty, vm.track.base, false, byGuest,
		snapshot.RAMOptions{Progress: progress})
	if err == nil {
		err = vm.protect(c)
	}
	return c, err
}

// Increments: a save carries only the pages written since base when at
// most incrementMax of RAM was written and the increment fits in base's
// slot (the store chains it after base, snapshot.SaveOptions.Base).
const incrementMax = 0.5

// store writes fz and the RAM src holds to the store: an increment on
// base carrying the pages dirty marks, if there is a base and the store
// takes it (not stale, room in the chain), else a full snapshot. A live
// save cannot fall back once RAM was read (its copies are gone): an
// increment that does not fit fails instead. A guest's save never takes
// the record of the operator's snapshot (guestMayWriteFull).
func (vm *VM) store(st *snapshot.Store, key []byte, h snapshot.Header, fz *frozen, src snapshot.MemorySource,
	dirty []byte, base *snapshot.Commit, live, byGuest bool, ram snapshot.RAMOptions) (*snapshot.Commit, error) {
	// The previous snapshot is not read back (TrustCommit): a save costs
	// the writing of one snapshot only.
	opts := snapshot.SaveOptions{Header: h, Key: key, TrustCommit: true}
	if vm.incremental(st, base, dirty, byGuest) {
		inc, r := opts, ram
		inc.Base = base
		r.Carried = func(int) []byte { return dirty }
		r.BaseGeneration, r.BaseDigest = base.Generation, base.Digest
		filled := false
		c, err := st.Save(inc, func(w *snapshot.Writer) error {
			filled = true
			if live {
				// No fallback to a full save from here: the pages the
				// increment does not carry need no copies.
				vm.track.carriedOnly(dirty)
			}
			return fz.write(w, src, r)
		})
		if err == nil {
			vm.track.lastBase, vm.track.lastCarried = base.Generation, popcount(dirty)
		}
		if err == nil || live && filled ||
			!errors.Is(err, snapshot.ErrStaleBase) && !errors.Is(err, snapshot.ErrChainFull) {
			return c, err
		}
	}
	if byGuest {
		if err := vm.guestMayWriteFull(st); err != nil {
			return nil, err
		}
	}
	vm.track.lastBase = 0
	return st.Save(opts, func(w *snapshot.Writer) error { return fz.write(w, src, ram) })
}

// incremental reports whether a save carries only the dirty pages, on
// base: there is one, the increment is worth it, it fits, and (for a
// guest's save) it does not take the operator's record.
func (vm *VM) incremental(st *snapshot.Store, base *snapshot.Commit, dirty []byte, byGuest bool) bool {
	return base != nil && dirty != nil && vm.incrementFits(st, base, dirty) &&
		!(byGuest && vm.plat.operatorGen != 0 && vm.overwritesOperator(st, base))
}

// incrementFits reports whether an increment carrying the dirty pages is
// worth writing and fits after base (a bound: every dirty page stored).
func (vm *VM) incrementFits(st *snapshot.Store, base *snapshot.Commit, dirty []byte) bool {
	pages := vm.Mem.Size / svm.PageSize
	n := popcount(dirty)
	if float64(n) > incrementMax*float64(pages) {
		return false
	}
	const overhead = 64 << 10 // every chunk but RAM, headers, bitmaps' slack
	need := n*svm.PageSize + 2*uint64(len(dirty)) + (n*svm.PageSize/snapshot.RAMBlockSize+1)*64 + overhead
	return int64(need) <= st.Room(base)
}

// overwritesOperator reports whether an increment on base would take the
// record position of the operator's snapshot (the slot's other one).
func (vm *VM) overwritesOperator(st *snapshot.Store, base *snapshot.Commit) bool {
	recs, err := st.Records()
	if err != nil || base.Slot < 0 || base.Slot > 1 {
		return true
	}
	prev := recs[base.Slot].Previous
	return prev != nil && prev.Generation == vm.plat.operatorGen
}

func popcount(b []byte) uint64 {
	var n uint64
	for _, x := range b {
		n += uint64(bits.OnesCount8(x))
	}
	return n
}

// restoreSink places RAM pages of a snapshot into the VM that the "vm"
// chunk, decoded just before, described.
type restoreSink struct {
	p   *Platform
	cfg *vmConfig
	vm  *VM
	err error
	// uncleared: RAM is neither cleared nor mapped (a lazy restore).
	uncleared bool
}

func (s *restoreSink) ensure() error {
	if s.vm != nil || s.err != nil {
		return s.err
	}
	if s.cfg == nil {
		s.err = errors.New("RAM before the vm chunk")
		return s.err
	}
	// The CPUID model comes from the manifest once decoding is done.
	s.vm, s.err = buildVM(s.p, s.cfg.Name, s.cfg.MemSize, &CPUIDModel{}, s.uncleared)
	return s.err
}

func (s *restoreSink) WriteAt(b []byte, gpa int64) (int, error) {
	if err := s.ensure(); err != nil {
		return 0, err
	}
	if err := s.vm.Mem.WriteGPA(uint64(gpa), b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// RefusedError is a snapshot this hypervisor will not resume.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "restore refused: " + e.Reason }

// newestCommit returns the store's newest valid commit record.
func newestCommit(store *snapshot.Store) (*snapshot.Commit, error) {
	recs, err := store.Records()
	if err != nil {
		return nil, err
	}
	var newest *snapshot.Commit
	var why []error
	for _, r := range recs {
		switch {
		case r.Commit != nil && (newest == nil || r.Commit.Generation > newest.Generation):
			newest = r.Commit
		case r.Err != nil:
			why = append(why, fmt.Errorf("slot %d: %w", r.Slot, r.Err))
		}
	}
	if newest == nil {
		if len(why) == 0 {
			return nil, fmt.Errorf("%w on the snapshot disk (it is empty)", snapshot.ErrNoSnapshot)
		}
		return nil, fmt.Errorf("%w on the snapshot disk: %w", snapshot.ErrNoSnapshot, errors.Join(why...))
	}
	return newest, nil
}

// Restore rebuilds the VM of the newest committed snapshot in store. It
// refuses (no partial resume) a snapshot that is corrupt, fails
// authentication, needs a chunk, device model or version this build does
// not have, or saw CPU features the host does not offer. The snapshot is
// read once: its RAM streams into a fresh VM that is destroyed if anything
// turns out wrong.
func Restore(p *Platform, store *snapshot.Store, key []byte) (*VM, *snapshot.Commit, error) {
	newest, err := newestCommit(store)
	if err != nil {
		return nil, nil, err
	}
	sink := &restoreSink{p: p}
	// The vm chunk, seen as it streams by, says where RAM goes.
	reg := registry(func(c vmConfig) { sink.cfg = &c })
	hz := float64(p.TSCHz)
	if hz == 0 {
		hz = 1e9
	}
	var progress func(read, total uint64)
	if p.Console != nil && p.TSC != nil {
		progress = progressPrinter(p.Console, "restore", p.TSC, hz)
	}
	snap, err := store.Decode(newest, snapshot.DecodeOptions{Registry: reg, Key: key, Memory: sink,
		MaxRAM: MaxGuestRAM, MaxChunkSize: maxChunkBody, MaxRetained: maxRetained, Progress: progress})
	vm := sink.vm
	if err == nil {
		if vm == nil {
			err = sink.ensure() // a VM whose RAM is all zero
			vm = sink.vm
		}
	}
	if err == nil {
		err = rebuild(p, vm, snap)
	}
	if err != nil {
		if vm != nil {
			vm.Destroy()
		}
		return nil, nil, fmt.Errorf("generation %d: %w", newest.Generation, err)
	}
	p.operatorGen = newest.Generation // the operator chose to resume it: keep it
	// The next save can be an increment on the snapshot resumed from.
	if err := vm.protect(newest); err != nil {
		vm.Destroy()
		return nil, nil, err
	}
	return vm, newest, nil
}

// rebuild applies a decoded snapshot's configuration and state to vm.
func rebuild(p *Platform, vm *VM, snap *snapshot.Snapshot) error {
	vm.ID = snap.Header.VMID
	m := snap.Manifest
	if m.VCPUs != 1 {
		return &RefusedError{fmt.Sprintf("%d vCPUs (this tamavisor runs 1)", m.VCPUs)}
	}
	if len(m.Memory) != 1 || m.Memory[0].GPA != 0 || m.Memory[0].Kind != snapshot.MemRAM || m.Memory[0].Size != vm.Mem.Size {
		return &RefusedError{fmt.Sprintf("memory map %v (this tamavisor has one RAM region at 0 of the vm chunk's size)", m.Memory)}
	}
	for _, d := range m.Devices {
		var v uint16
		for _, known := range deviceModels {
			if known.name == d.Name {
				v = known.version
			}
		}
		if v == 0 {
			if d.Required {
				return &RefusedError{fmt.Sprintf("device model %q is not in this tamavisor", d.Name)}
			}
			continue
		}
		if d.StateVersion > v || d.Instance != 0 {
			return &RefusedError{fmt.Sprintf("device %q instance %d state version %d (this tamavisor has instance 0 up to version %d)", d.Name, d.Instance, d.StateVersion, v)}
		}
	}
	if r := snap.RAM; r == nil || r.Incremental || len(r.Ranges) != 1 || r.Ranges[0].GPA != 0 ||
		r.Ranges[0].Pages*svm.PageSize != vm.Mem.Size {
		return &RefusedError{"the RAM chunk does not hold all guest RAM (missing, incremental, or partial)"}
	}
	model := &CPUIDModel{}
	for _, l := range m.CPUID {
		model.Entries = append(model.Entries, CPUIDEntry{l.Leaf, l.Subleaf, l.EAX, l.EBX, l.ECX, l.EDX})
	}
	if err := model.Compatible(p.cpuidModel()); err != nil {
		return &RefusedError{err.Error()}
	}
	vm.CPUID = model
	vc := snap.Find(ChunkVCPU, 0)
	if vc == nil {
		return &RefusedError{"no vcpu chunk"}
	}
	if err := vm.VCPU.apply(vc.Value.(*vcpuState)); err != nil {
		return err
	}
	for _, d := range deviceModels {
		c := snap.Find(snapshot.DevicePrefix+d.name, 0)
		if c == nil {
			continue // optional, or a device added since: reset state
		}
		body, _ := c.Value.([]byte)
		if err := d.model(vm).UnmarshalState(c.Version, body); err != nil {
			return fmt.Errorf("device %q: %w", d.name, err)
		}
	}
	vm.PC.restored(vm)
	vm.VCPU.vmcb.Control.TLBControl = svm.TLBControlFlushAll
	return nil
}

// Hypercall SNAPSHOT (docs/guest-abi.md): RBX bit 0 asks to power off after
// a successful save. RAX returns 0 after a save in the running guest, 1 in
// a guest resumed from that snapshot, or an error.
const (
	SnapshotPowerOff = 1 << 0
	// SnapshotLive saves beside the running guest (livesave.go): the
	// call returns once the state is taken; SNAPSHOT_WAIT waits for the
	// save to be on disk.
	SnapshotLive = 1 << 1
	// SnapshotFull writes a full snapshot even where an increment on the
	// last one could be written (a new base for the next increments).
	SnapshotFull = 1 << 2
	resumedRAX   = 1
)

// ErrNoDisk is returned by a snapshot request without a snapshot disk.
var ErrNoDisk = errors.New("no snapshot disk (make qemu DISK=out/disk.img: a virtio-blk drive; a board: an NVMe drive)")

// snapshot saves the VM now, reporting progress on the console and the
// result on out. On error the previous snapshot stays valid and the guest
// keeps running.
func (vm *VM) snapshot(out io.Writer, byGuest bool) (*snapshot.Commit, error) {
	p := vm.plat
	if p.Store == nil {
		return nil, ErrNoDisk
	}
	vm.live.finish() // one save at a time: one in progress completes first
	console := vm.hostOut()
	hz := float64(p.TSCHz)
	if hz == 0 {
		hz = 1e9
	}
	start := p.TSC()
	progress := progressPrinter(console, "snapshot", p.TSC, hz)
	var created int64
	if p.Now != nil {
		created = p.Now()
	}
	c, err := vm.save(p.Store, p.SnapshotKey, created, progress, byGuest)
	if errors.Is(err, ErrProtected) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot failed, the guest keeps running and the previous snapshot stays valid: %w", err)
	}
	secs := float64(p.TSC()-start) / hz
	if _, toConsole := out.(hostWriter); !toConsole && out != p.Console {
		out = io.MultiWriter(console, out)
	}
	fmt.Fprintf(out, "tamavisor: snapshot saved: generation %d, slot %d, %s, %s on disk for %s of RAM, guest paused %.3f s (%.1f MiB/s of RAM)\n",
		c.Generation, c.Slot, vm.saveKind(c), size(uint64(c.Length)), size(vm.Mem.Size), secs, float64(vm.Mem.Size)/(1<<20)/secs)
	vm.recordSave(SaveStats{Generation: c.Generation, Bytes: uint64(c.Length), Cycles: p.TSC() - start,
		Incremental: c.Incremental(p.Store), Phases: p.Store.LastSaveProfile()})
	if !byGuest {
		p.operatorGen = c.Generation
	}
	return c, nil
}

// ErrProtected is returned for a guest's SNAPSHOT that would overwrite the
// operator's newest snapshot.
var ErrProtected = errors.New("the guest's snapshot would overwrite the operator's newest snapshot: refused")

// guestMayWriteFull keeps a rollback point the guest cannot erase: a
// full save goes into the slot that does not hold the newest snapshot,
// over its chain, so a guest saving repeatedly would overwrite a snapshot
// the operator took (from the monitor or the control channel, or restored
// from) in this boot. Such a save is refused until the operator saves
// again. (Increments never overwrite a record of their own chain but the
// one before their base: VM.incremental keeps those off the operator's.)
func (vm *VM) guestMayWriteFull(st *snapshot.Store) error {
	g := vm.plat.operatorGen
	if g == 0 {
		return nil
	}
	recs, err := st.Records()
	if err != nil {
		return err
	}
	newest, target := uint64(0), 0
	for _, r := range recs {
		if r.Commit != nil && r.Commit.Generation > newest {
			newest, target = r.Commit.Generation, 1-r.Slot
		}
	}
	for _, c := range []*snapshot.Commit{recs[target].Commit, recs[target].Previous} {
		if c != nil && c.Generation == g {
			return ErrProtected
		}
	}
	return nil
}

// progressMin is the volume (bytes to write or read) below which no
// progress is printed: it would be over before a line could be read.
const progressMin = 32 << 20

// progressPrinter returns a progress function for a save or restore
// (bytes done over bytes to do) that prints every 10% up to 100% with the
// rate so far, for volumes of progressMin and more.
func progressPrinter(out io.Writer, what string, tsc func() uint64, hz float64) func(done, total uint64) {
	start, next := tsc(), uint64(10)
	return func(done, total uint64) {
		if total < progressMin {
			return
		}
		for pct := min(done*100/total, 100); pct >= next && next <= 100; next += 10 {
			secs := max(float64(tsc()-start)/hz, 1e-9)
			fmt.Fprintf(out, "tamavisor: %s %d%% (%s, %.1f MiB/s)\n", what, next, size(done), float64(done)/(1<<20)/secs)
		}
	}
}

// FormatSize formats a byte count for messages: KiB below 1 MiB, else MiB.
func FormatSize(n uint64) string { return size(n) }

// size formats a byte count for messages: KiB below 1 MiB, else MiB.
func size(n uint64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// SaveStats describes the last save.
type SaveStats struct {
	Generation uint64
	Bytes      uint64 // snapshot stream length
	Cycles     uint64 // TSC cycles from the request to the commit (the guest's pause unless Live)
	// Live: the guest ran during the save, paused at most PauseCycles at
	// a time; Copies pages were copied before the guest wrote them,
	// Waits writes of the guest waited for the disk to read the page.
	Live        bool
	PauseCycles uint64
	Copies      uint64
	Waits       uint64
	// Incremental: only the pages written since the last snapshot.
	Incremental bool
	// Phases are the store's times of the save's phases (in the store's
	// clock ticks, the TSC on the hardware).
	Phases snapshot.SaveProfile
}

// saveKind says what kind of snapshot c is, for reports.
func (vm *VM) saveKind(c *snapshot.Commit) string {
	if t := &vm.track; t.lastBase != 0 && c.Incremental(vm.plat.Store) {
		return fmt.Sprintf("increment on generation %d (%d pages written since)", t.lastBase, t.lastCarried)
	}
	return "full"
}

// maxSaveLog bounds VM.Saves.
const maxSaveLog = 16

func (vm *VM) recordSave(s SaveStats) {
	vm.LastSave = s
	if len(vm.Saves) < maxSaveLog {
		vm.Saves = append(vm.Saves, s)
	}
}

// snapshotHypercall completes a SNAPSHOT hypercall: the saved guest will
// see RAX=1 when resumed; the running one sees 0 or the error.
func (vm *VM) snapshotHypercall() {
	s := &vm.VCPU.vmcb.State
	flags := vm.VCPU.Regs.RBX
	if flags&^(SnapshotPowerOff|SnapshotLive|SnapshotFull) != 0 || flags&SnapshotPowerOff != 0 && flags&SnapshotLive != 0 {
		s.RAX = errno(EINVAL)
		return
	}
	if flags&SnapshotFull != 0 {
		vm.live.finish()    // a save in progress would set the base on its end
		vm.track.base = nil // no base: the save is full
	}
	s.RAX = resumedRAX // what the guest sees if resumed from this save
	var err error
	if flags&SnapshotLive != 0 {
		vm.liveResult = nil
		err = vm.startLive(vm.hostOut(), true, func(err error) { vm.liveResult = &err })
	} else {
		_, err = vm.snapshot(vm.hostOut(), true)
	}
	s.RAX = snapshotRAX(err)
	if err == nil && flags&SnapshotPowerOff != 0 {
		vm.stop = &Stop{Kind: StopSuspended, Class: ClassSuspended, Reason: "suspended to disk"}
	}
	if err != nil {
		fmt.Fprintf(vm.hostOut(), "tamavisor: %v\n", err)
	}
}

// snapshotRAX is a SNAPSHOT result as the guest sees it.
func snapshotRAX(err error) uint64 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNoDisk):
		return errno(ENODEV)
	case errors.Is(err, ErrProtected):
		return errno(EBUSY)
	case errors.Is(err, errLiveUnavailable):
		return errno(ENOSYS)
	}
	return errno(EIO)
}

// SNAPSHOT_WAIT flags (RBX).
const (
	// SnapshotPoll: do not wait; 1 while the guest's live save runs.
	SnapshotPoll  = 1 << 0
	inProgressRAX = 1
)

// snapshotWait completes a SNAPSHOT_WAIT hypercall: the guest's live save
// in progress completes (the guest held), and RAX gets its result; 0 if
// the guest started none since its last wait. With SnapshotPoll it
// returns 1 at once while the save runs.
func (vm *VM) snapshotWait(flags uint64) uint64 {
	if flags&^SnapshotPoll != 0 {
		return errno(EINVAL)
	}
	running := vm.live != nil && vm.live.byGuest
	if running && flags&SnapshotPoll != 0 {
		return inProgressRAX
	}
	if running {
		vm.live.finish()
	}
	r := vm.liveResult
	vm.liveResult = nil
	if r == nil {
		return 0
	}
	return snapshotRAX(*r)
}

// errno is a negative hypercall error as the guest sees it in RAX.
func errno(e int64) uint64 { return uint64(e) }

// ramSource reads guest RAM for the snapshot writer.
type ramSource struct{ mem *GuestMemory }

func (r ramSource) ReadAt(b []byte, gpa int64) (int, error) {
	if err := r.mem.ReadGPA(uint64(gpa), b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// UUID formats a VM identity as RFC 9562 text.
func UUID(id [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16])
}

// View lets the snapshot writer read guest pages in place (snapshot.Viewer).
func (r ramSource) View(gpa, n uint64) ([]byte, bool) {
	b, err := r.mem.Slice(gpa, n)
	return b, err == nil
}

// View lets the snapshot reader read pages straight into the new VM's RAM
// (snapshot.Viewer).
func (s *restoreSink) View(gpa, n uint64) ([]byte, bool) {
	if s.ensure() != nil {
		return nil, false // WriteAt reports the error
	}
	b, err := s.vm.Mem.Slice(gpa, n)
	return b, err == nil
}
