package snapshot

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"
)

// guestMem is flat test guest memory starting at GPA 0.
type guestMem struct{ b []byte }

func (g *guestMem) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa+int64(len(p)) > int64(len(g.b)) {
		return 0, fmt.Errorf("guestMem: read %#x+%d out of range", gpa, len(p))
	}
	return copy(p, g.b[gpa:]), nil
}

func (g *guestMem) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa+int64(len(p)) > int64(len(g.b)) {
		return 0, fmt.Errorf("guestMem: write %#x+%d out of range", gpa, len(p))
	}
	return copy(g.b[gpa:], p), nil
}

// testVM is a small VM: two RAM ranges around an MMIO hole, two vCPUs,
// two devices.
type testVM struct {
	mem      *guestMem
	manifest *Manifest
	ranges   []MemRange
	vcpus    [][]byte
	devs     map[string][]byte
	extra    bool // write an unknown optional chunk "x-trace"
	ramOpts  RAMOptions
	src      MemorySource // the RAM fill writes; nil: mem
}

const (
	testLowEnd  = 0xA0000
	testHighGPA = 0x100000
)

// newTestVM returns a VM with memSize bytes of address space (memSize >
// 1 MiB), filled with a pattern where about half the pages are zero.
func newTestVM(seed int64, memSize int) *testVM {
	rng := rand.New(rand.NewSource(seed))
	mem := &guestMem{b: make([]byte, memSize)}
	for p := 0; p < memSize/PageSize; p++ {
		if rng.Intn(2) == 0 || (p*PageSize >= testLowEnd && p*PageSize < testHighGPA) {
			continue
		}
		rng.Read(mem.b[p*PageSize : (p+1)*PageSize])
	}
	m := &Manifest{
		VCPUs: 2,
		Memory: []MemRegion{
			{GPA: 0, Size: testLowEnd, Kind: MemRAM, Name: "low"},
			{GPA: testLowEnd, Size: testHighGPA - testLowEnd, Kind: MemMMIO, Name: "hole"},
			{GPA: testHighGPA, Size: uint64(memSize) - testHighGPA, Kind: MemRAM, Name: "high"},
		},
		CPUID: []CPUIDLeaf{{Leaf: 0, EAX: 0x10, EBX: 0x68747541}, {Leaf: 1, EAX: 0x00a20f10, ECX: 0x7ed8320b}},
		Devices: []DeviceEntry{
			{Name: "uart16550", Instance: 0, StateVersion: 3, Required: true},
			{Name: "debugport", Instance: 0, StateVersion: 1, Required: false},
		},
		Properties: []Property{{Key: "hypervisor", Value: "tamavisor test"}},
	}
	vm := &testVM{
		mem:      mem,
		manifest: m,
		ranges:   []MemRange{{0, testLowEnd}, {testHighGPA, uint64(memSize) - testHighGPA}},
		devs:     map[string][]byte{"uart16550": []byte("uart state v3"), "debugport": {1, 2, 3}},
	}
	for i := 0; i < 2; i++ {
		e := NewEncoder(64)
		e.PutU64(0xfff0 + uint64(i)) // rip
		e.PutU64(uint64(seed))       // rsp
		e.PutU64(0x1122334455667788) // tsc
		e.PutString("fpu")
		vm.vcpus = append(vm.vcpus, e.Bytes())
	}
	return vm
}

// fill writes the VM to w.
func (vm *testVM) fill(w *Writer) error {
	if err := w.WriteManifest(vm.manifest); err != nil {
		return err
	}
	for i, b := range vm.vcpus {
		if err := w.WriteChunk(TypeVCPU, uint32(i), 1, Required, b); err != nil {
			return err
		}
	}
	for _, d := range vm.manifest.Devices {
		if err := w.WriteDevice(d.Name, d.Instance, vm.devs[d.Name]); err != nil {
			return err
		}
	}
	if vm.extra {
		if err := w.WriteChunk("x-trace", 0, 7, 0, []byte("trace data")); err != nil {
			return err
		}
	}
	var src MemorySource = vm.mem
	if vm.src != nil {
		src = vm.src
	}
	return w.WriteRAM(src, vm.ranges, vm.ramOpts)
}

// encode returns the VM as a snapshot stream.
func (vm *testVM) encode(t testing.TB, gen uint64, key []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Generation: gen, Created: 1700000000e9, VMName: "test vm", VMID: [16]byte{1, 2, 3}}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.fill(w); err != nil {
		t.Fatal(err)
	}
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Length != int64(buf.Len()) {
		t.Fatalf("summary length %d, stream %d", sum.Length, buf.Len())
	}
	return buf.Bytes()
}

// vcpuState is the test in-memory form of a "vcpu" chunk.
type vcpuState struct {
	RIP, RSP, TSC uint64
	FPU           string
}

// testRegistry knows vcpu v1 and the two devices.
func testRegistry(t testing.TB) *Registry {
	r := NewRegistry()
	err := r.Register(Codec{Type: TypeVCPU, Current: 1, Decoders: map[uint16]DecodeFunc{
		1: func(d *Decoder) (any, error) {
			v := &vcpuState{RIP: d.U64(), RSP: d.U64(), TSC: d.U64(), FPU: d.String()}
			return v, d.Finish()
		},
	}})
	if err == nil {
		err = r.RegisterRaw("dev:uart16550", 3)
	}
	if err == nil {
		err = r.RegisterRaw("dev:debugport", 1)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func decodeBytes(b []byte, opts DecodeOptions) (*Snapshot, error) {
	return Decode(bytes.NewReader(b), int64(len(b)), opts)
}
