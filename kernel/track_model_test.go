package kernel

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"tamavisor/snapshot"
	"tamavisor/svm"
)

// A randomized model test of write tracking (track.go). VM.protect
// write-protects again only the pages in the dirty bitmap while tracking
// is on, which is right only if every page of guest RAM mapped writable
// in the nested page table is marked dirty: a writable page that is not
// would take the guest's writes without a fault, and the next
// incremental snapshot would miss them. The test checks that invariant
// before every guest entry, through a random mix of guest loads and
// stores (nested page faults as the CPU takes them), paused and live
// saves (the guest's hypercall and the operator's control channel, full
// and incremental), and a lazy restore with reads ahead, 2 MiB promotion
// and background fill turns; and it keeps a model of guest RAM, so that
// every snapshot restored eagerly must hold the RAM the model had at the
// save's request.

// trackDev is a snapshot disk that does everything a real one may
// asynchronously: writes (also gathered from several buffers, in place)
// and scattered reads take effect only at Sync, in the order started;
// while it waits in Sync it calls the idle hook (a live save lets the
// guest run there).
type trackDev struct {
	*snapshot.MemDevice
	ops                   []trackOp
	idle                  func()
	idleCalls             int
	readsAhead, gathers   int
	syncReads, syncWrites int
}

type trackOp struct {
	segs [][]byte
	off  int64
	read bool
}

func newTrackDev(mem *snapshot.MemDevice, idleCalls int) *trackDev {
	return &trackDev{MemDevice: mem, idleCalls: idleCalls}
}

func segsLen(segs [][]byte) int {
	n := 0
	for _, s := range segs {
		n += len(s)
	}
	return n
}

func (d *trackDev) WriteAsync(p []byte, off int64) error {
	if err := snapshot.CheckRequest(d.Sector, d.Size(), len(p), off); err != nil {
		return err
	}
	d.ops = append(d.ops, trackOp{segs: [][]byte{p}, off: off})
	return nil
}

func (d *trackDev) WriteVAsync(segs [][]byte, off int64) (bool, error) {
	if err := snapshot.CheckRequest(d.Sector, d.Size(), segsLen(segs), off); err != nil {
		return false, err
	}
	d.ops = append(d.ops, trackOp{segs: append([][]byte(nil), segs...), off: off})
	d.gathers++
	return true, nil
}

func (d *trackDev) ReadV(segs [][]byte, off int64) (bool, error) {
	if err := snapshot.CheckRequest(d.Sector, d.Size(), segsLen(segs), off); err != nil {
		return false, err
	}
	for _, s := range segs {
		off += int64(copy(s, d.Data[off:]))
	}
	d.syncReads++
	return true, nil
}

func (d *trackDev) ReadVAsync(segs [][]byte, off int64) (bool, error) {
	if err := snapshot.CheckRequest(d.Sector, d.Size(), segsLen(segs), off); err != nil {
		return false, err
	}
	d.ops = append(d.ops, trackOp{segs: append([][]byte(nil), segs...), off: off, read: true})
	d.readsAhead++
	return true, nil
}

func (d *trackDev) Sync() error {
	if len(d.ops) > 0 && d.idle != nil {
		for range d.idleCalls {
			d.idle()
		}
	}
	for _, op := range d.ops {
		off := op.off
		for _, s := range op.segs {
			if op.read {
				off += int64(copy(s, d.Data[off:]))
			} else {
				off += int64(copy(d.Data[off:], s))
				d.syncWrites++
			}
		}
	}
	d.ops = nil
	return nil
}

func (d *trackDev) FlushAsync() error { return nil }

func (d *trackDev) SetIdle(f func()) { d.idle = f }

// writesPending reports whether writes started are not on the medium yet.
func (d *trackDev) writesPending() bool {
	for _, op := range d.ops {
		if !op.read {
			return true
		}
	}
	return false
}

// checkRunner enters the guest for the script runner after checking the
// tracking invariant and settling the model's save requests.
type checkRunner struct {
	m     *trackModel
	inner *scriptRunner
}

func (c checkRunner) Run(vmcb uint64, regs *svm.Regs, fx *svm.FXArea, xcr0 *uint64) {
	m := c.m
	if m.err == nil {
		m.entries++
		m.settle()
	}
	if m.err == nil {
		if err := trackInvariant(m.e.vm); err != nil {
			m.fail("before entry %d: %v", m.entries, err)
		}
	}
	if m.err != nil {
		c.inner.steps = nil // stop: the runner reports a shutdown
	}
	c.inner.Run(vmcb, regs, fx, xcr0)
}

