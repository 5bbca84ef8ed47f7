package kernel

import (
	"bytes"
	"strings"
	"testing"

	"tamavisor/kernel/devices"
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// withStore gives the env a snapshot store on an in-memory disk.
func (e *env) withStore(dev snapshot.BlockDevice) *snapshot.Store {
	e.t.Helper()
	st, err := snapshot.Open(dev, snapshot.StoreOptions{BlockSize: 64 << 10})
	if err != nil {
		e.t.Fatal(err)
	}
	e.plat.Store = st
	return st
}

// dirty makes a recognisable guest: RAM pattern, registers, device and FPU
// state.
func dirty(vm *VM) {
	for gpa := uint64(0x100000); gpa < 0x180000; gpa += 0x3000 {
		vm.Mem.WriteGPA(gpa, []byte("tamavisor page "+string(rune('a'+gpa/0x3000%26))))
	}
	vm.VCPU.Regs = svm.Regs{RBX: 0x1111, RCX: 0x2222, RDX: 0x3333, RSI: 0x4444, RDI: 0x5555, RBP: 0x6666, R8: 8, R12: 12, R15: 0xf15}
	vm.VCPU.vmcb.State.RSP = 0x9000
	vm.VCPU.vmcb.State.CR2 = 0xdead000
	vm.Bus.Out(COM1Base+7, 1, 0x5a) // UART scratch register
	vm.VCPU.fx[100] = 0x77
	vm.VCPU.msrs.TSCAux = 3
}

func snapshotStep(e *env, flags uint64) step {
	return e.insnExit(svm.ExitVMMCALL, encVMMCALL, func(v *svm.VMCB, r *svm.Regs) {
		v.State.RAX = HCSnapshot
		r.RBX = flags
	})
}

func TestSaveRestoreRoundTrip(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		dev := snapshot.NewMemDevice(32<<20, 512)
		e.withStore(dev)
		vm := e.boot(Mode64)
		dirty(vm)
		vm.VCPU.vmcb.Control.TSCOffset = 500
		es := e.resume(snapshotStep(e, 0))
		after := last(es)
		if after.vmcb.State.RAX != 0 {
			t.Fatalf("running guest got RAX %#x after SNAPSHOT, want 0; console:\n%s", after.vmcb.State.RAX, e.console.String())
		}
		if !strings.Contains(e.console.String(), "snapshot saved: generation 1") {
			t.Errorf("console: %q", e.console.String())
		}
		savedRIP := after.vmcb.State.RIP
		savedTSC := e.tsc + 500 // the guest's TSC at the pause

		// A fresh machine (new pool, new TSC) restores from the same disk.
		e2 := newEnv(t, e.plat.Features)
		e2.tsc = 50 // host TSC much lower than at save: the guest must not go back
		st := e2.withStore(dev)
		rvm, c, err := Restore(e2.plat, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer rvm.Destroy()
		if c.Generation != 1 || rvm.Name != "test" || rvm.Mem.Size != testMem {
			t.Errorf("restored %+v name %q size %#x", c, rvm.Name, rvm.Mem.Size)
		}
		if !bytes.Equal(rvm.Mem.ram, vm.Mem.ram) {
			t.Error("RAM differs after restore")
		}
		s := &rvm.VCPU.vmcb.State
		if s.RIP != savedRIP || s.RAX != resumedRAX || s.RSP != 0x9000 || s.CR2 != 0xdead000 {
			t.Errorf("RIP %#x RAX %#x RSP %#x CR2 %#x", s.RIP, s.RAX, s.RSP, s.CR2)
		}
		if s.EFER&svm.EFERSVME == 0 || s.CR3 != vm.VCPU.vmcb.State.CR3 || s.CS != vm.VCPU.vmcb.State.CS {
			t.Errorf("control state lost: EFER %#x CR3 %#x CS %+v", s.EFER, s.CR3, s.CS)
		}
		want := vm.VCPU.Regs
		want.RBX = 0 // the hypercall's flags argument was in RBX
		if r := rvm.VCPU.Regs; r.RCX != want.RCX || r.R15 != want.R15 || r.RBP != want.RBP {
			t.Errorf("GPRs %+v, want %+v", r, want)
		}
		if got := rvm.plat.TSC() + rvm.VCPU.vmcb.Control.TSCOffset; got != savedTSC {
			t.Errorf("guest TSC resumes at %d, saved %d", got, savedTSC)
		}
		if rvm.Bus.In(COM1Base+7, 1) != 0x5a || rvm.VCPU.fx[100] != 0x77 || rvm.VCPU.msrs.TSCAux != 3 {
			t.Error("device, FPU or MSR state lost")
		}
		if len(rvm.CPUID.Entries) != len(vm.CPUID.Entries) {
			t.Error("CPUID model not restored from the manifest")
		}
		if r := svm.Check(rvm.VCPU.vmcb); len(r) != 0 {
			t.Errorf("restored VMCB fails checks: %v", r)
		}
	})
}

