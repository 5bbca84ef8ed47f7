package kernel

// Test harness: a fake machine behind Platform. Host memory is a Go byte
// arena at a fake physical address, CPUID and TSC are canned, and the world
// switch is a scripted Runner whose steps play "the guest ran until an
// exit" by editing the VMCB and registers.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"tamavisor/svm"
)

const (
	arenaBase = 0x4000_0000 // fake host-physical address of the arena
	arenaSize = 32 << 20
)

// fakeMem is host memory: [base, base+len(buf)).
type fakeMem struct {
	base uint64
	buf  []byte
}

func newFakeMem(size uint64) *fakeMem { return &fakeMem{base: arenaBase, buf: make([]byte, size)} }

func (m *fakeMem) Bytes(pa, n uint64) []byte {
	size := uint64(len(m.buf))
	if pa < m.base || n > size || pa-m.base > size-n {
		panic(fmt.Sprintf("fakeMem: host-physical range %#x+%#x is outside the arena [%#x, %#x)",
			pa, n, m.base, m.base+size))
	}
	o := pa - m.base
	return m.buf[o : o+n : o+n]
}

// Leaf 1 and 0x8000_0001 bits the fake host sets and the model must hide.
const (
	hostLeaf1ECX = 1<<0 | f1ecxMONITOR | f1ecxVMX | 1<<20 | f1ecxXSAVE | f1ecxOSXSAVE | f1ecxAVX | f1ecxF16C
	hostLeaf1EDX = 1<<0 | f1edxMCE | f1edxMCA | 1<<25 | 1<<26
	hostLeaf7EBX = f7ebxFSGSBASE | f7ebxBMI1 | 1<<5 /* AVX2 */ | f7ebxBMI2 | 1<<16 /* AVX-512F */
	hostExt1ECX  = 1<<0 | e1ecxSVM | e1ecxIBS | e1ecxPerfCtrCor
	hostExt1EDX  = 1<<20 | 1<<29 // NX, LM
)

// fakeCPUID is a plausible AMD host.
func fakeCPUID(leaf, sub uint32) (a, b, c, d uint32) {
	switch leaf {
	case 0:
		return 0x10, 0x68747541, 0x444d4163, 0x69746e65 // "Auth" "cAMD" "enti"
	case 1:
		return 0x00a20f10, 0x0a100800, hostLeaf1ECX, hostLeaf1EDX
	case 5:
		return 0x40, 0x40, 3, 0x11
	case 7:
		if sub == 0 {
			return 1, hostLeaf7EBX, 0xffff, 0xffff
		}
		return 0x55, 0x55, 0x55, 0x55
	case 0xd:
		return 0x207, 0x340, 0x988, 0
	case 0x80000000:
		return 0x8000001f, 0x68747541, 0x444d4163, 0x69746e65
	case 0x80000001:
		return 0x00a20f10, 0x20000000, hostExt1ECX, hostExt1EDX
	case 0x8000000a:
		return 1, 0x8000, 0, 0x1ff
	}
	return leaf, sub, 0xc0ffee, 0x1234
}

// step plays the guest until its next #VMEXIT.
type step func(v *svm.VMCB, r *svm.Regs)

// entry is what the guest was entered with on one Run call.
type entry struct {
	vmcb svm.VMCB
	regs svm.Regs
}

// scriptRunner is the world switch of the tests. On each Run it records
// the state it enters the guest with, resets the exit fields as the CPU
// would overwrite them, and plays the next step. With no step left it
// reports a SHUTDOWN and marks the script as exhausted.
type scriptRunner struct {
	mem       HostMemory
	steps     []step
	entries   []entry
	exhausted bool
}