// trackInvariant checks that every page of guest RAM mapped writable is
// marked dirty while the VM tracks its writes.
func trackInvariant(vm *VM) error {
	t := &vm.track
	if !t.on {
		return nil
	}
	var err error
	vm.NPT.Walk(func(gpa, hpa, size uint64, p svm.Perm) {
		if err != nil || p&svm.PermWrite == 0 || gpa >= vm.Mem.Size {
			return
		}
		for a := gpa; a < gpa+size && a < vm.Mem.Size; a += svm.PageSize {
			if i := a / svm.PageSize; t.dirty[i/8]&(1<<(i%8)) == 0 {
				err = fmt.Errorf("page %#x is mapped writable (a %d KiB leaf at %#x) but not marked dirty", a, size>>10, gpa)
				return
			}
		}
	})
	return err
}

// ramImage is guest RAM as the model sees it, page by page; pages are
// never changed in place (a write replaces the page), so an image is
// kept at every save request for the price of its page list.
type ramImage [][]byte

func newImage(ram []byte) ramImage {
	img := make(ramImage, len(ram)/svm.PageSize)
	for i := range img {
		img[i] = bytes.Clone(ram[i*svm.PageSize : (i+1)*svm.PageSize])
	}
	return img
}

func (img ramImage) clone() ramImage { return append(ramImage(nil), img...) }

func (img ramImage) write(gpa uint64, val []byte) {
	i := gpa / svm.PageSize
	p := bytes.Clone(img[i])
	copy(p[gpa%svm.PageSize:], val)
	img[i] = p
}

// saveReq is a save the guest or the operator asked for: the model's RAM
// at the request, and the live save it started (once seen).
type saveReq struct {
	live    bool
	what    string
	ram     ramImage
	started *liveSave
	looked  bool
}

// trackModel is the test's view of one guest: what its RAM holds, the
// saves asked for and the RAM each snapshot must hold.
type trackModel struct {
	t      *testing.T
	seed   int64
	rng    *rand.Rand
	e      *env
	dev    *trackDev
	ram    ramImage            // guest RAM as the guest wrote it
	reqs   []*saveReq          // asked for, outcome not known yet
	saved  map[uint64]ramImage // generation -> RAM at its request
	check  *env                // the machine snapshots are restored on to be compared
	ctl    []byte              // control channel input
	ctlOut bytes.Buffer
	err    error
	step   int // index of the step running, for messages
	phase  string

	entries, writes, faults, failed, verifies int
	live, incremental, full, copies           int
}

func (m *trackModel) fail(f string, a ...any) {
	if m.err == nil {
		m.err = fmt.Errorf("%s step %d: %s", m.phase, m.step, fmt.Sprintf(f, a...))
	}
}

// newEnv is an environment for the model's guest on the model's disk.
func (m *trackModel) newEnv(tscStep uint64) *env {
	e := newEnv(m.t, featNRIP)
	e.withTimer(1_000_000_000)
	e.plat.ServiceInterval = 0 // the control channel is served at every exit
	e.plat.TSC = func() uint64 { e.tsc += tscStep; return e.tsc }
	e.plat.Runner = checkRunner{m, e.runner}
	e.plat.ControlIn, e.plat.ControlOut = byteSource(&m.ctl), &m.ctlOut
	e.withStore(m.dev)
	return e
}

// settle matches the saves the VM completed since the last entry with the
// requests, in order, and records the RAM each generation must hold.
// Saves complete in the order asked (one at a time); a paused request
// is over by the next entry, a live one once the VM's save in progress
// is another.
func (m *trackModel) settle() {
	vm := m.e.vm
	if vm == nil {
		return
	}
	done := vm.Saves
	vm.Saves = nil
	for _, s := range done {
		for len(m.reqs) > 0 && m.reqs[0].live != s.Live {
			m.drop()
		}
		if len(m.reqs) == 0 {
			m.fail("save of generation %d (live %v) nobody asked for", s.Generation, s.Live)
			return
		}
		if _, ok := m.saved[s.Generation]; ok {
			m.fail("generation %d saved twice", s.Generation)
		}
		m.saved[s.Generation] = m.reqs[0].ram
		m.reqs = m.reqs[1:]
		switch {
		case s.Incremental:
			m.incremental++
		default:
			m.full++
		}
		if s.Live {
			m.live++
			m.copies += int(s.Copies)
		}
	}
	for len(m.reqs) > 0 {
		r := m.reqs[0]
		if r.live && !r.looked {
			r.looked, r.started = true, vm.live
		}
		if r.live && r.started != nil && vm.live == r.started {
			return // still running
		}
		m.drop()
	}
}