func TestRestoreRefusesCorruption(t *testing.T) {
	e := newEnv(t, featNRIP)
	dev := snapshot.NewMemDevice(32<<20, 512)
	st := e.withStore(dev)
	vm := e.boot(Mode16)
	dirty(vm)
	c, err := vm.Save(st, nil, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	free := e.pool.FreeBytes()
	dev.Data[c.Offset+c.Length/2] ^= 0x40 // inside the RAM chunk
	_, _, err = Restore(e.plat, st, nil)
	if err == nil || !strings.Contains(err.Error(), `chunk "ram"`) {
		t.Fatalf("corrupt RAM: %v", err)
	}
	if e.pool.FreeBytes() != free {
		t.Error("a refused restore leaked memory")
	}
	// An empty disk has nothing to restore.
	e2 := newEnv(t, featNRIP)
	if _, _, err := Restore(e2.plat, e2.withStore(snapshot.NewMemDevice(1<<20, 512)), nil); err == nil || !strings.Contains(err.Error(), "no valid snapshot") {
		t.Errorf("empty disk: %v", err)
	}
}

func TestRestoreRefusesUnknownDeviceAndCPU(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode16)
	// A snapshot from a "newer tamavisor" with a virtio-net device.
	dev := snapshot.NewMemDevice(32<<20, 512)
	st := e.withStore(dev)
	err := craft(st, vm, vmConfig{"x", vm.Mem.Size}, vm.VCPU.capture(),
		snapshot.DeviceEntry{Name: "virtio-net", StateVersion: 1, Required: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Restore(e.plat, st, nil); err == nil || !strings.Contains(err.Error(), "virtio-net") {
		t.Errorf("unknown device: %v", err)
	}

	// A guest that saw a CPU feature this host lacks.
	dev2 := snapshot.NewMemDevice(32<<20, 512)
	st2 := e.withStore(dev2)
	vm.CPUID.Entries = append([]CPUIDEntry(nil), vm.CPUID.Entries...)
	for i := range vm.CPUID.Entries {
		if vm.CPUID.Entries[i].Leaf == leafExtFeats {
			vm.CPUID.Entries[i].EDX |= 1 << 30 // 3DNow!Ext, not in fakeCPUID
		}
	}
	if _, err := vm.Save(st2, nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Restore(e.plat, st2, nil); err == nil || !strings.Contains(err.Error(), "features this host lacks") {
		t.Errorf("CPU features: %v", err)
	}
}

func TestSnapshotDiskTooSmall(t *testing.T) {
	e := newEnv(t, featNRIP)
	dev := snapshot.NewMemDevice(2<<20, 512) // slots of ~1 MiB for 4 MiB of RAM
	e.withStore(dev)
	vm := e.boot(Mode16)
	for gpa := uint64(0); gpa < testMem; gpa += 4096 {
		vm.Mem.WriteGPA(gpa, []byte{1}) // no zero page to elide
	}
	es := e.resume(snapshotStep(e, SnapshotPowerOff), exitStep(svm.ExitCPUID, 0, 0))
	if got := es[1].vmcb.State.RAX; got != errno(EIO) {
		t.Errorf("RAX %#x, want EIO", got)
	}
	if !strings.Contains(e.console.String(), "snapshot failed, the guest keeps running") {
		t.Errorf("console: %q", e.console.String())
	}
}

func TestSnapshotPowerOff(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withStore(snapshot.NewMemDevice(32<<20, 512))
	e.boot(Mode16)
	stop := e.stopped(snapshotStep(e, SnapshotPowerOff), exitStep(svm.ExitCPUID, 0, 0))
	if stop.Kind != StopSuspended {
		t.Errorf("stop %v", stop)
	}
}

func TestMonitor(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withStore(snapshot.NewMemDevice(32<<20, 512))
	e.boot(Mode16)
	e.input = []byte("ab\x1dinfo\nbogus\nsnapshot\ncontinue\n")
	e.resume(e.insnExit(svm.ExitCPUID, encCPUID, nil))
	out := e.console.String()
	for _, want := range []string{"tamavisor> info", "vm test:", "unknown command \"bogus\"",
		"snapshot saved: generation 1", "back to the guest console"} {
		if !strings.Contains(out, want) {
			t.Errorf("monitor output lacks %q:\n%s", want, out)
		}
	}
	if string(e.vm.input) != "ab" {
		t.Errorf("bytes before the escape should reach the guest, got %q", e.vm.input)
	}

	e = newEnv(t, featNRIP)
	e.boot(Mode16)
	e.input = []byte("\x1dquit\n")
	if stop := e.stopped(e.insnExit(svm.ExitCPUID, encCPUID, nil), e.insnExit(svm.ExitCPUID, encCPUID, nil)); stop.Kind != StopQuit {
		t.Errorf("quit: %v", stop)
	}
}

func TestControlChannel(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withStore(snapshot.NewMemDevice(32<<20, 512))
	e.boot(Mode16)
	ctl := []byte("snapshot\nfly\n")
	var out bytes.Buffer
	e.plat.ControlIn = func() (byte, bool) {
		if len(ctl) == 0 {
			return 0, false
		}
		b := ctl[0]
		ctl = ctl[1:]
		return b, true
	}
	e.plat.ControlOut = &out
	e.resume(e.insnExit(svm.ExitCPUID, encCPUID, nil))
	got := out.String()
	if !strings.Contains(got, "snapshot saved: generation 1") || !strings.Contains(got, "\nok\n") ||
		!strings.Contains(got, "error: unknown command \"fly\"") {
		t.Errorf("control channel answered:\n%s", got)
	}
}

// craft saves a snapshot of vm whose vm and vcpu chunks are cfg and vs, as
// a hostile or newer writer could, with extra devices (state {1}).
func craft(st *snapshot.Store, vm *VM, cfg vmConfig, vs *vcpuState, extra ...snapshot.DeviceEntry) error {
	_, err := st.Save(snapshot.SaveOptions{Header: snapshot.Header{VMName: "x"}}, func(w *snapshot.Writer) error {
		m := vm.manifest()
		m.Devices = append(m.Devices, extra...)
		if err := w.WriteManifest(m); err != nil {
			return err
		}
		if err := w.WriteChunk(ChunkVM, 0, 1, snapshot.Required, encodeVMConfig(cfg)); err != nil {
			return err
		}
		if err := w.WriteChunk(ChunkVCPU, 0, ChunkVCPUVersion, snapshot.Required, encodeVCPU(vs)); err != nil {
			return err
		}
		for _, d := range deviceModels {
			if err := w.WriteDevice(d.name, 0, d.model(vm).MarshalState()); err != nil {
				return err
			}
		}
		for _, d := range extra {
			if err := w.WriteDevice(d.Name, d.Instance, []byte{1}); err != nil {
				return err
			}
		}
		return w.WriteRAM(ramSource{&vm.Mem}, []snapshot.MemRange{{GPA: 0, Size: vm.Mem.Size}}, snapshot.RAMOptions{})
	})
	return err
}

// byteSource feeds b one byte at a time, as a serial port does.
func byteSource(b *[]byte) func() (byte, bool) {
	return func() (byte, bool) {
		if len(*b) == 0 {
			return 0, false
		}
		c := (*b)[0]
		*b = (*b)[1:]
		return c, true
	}
}

// TestControlChannelStaleBytes reproduces the "iinfo" failure: a client
// sent "info", gave up after the first byte was taken (QEMU dropped the
// rest when it closed the connection), and a new client sent "info". The
// new command starts with the line-kill byte, so the stale "i" is dropped;
// its tag marks the answer as its own.
func TestControlChannelStaleBytes(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode16)
	ctl := []byte("i\x15info #t1\n")
	var out bytes.Buffer
	e.plat.ControlIn, e.plat.ControlOut = byteSource(&ctl), &out
	e.resume(e.insnExit(svm.ExitCPUID, encCPUID, nil))
	got := out.String()
	if !strings.HasPrefix(got, "begin #t1\nvm test:") || !strings.HasSuffix(got, "ok #t1\n") || strings.Contains(got, "iinfo") {
		t.Errorf("control channel answered:\n%s", got)
	}
	ctl = []byte("fly #t2\n")
	out.Reset()
	e = newEnv(t, featNRIP)
	e.boot(Mode16)
	e.plat.ControlIn, e.plat.ControlOut = byteSource(&ctl), &out
	e.resume(e.insnExit(svm.ExitCPUID, encCPUID, nil))
	if got := out.String(); got != "begin #t2\nerror #t2: unknown command \"fly\" (try help)\n" {
		t.Errorf("tagged error answered %q", got)
	}
}

// TestControlChannelWhileMonitorOpen: with the console monitor waiting for
// input, control-channel commands are still answered (and a quit there
// ends the VM and the monitor).
func TestControlChannelWhileMonitorOpen(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode16)
	e.input = []byte("\x1d")
	ctl := []byte("\x15info #a\n\x15quit #b\n")
	var out bytes.Buffer
	idles := 0
	e.plat.ControlIn, e.plat.ControlOut = byteSource(&ctl), &out
	e.plat.Idle = func() bool { idles++; return idles < 100 }
	stop := e.stopped(e.insnExit(svm.ExitCPUID, encCPUID, nil), e.insnExit(svm.ExitCPUID, encCPUID, nil))
	if stop.Kind != StopQuit {
		t.Errorf("VM ended with %v, want quit", stop)
	}
	got := out.String()
	if !strings.Contains(got, "begin #a\nvm test:") || !strings.Contains(got, "ok #a\n") || !strings.HasSuffix(got, "begin #b\nok #b\n") {
		t.Errorf("control channel answered:\n%s", got)
	}
}

// TestMonitorEscapeDuringUARTRead reproduces the TestMonitor hang: the
// escape byte was taken while the guest read its UART (pollInput), then
// the service that opens the monitor polled the console again and handed
// the bytes typed after the escape ("info", "quit") to the guest's UART
// queue; the monitor then waited for input that had already gone.
func TestMonitorEscapeDuringUARTRead(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode16)
	e.input = []byte("ab\x1dinfo\nquit\n")
	idles := 0
	e.plat.Idle = func() bool { idles++; return idles < 100 }
	e.plat.ServiceEvery = 1 << 30 // service only when a pause is pending
	stop := e.stopped(ioStep(COM1Base+devices.LSR, 1, true, 0), e.insnExit(svm.ExitCPUID, encCPUID, nil))
	if stop.Kind != StopQuit {
		t.Errorf("VM ended with %v, want quit from the monitor", stop)
	}
	out := e.console.String()
	if !strings.Contains(out, "tamavisor> info") || !strings.Contains(out, "vm test:") {
		t.Errorf("monitor output:\n%s", out)
	}
	var got []byte
	for i := 0; i < 8; i++ {
		if e.vm.UART.In(COM1Base+devices.LSR, 1)&devices.LSR_DR == 0 {
			break
		}
		got = append(got, byte(e.vm.UART.In(COM1Base+devices.RBR, 1)))
	}
	if got := string(got) + string(e.vm.input); got != "ab" {
		t.Errorf("the guest received %q, want only the bytes before the escape", got)
	}
}