func (s *scriptRunner) Run(vmcbPA uint64, regs *svm.Regs, fx *svm.FXArea, xcr0 *uint64) {
	v := vmcbAt(s.mem, vmcbPA)
	s.entries = append(s.entries, entry{*v, *regs})
	c := &v.Control
	c.ExitCode, c.ExitInfo1, c.ExitInfo2, c.ExitIntInfo, c.NextRIP = 0, 0, 0, 0, 0
	if len(s.steps) == 0 {
		s.exhausted = true
		c.ExitCode = uint64(svm.ExitShutdown)
		return
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	st(v, regs)
}

// env is one fake machine.
type env struct {
	t       *testing.T
	mem     *fakeMem
	pool    *PhysPool
	plat    *Platform
	runner  *scriptRunner
	console bytes.Buffer
	input   []byte // queued console input
	tsc     uint64
	vm      *VM
}

var (
	featNoNRIP = svm.Features{Revision: 1, NASID: 16, EDX: svm.FeatNP}
	featNRIP   = svm.Features{Revision: 1, NASID: 16, EDX: svm.FeatNP | svm.FeatNRIPS}
)

func newEnv(t *testing.T, f svm.Features) *env {
	t.Helper()
	e := &env{t: t, mem: newFakeMem(arenaSize), tsc: 1_000_000}
	e.pool = NewPhysPool(e.mem, arenaBase, arenaBase+arenaSize)
	e.runner = &scriptRunner{mem: e.mem}
	e.plat = &Platform{
		Mem: e.mem, Pool: e.pool, Runner: e.runner, Features: f,
		ASIDs: svm.NewASIDs(f.NASID), CPUID: fakeCPUID, ServiceEvery: 1,
		TSC:     func() uint64 { return e.tsc },
		Console: &e.console,
		Input: func() (byte, bool) {
			if len(e.input) == 0 {
				return 0, false
			}
			b := e.input[0]
			e.input = e.input[1:]
			return b, true
		},
	}
	return e
}

// Default test guest: payload at 0x8000, entry there, 4 MiB of RAM.
const (
	testLoad = 0x8000
	testMem  = 4 << 20
)

// boot makes the VM of a mode-m test guest.
func (e *env) boot(mode uint32) *VM {
	e.t.Helper()
	img, err := ParseImage(buildImage(mode, testLoad, testLoad, testMem, "test", []byte{0xf4}))
	if err != nil {
		e.t.Fatalf("ParseImage: %v", err)
	}
	vm, err := NewVM(e.plat, img)
	if err != nil {
		e.t.Fatalf("NewVM: %v", err)
	}
	e.vm = vm
	return vm
}

// resume runs the VM through steps, expecting it to keep running: it
// returns the states the guest was entered with, entries[0] the first
// and entries[i+1] the one after the exit of steps[i].
func (e *env) resume(steps ...step) []entry {
	e.t.Helper()
	stop := e.play(steps...)
	if !e.runner.exhausted {
		e.t.Fatalf("VM stopped before the end of the script (%d of %d exits): %v", len(e.runner.entries), len(steps), stop)
	}
	if len(e.runner.entries) != len(steps)+1 {
		e.t.Fatalf("%d VMRUNs for %d exits", len(e.runner.entries), len(steps))
	}
	return e.runner.entries
}

// stopped runs the VM through steps, expecting it to stop during them.
func (e *env) stopped(steps ...step) *Stop {
	e.t.Helper()
	stop := e.play(steps...)
	if e.runner.exhausted {
		e.t.Fatalf("VM did not stop during the script (%d exits)", len(steps))
	}
	return stop
}

func (e *env) play(steps ...step) *Stop {
	e.t.Helper()
	e.runner.steps = steps
	e.runner.entries = nil
	e.runner.exhausted = false
	stop := e.vm.Run()
	if stop == nil {
		e.t.Fatal("Run returned nil")
	}
	return stop
}

// last returns the guest state after the final scripted exit.
func last(es []entry) *entry { return &es[len(es)-1] }

// insnExit is a step that exits on code at the instruction enc, placed at
// the guest's RIP: enc goes into guest RAM (for the decode path) and
// NextRIP is set past it (for NRIP save). setup prepares registers.
func (e *env) insnExit(code svm.ExitCode, enc []byte, setup func(v *svm.VMCB, r *svm.Regs)) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		e.code(v.State.RIP, enc...)
		if setup != nil {
			setup(v, r)
		}
		v.Control.ExitCode = uint64(code)
		v.Control.NextRIP = v.State.RIP + uint64(len(enc))
	}
}

// code writes instruction bytes at a GPA (= linear address for the test
// guests: CS base 0, identity map in mode 64).
func (e *env) code(gpa uint64, b ...byte) {
	if err := e.vm.Mem.WriteGPA(gpa, b); err != nil {
		e.t.Fatalf("writing code at %#x: %v", gpa, err)
	}
}

// Encodings of the intercepted instructions.
var (
	encCPUID   = []byte{0x0f, 0xa2}
	encRDMSR   = []byte{0x0f, 0x32}
	encWRMSR   = []byte{0x0f, 0x30}
	encHLT     = []byte{0xf4}
	encVMMCALL = []byte{0x0f, 0x01, 0xd9}
	encINVD    = []byte{0x0f, 0x08}
)

// exitStep is a step for exits that are not instruction intercepts.
func exitStep(code svm.ExitCode, info1, info2 uint64) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		v.Control.ExitCode = uint64(code)
		v.Control.ExitInfo1, v.Control.ExitInfo2 = info1, info2
	}
}

// bothNRIP runs f with and without NRIP save.
func bothNRIP(t *testing.T, f func(t *testing.T, e *env)) {
	for _, c := range []struct {
		name string
		feat svm.Features
	}{{"decode", featNoNRIP}, {"nrip", featNRIP}} {
		t.Run(c.name, func(t *testing.T) { f(t, newEnv(t, c.feat)) })
	}
}

// imageHeader is a guest image header (docs/guest-abi.md).
type imageHeader struct {
	Magic      [8]byte
	Version    uint32
	HeaderSize uint32
	Mode       uint32
	Flags      uint32
	LoadGPA    uint64
	Entry      uint64
	MemSize    uint64
	Name       [16]byte
}

func (h *imageHeader) bytes(payload []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, h)
	b.Write(make([]byte, int(h.HeaderSize)-ImageHeaderSize))
	b.Write(payload)
	return b.Bytes()
}

func header(mode uint32, load, entry, mem uint64, name string) *imageHeader {
	h := &imageHeader{Version: ImageVersion1, HeaderSize: ImageHeaderSize, Mode: mode,
		LoadGPA: load, Entry: entry, MemSize: mem}
	copy(h.Magic[:], ImageMagic)
	copy(h.Name[:], name)
	return h
}

// buildImage returns a valid image (if the arguments are consistent).
func buildImage(mode uint32, load, entry, mem uint64, name string, payload []byte) []byte {
	return header(mode, load, entry, mem, name).bytes(payload)
}

// knownBug fails a test on a regression of a bug found and fixed before.
func knownBug(t *testing.T, f string, a ...any) {
	t.Helper()
	t.Fatalf("regression: "+f, a...)
}