// drop ends the oldest request without a snapshot: refused at the
// request (the guest may not overwrite the operator's snapshot), never
// after a live save started.
func (m *trackModel) drop() {
	r := m.reqs[0]
	m.reqs = m.reqs[1:]
	m.failed++
	if r.started != nil {
		m.fail("the %s started but saved nothing; console:\n%s", r.what, m.e.console.String())
	}
}

func (m *trackModel) ask(live bool, what string) {
	m.reqs = append(m.reqs, &saveReq{live: live, what: what, ram: m.ram.clone()})
}

// guestWrite is one store of the guest.
type guestWrite struct {
	gpa uint64
	val []byte
}

// stores is the guest storing ws in order as the CPU does under nested
// paging: a store to a page not mapped exits with a nested page fault
// (not present), to a write-protected one with a write fault, and runs
// again after the exit; when all are done the guest exits on a host
// interrupt.
func (m *trackModel) stores(ws []guestWrite) step {
	i := 0
	var st step
	st = func(v *svm.VMCB, r *svm.Regs) {
		vm := m.e.vm
		m.e.tsc += 5_000
		for i < len(ws) {
			w := ws[i]
			if _, p, ok := vm.NPT.Translate(w.gpa); !ok || p&svm.PermWrite == 0 {
				info := uint64(svm.NPFWrite | svm.NPFFinalAddr)
				if ok {
					info |= svm.NPFPresent
				}
				v.Control.ExitCode = uint64(svm.ExitNPF)
				v.Control.ExitInfo1, v.Control.ExitInfo2 = info, w.gpa
				m.faults++
				m.e.runner.steps = append([]step{st}, m.e.runner.steps...)
				return
			}
			copy(vm.Mem.ram[w.gpa:], w.val)
			m.ram.write(w.gpa, w.val)
			m.writes++
			i++
		}
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
	return st
}

// load is the guest reading the page at gpa (a fault first if it is not
// mapped); it must read what the model says.
func (m *trackModel) load(gpa uint64) step {
	var st step
	st = func(v *svm.VMCB, r *svm.Regs) {
		vm := m.e.vm
		m.e.tsc += 5_000
		if _, _, ok := vm.NPT.Translate(gpa); !ok {
			v.Control.ExitCode = uint64(svm.ExitNPF)
			v.Control.ExitInfo1, v.Control.ExitInfo2 = svm.NPFFinalAddr, gpa
			m.e.runner.steps = append([]step{st}, m.e.runner.steps...)
			return
		}
		if got, want := vm.Mem.ram[gpa:gpa+svm.PageSize], m.ram[gpa/svm.PageSize]; !bytes.Equal(got, want) {
			m.fail("the guest reads page %#x: %x..., the model says %x...", gpa, got[:16], want[:16])
		}
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
	return st
}

// hypercall is a VMMCALL exit (NRIP save: nothing is decoded).
func hypercall(fn, rbx uint64) step { return hypercallArgs(fn, rbx, 0) }

func hypercallArgs(fn, rbx, rcx uint64) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		v.State.RAX, r.RBX, r.RCX = fn, rbx, rcx
		v.Control.ExitCode = uint64(svm.ExitVMMCALL)
		v.Control.NextRIP = v.State.RIP + uint64(len(encVMMCALL))
	}
}

// guestSave is the SNAPSHOT hypercall.
func (m *trackModel) guestSave(flags uint64) step {
	h := hypercall(HCSnapshot, flags)
	return func(v *svm.VMCB, r *svm.Regs) {
		m.ask(flags&SnapshotLive != 0, fmt.Sprintf("guest's save (flags %#x)", flags))
		h(v, r)
	}
}