// TestVCPUChunkVersions: a version 1 vcpu chunk (before the interrupt
// controller) still decodes, as not halted with nothing deferred; version
// 2 keeps both and refuses a deferred event that is not an interrupt.
func TestVCPUChunkVersions(t *testing.T) {
	st := &vcpuState{Regs: svm.Regs{RBX: 7, DR2: 0x1234}, Deferred: svm.EventValid | 0x30, Halted: true, XCR0: svm.XCR0X87}
	v2 := encodeVCPU(st)
	v1 := v2[:len(v2)-9-8-4-32] // without Deferred (8 bytes), Halted (1), XCR0 (8), XSave (4: empty), DR0-3 (32)
	c := Registry().Lookup(ChunkVCPU)
	dec := func(v uint16, b []byte) (any, error) {
		x, err := c.Decoders[v](snapshot.NewDecoder(b))
		if err == nil && v < c.Current {
			x, err = c.Upgrades[v](x)
		}
		return x, err
	}
	got, err := dec(1, v1)
	if err != nil {
		t.Fatalf("version 1: %v", err)
	}
	if g := got.(*vcpuState); g.Regs.RBX != 7 || g.Deferred != 0 || g.Halted || g.XCR0 != svm.XCR0X87 {
		t.Errorf("version 1 decoded as %+v", g)
	}
	got, err = dec(2, v2)
	if err != nil {
		t.Fatalf("version 2: %v", err)
	}
	if g := got.(*vcpuState); g.Deferred != st.Deferred || !g.Halted || g.Regs.DR2 != 0x1234 {
		t.Errorf("version 2 decoded deferred %#x halted %v", g.Deferred, g.Halted)
	}
	st.Deferred = svm.Exception(svm.VectorGP, 0).Encode()
	if _, err := dec(2, encodeVCPU(st)); err == nil {
		t.Error("a deferred exception was accepted")
	}
}

// TestGuestCannotEraseOperatorSnapshot: after the operator saves (control
// channel), a guest may save as often as it likes as long as its saves
// are increments that leave the operator's commit record alone (the store
// chains them, and moves to the other slot when the next increment would
// take the operator's record); a guest save that must be full and would
// overwrite the slot of the operator's snapshot gets EBUSY; once the
// operator saves again, the guest may too. After every step the operator's
// newest generation is a commit record of the store.
func TestGuestCannotEraseOperatorSnapshot(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.withStore(snapshot.NewMemDevice(32<<20, 512))
	vm := e.boot(Mode16)
	var ctl []byte
	var out bytes.Buffer
	e.plat.ControlIn, e.plat.ControlOut = byteSource(&ctl), &out
	operatorSave := func(v *svm.VMCB, r *svm.Regs) {
		ctl = append(ctl, "snapshot\n"...)
		v.Control.ExitCode = uint64(svm.ExitCPUID)
		v.Control.NextRIP = v.State.RIP
	}
	// kept checks that the operator's newest generation has a record.
	kept := func(when string) {
		t.Helper()
		recs, err := e.plat.Store.Records()
		if err != nil {
			t.Fatal(err)
		}
		var gens []uint64
		for _, r := range recs {
			for _, c := range []*snapshot.Commit{r.Commit, r.Previous} {
				if c != nil {
					gens = append(gens, c.Generation)
					if c.Generation == vm.plat.operatorGen {
						return
					}
				}
			}
		}
		t.Errorf("%s: records hold generations %v, the operator's %d is gone", when, gens, vm.plat.operatorGen)
	}
	forceFull := func(v *svm.VMCB, r *svm.Regs) {
		vm.track.base = nil // the next save is a full one (as after 32 increments)
		v.Control.ExitCode = uint64(svm.ExitCPUID)
		v.Control.NextRIP = v.State.RIP
	}
	guestSave := snapshotStep(e, 0)
	steps := []step{operatorSave, guestSave, guestSave, guestSave, forceFull, guestSave, operatorSave, forceFull, guestSave, exitStep(svm.ExitCPUID, 0, 0)}
	want := map[int]uint64{2: 0, 3: 0, 4: 0, 6: errno(EBUSY), 9: 0} // entry after step i-1: RAX of guest saves
	es := e.resume(steps...)
	for idx, w := range want {
		if got := es[idx].vmcb.State.RAX; got != w {
			t.Errorf("after step %d (%s): RAX %#x, want %#x", idx-1, []string{"", "", "guest save 1", "guest save 2", "guest save 3", "", "full guest save", "", "", "full guest save after the operator's"}[idx], got, w)
		}
	}
	kept("at the end")
	if vm.plat.operatorGen == 0 {
		t.Fatal("no operator generation recorded")
	}
	con := e.console.String()
	if !strings.Contains(con, "would overwrite the operator's newest snapshot") {
		t.Errorf("console does not say why the guest's save was refused:\n%s", con)
	}
	if strings.Count(con, "snapshot saved") != 6 || strings.Count(con, "increment on generation") != 2 {
		t.Errorf("want 6 saves (2 operator, 4 guest), 2 of them increments:\n%s", con)
	}
}