// operatorSave is the operator's snapshot command on the control channel:
// live, or with the guest paused around it.
func (m *trackModel) operatorSave(live bool) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		m.e.tsc += 5_000
		if live {
			m.ctl = append(m.ctl, "snapshot\n"...)
		} else {
			m.ctl = append(m.ctl, "pause\nsnapshot\ncontinue\n"...)
		}
		m.ask(live, fmt.Sprintf("operator's save (live %v)", live))
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
}

// runs is the guest running for us microseconds until a host interrupt:
// the timers of a live save's and a lazy restore's turns come due.
func (m *trackModel) runs(us uint64) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		m.e.tsc += us * 1_000
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
}

// verifyStep restores the newest snapshot if no save is under way (none
// asked for and not settled, no write in flight).
func (m *trackModel) verifyStep() step {
	return func(v *svm.VMCB, r *svm.Regs) {
		if m.err == nil && len(m.saved) > 0 && len(m.reqs) == 0 && m.e.vm.live == nil && !m.dev.writesPending() {
			if err := m.verify(); err != nil {
				m.fail("%v", err)
			}
		}
		v.Control.ExitCode = uint64(svm.ExitINTR)
	}
}

// verify restores the newest snapshot on the disk eagerly into a fresh
// machine and compares its RAM with the model's at the save's request.
func (m *trackModel) verify() error {
	m.verifies++
	st, err := snapshot.Open(&snapshot.MemDevice{Sector: m.dev.Sector, Data: m.dev.Data}, snapshot.StoreOptions{BlockSize: 64 << 10})
	if err != nil {
		return err
	}
	rvm, c, err := Restore(m.check.plat, st, nil)
	if err != nil {
		return fmt.Errorf("restore: %v", err)
	}
	defer rvm.Destroy()
	want, ok := m.saved[c.Generation]
	if !ok {
		return fmt.Errorf("the disk's newest snapshot is generation %d, which the model never saw saved", c.Generation)
	}
	for g := range m.saved {
		if g > c.Generation {
			return fmt.Errorf("generation %d was saved, but the disk's newest is %d", g, c.Generation)
		}
	}
	return ramDiff(fmt.Sprintf("generation %d restored", c.Generation), rvm.Mem.ram, want)
}

func ramDiff(what string, got []byte, want ramImage) error {
	var pages []string
	if len(got) != len(want)*svm.PageSize {
		return fmt.Errorf("%s: %d bytes of RAM, the model has %d pages", what, len(got), len(want))
	}
	for i, w := range want {
		if !bytes.Equal(got[i*svm.PageSize:(i+1)*svm.PageSize], w) {
			pages = append(pages, fmt.Sprintf("%#x", i*svm.PageSize))
		}
	}
	if len(pages) == 0 {
		return nil
	}
	if len(pages) > 8 {
		pages = append(pages[:8], "...")
	}
	return fmt.Errorf("%s: RAM differs from the model in pages %s", what, strings.Join(pages, " "))
}

// randomWrites returns stores to random pages: mostly a few bytes, at
// times a whole page (zero too), at times hundreds of pages (more than an
// increment is worth, more than a live save may copy).
func (m *trackModel) randomWrites(size uint64) []guestWrite {
	rng := m.rng
	pages := size / svm.PageSize
	page := func() uint64 {
		if rng.Intn(2) == 0 {
			return uint64(rng.Intn(24)) * 0x21000 % size // a hot set
		}
		return uint64(rng.Int63n(int64(pages))) * svm.PageSize
	}
	small := func(gpa uint64) guestWrite {
		n := 1 + rng.Intn(64)
		val := make([]byte, n)
		rng.Read(val)
		return guestWrite{gpa + uint64(rng.Intn(svm.PageSize-n+1)), val}
	}
	switch k := rng.Intn(20); {
	case k == 0: // a bulk write of a run of pages
		n := 1 + rng.Intn(int(pages)*3/4)
		from := uint64(rng.Int63n(int64(pages - uint64(n) + 1)))
		var ws []guestWrite
		for p := from; p < from+uint64(n); p++ {
			ws = append(ws, small(p*svm.PageSize))
		}
		return ws
	case k == 1: // a page made zero
		return []guestWrite{{page(), make([]byte, svm.PageSize)}}
	case k == 2: // a page rewritten
		val := make([]byte, svm.PageSize)
		rng.Read(val)
		return []guestWrite{{page(), val}}
	default:
		var ws []guestWrite
		for range 1 + rng.Intn(6) {
			ws = append(ws, small(page()))
		}
		return ws
	}
}