// TestControlPauseContinueInput: pause from the control channel holds the
// guest (no VMRUN) while the channel is still served; input queues text
// for the guest's UART with escapes; continue lets it run again; errors
// are answered as such.
func TestControlPauseContinueInput(t *testing.T) {
	e := newEnv(t, featNRIP)
	e.boot(Mode16)
	ctl := []byte("continue #x\npause #a\n")
	var out bytes.Buffer
	idles, runsAtPause := 0, -1
	e.plat.ControlIn, e.plat.ControlOut = byteSource(&ctl), &out
	e.plat.Idle = func() bool {
		idles++
		if runsAtPause < 0 {
			runsAtPause = len(e.runner.entries)
		}
		if len(e.runner.entries) != runsAtPause {
			t.Errorf("the guest ran while paused")
		}
		if idles == 5 {
			ctl = append(ctl, []byte("input echo hi\\n\\x41 #b\ninput bad\\q #c\ncontinue #d\n")...)
		}
		return idles < 100
	}
	e.resume(e.insnExit(svm.ExitCPUID, encCPUID, nil), e.insnExit(svm.ExitCPUID, encCPUID, nil))
	got := out.String()
	for _, want := range []string{
		"begin #x\nerror #x: the guest is not paused",
		"begin #a\nguest paused (continue resumes it)\nok #a\n",
		"begin #b\n9 bytes queued for the guest console\nok #b\n",
		"begin #c\nerror #c: unknown escape \\q",
		"begin #d\nok #d\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("control channel answered:\n%s\nwant %q in it", got, want)
		}
	}
	if idles < 5 {
		t.Errorf("paused for %d idles, want the pause held until continue", idles)
	}
	if string(e.vm.input) != "echo hi\nA" {
		t.Errorf("guest input queue %q, want %q", e.vm.input, "echo hi\nA")
	}
}