// script is n random steps, and a save at the end. Before step quiet no
// save is asked for (a save fills a lazy restore's RAM at once) and the
// guest stores below quietEnd only (the rest of RAM is promoted to 2 MiB
// pages as it fills).
func (m *trackModel) script(n, quiet int, quietEnd uint64) []step {
	rng := m.rng
	size := m.e.vm.Mem.Size
	var steps []step
	add := func(s step) {
		i := len(steps)
		steps = append(steps, func(v *svm.VMCB, r *svm.Regs) {
			m.step = i
			s(v, r)
		})
	}
	for i := 0; i < n; i++ {
		k := rng.Intn(100)
		if i < quiet && k >= 70 {
			k = rng.Intn(70)
		}
		switch {
		case k < 40 && i < quiet:
			add(m.stores(m.randomWrites(quietEnd)))
		case k < 40:
			add(m.stores(m.randomWrites(size)))
		case k < 47:
			add(m.load(uint64(rng.Int63n(int64(size/svm.PageSize))) * svm.PageSize))
		case k < 50:
			// The hypervisor reads guest RAM for the guest (a lazy
			// restore fills it first).
			n := uint64(1 + rng.Intn(64))
			add(hypercallArgs(HCConsoleWrite, uint64(rng.Int63n(int64(size-n))), n))
		case k < 70 && i < quiet:
			add(m.runs(uint64(50 + rng.Intn(500))))
		case k < 70:
			add(m.runs(uint64(100 + rng.Intn(4000))))
		case k < 76:
			add(m.guestSave(SnapshotLive))
		case k < 80:
			add(m.guestSave(0))
		case k < 82:
			add(m.guestSave(SnapshotFull))
		case k < 84:
			add(m.guestSave(SnapshotLive | SnapshotFull))
		case k < 88:
			add(m.operatorSave(true))
		case k < 91:
			add(m.operatorSave(false))
		case k < 96:
			add(hypercall(HCSnapshotWait, 0))
		default:
			add(m.verifyStep())
		}
	}
	if rng.Intn(2) == 0 {
		add(m.guestSave(0))
	} else {
		add(m.guestSave(SnapshotLive))
		add(m.stores(m.randomWrites(size)))
		add(hypercall(HCSnapshotWait, 0))
	}
	return steps
}

// play runs the script to its end (a shutdown when it runs out), which
// completes a live save in progress, and settles the saves.
func (m *trackModel) play(steps []step) {
	m.t.Helper()
	e := m.e
	stop := e.play(steps...)
	m.settle()
	if m.err != nil {
		m.t.Fatalf("seed %d: %v", m.seed, m.err)
	}
	if !e.runner.exhausted || stop.Class != ClassTripleFault {
		m.t.Fatalf("seed %d: %s: the VM stopped: %v\n%s", m.seed, m.phase, stop, e.console.String())
	}
	if len(m.reqs) != 0 {
		m.t.Fatalf("seed %d: %s: %d saves asked for never ended", m.seed, m.phase, len(m.reqs))
	}
	if err := e.vm.FillAll(); err != nil {
		m.t.Fatal(err)
	}
	if err := ramDiff(m.phase+": guest RAM", e.vm.Mem.ram, m.ram); err != nil {
		m.t.Fatalf("seed %d: %v", m.seed, err)
	}
	if err := m.verify(); err != nil {
		m.t.Fatalf("seed %d: %s: %v", m.seed, m.phase, err)
	}
}

// newest is the generation the model last saw saved.
func (m *trackModel) newest() uint64 {
	var g uint64
	for k := range m.saved {
		g = max(g, k)
	}
	return g
}