// TestProgressPrinter: a save or restore of 64 MiB or more prints every
// 10% once, up to and including 100%, with the rate; a smaller one
// prints nothing.
func TestProgressPrinter(t *testing.T) {
	var out bytes.Buffer
	tsc := uint64(0)
	p := progressPrinter(&out, "snapshot", func() uint64 { tsc += 1e6; return tsc }, 1e9)
	const total = 128 << 20
	for done := uint64(0); done < total; done += 3 << 20 {
		p(done, total)
	}
	p(total, total)
	p(total, total) // repeated: nothing more
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 10 || !strings.HasPrefix(lines[0], "tamavisor: snapshot 10% (") ||
		!strings.HasPrefix(lines[9], "tamavisor: snapshot 100% (128.0 MiB, ") || !strings.Contains(lines[9], "MiB/s)") {
		t.Errorf("progress lines:\n%s", out.String())
	}
	out.Reset()
	small := progressPrinter(&out, "restore", func() uint64 { return 0 }, 1e9)
	small(1<<20, 1<<20)
	if out.Len() != 0 {
		t.Errorf("progress for 1 MiB: %q", out.String())
	}
	if got := size(64 << 10); got != "64.0 KiB" {
		t.Errorf("size(64 KiB) = %q", got)
	}
}

// TestCommandAbbreviations: a unique prefix names a command; an
// ambiguous one does not.
func TestCommandAbbreviations(t *testing.T) {
	for in, want := range map[string]string{"snap": "snapshot", "s": "snapshot", "inf": "info", "inp": "input",
		"in": "in", "con": "continue", "q": "quit", "pa": "pause", "fly": "fly", "": ""} {
		if got := expand(in); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}