// TestTrackingInvariant: while the VM tracks its writes, every page of
// guest RAM mapped writable in the nested page table is marked dirty
// (checked before every guest entry), through random guest loads and
// stores, paused and live saves (full and incremental, the guest's and
// the operator's), a lazy restore with reads ahead, 2 MiB promotion and
// background fill turns; and every snapshot restored holds the RAM the
// guest had at its request, so that a write tracking missed fails it.
func TestTrackingInvariant(t *testing.T) {
	seeds, steps := 8, 100
	if testing.Short() {
		seeds, steps = 3, 40
	}
	defer func(old uint64) { cowMaxBytes = old }(cowMaxBytes)
	check := newEnv(t, featNRIP)
	var total trackModel
	var promoted, lazyFaults, readsAhead, gathers int
	for seed := int64(1); seed <= int64(seeds); seed++ {
		rng := rand.New(rand.NewSource(seed))
		// A live save may copy all it needs, or only 16 pages (then the
		// guest's writes ahead of it make it finish at once).
		cowMaxBytes = 64 << 20
		if seed%2 == 0 {
			cowMaxBytes = 16 * svm.PageSize
		}
		// The hypervisor's clock: slow (few turns, a save or a fill done
		// in one), or fast (many turns, the guest between them).
		tscStep := uint64(2_000)
		if seed%3 != 0 {
			tscStep = 150_000
		}
		m := &trackModel{t: t, seed: seed, rng: rng, saved: map[uint64]ramImage{}, check: check,
			dev: newTrackDev(snapshot.NewMemDevice(32<<20, 512), 40)}

		// A guest booted, with data in most pages of its first 2 MiB
		// and a few of the rest, saving as it runs.
		m.phase = "boot"
		m.e = m.newEnv(tscStep)
		vm := m.e.boot(Mode64)
		for p := uint64(0); p < vm.Mem.Size; p += svm.PageSize {
			if p == testLoad&^(svm.PageSize-1) {
				continue // the code
			}
			if density := map[bool]int{true: 70, false: 15}[p < svm.Size2M]; rng.Intn(100) < density {
				b := make([]byte, 1+rng.Intn(200))
				rng.Read(b)
				vm.Mem.WriteGPA(p+uint64(rng.Intn(int(svm.PageSize)-len(b)+1)), b)
			}
		}
		m.ram = newImage(vm.Mem.ram)
		m.play(m.script(steps, 0, 0))
		vm.Destroy()

		// The newest snapshot restored lazily, on the same disk read
		// ahead, and saved again as the guest runs on.
		m.phase = "lazy"
		gen := m.newest()
		m.ram = m.saved[gen].clone()
		m.dev = newTrackDev(m.dev.MemDevice, 40)
		m.e = m.newEnv(tscStep)
		e := m.e
		e.soilPool(t) // earlier users' bytes in the memory
		vm, c, err := RestoreLazy(e.plat, e.plat.Store, nil)
		if err != nil {
			t.Fatalf("seed %d: lazy restore: %v", seed, err)
		}
		if c.Generation != gen {
			t.Fatalf("seed %d: restored generation %d lazily, the newest saved is %d", seed, c.Generation, gen)
		}
		if _, ok := vm.Lazy(); !ok {
			t.Fatalf("seed %d: not restored lazily:\n%s", seed, e.console.String())
		}
		e.vm = vm
		quiet := steps / 3 // the guest alone with the fill first, or saving at once (all RAM filled for it)
		if seed%2 == 1 {
			quiet = 0
		}
		m.play(m.script(steps, quiet, svm.Size2M))
		lz, _ := vm.Lazy()
		promoted += lz.Promoted
		lazyFaults += int(lz.Faults)
		readsAhead += m.dev.readsAhead
		gathers += m.dev.gathers
		vm.Destroy()

		t.Logf("seed %d: %d entries, %d stores (%d nested page faults), saves: %d full, %d incremental, %d live (%d pages copied), %d refused; %d restores compared; lazy %+v",
			seed, m.entries, m.writes, m.faults, m.full, m.incremental, m.live, m.copies, m.failed, m.verifies, lz)
		total.full += m.full
		total.incremental += m.incremental
		total.live += m.live
		total.copies += m.copies
		total.faults += m.faults
	}
	// The mix must keep reaching what it is for.
	for _, c := range []struct {
		what string
		n    int
	}{
		{"full saves", total.full}, {"incremental saves", total.incremental}, {"live saves", total.live},
		{"pages copied ahead of a live save", total.copies}, {"nested page faults", total.faults},
		{"2 MiB pages promoted", promoted}, {"lazy fills for a fault", lazyFaults},
		{"blocks read ahead", readsAhead}, {"gathered writes", gathers},
	} {
		if c.n == 0 {
			t.Errorf("no %s in %d seeds", c.what, seeds)
		}
	}
}
