package main

import (
	"fmt"
	"math/rand"

	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
)

// flatMem is guest memory starting at GPA 0.
type flatMem struct{ b []byte }

func (m *flatMem) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("read %#x+%d outside guest memory", gpa, len(p))
	}
	return copy(p, m.b[gpa:]), nil
}

func (m *flatMem) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("write %#x+%d outside guest memory", gpa, len(p))
	}
	return copy(m.b[gpa:], p), nil
}

// ZeroAt clears guest memory.
func (m *flatMem) ZeroAt(gpa, n uint64) error {
	clear(m.b[gpa : gpa+n])
	return nil
}

// demoGuest is a guest of size bytes of RAM at GPA 0 where every other page
// is zero and the others are random.
func demoGuest(size int64, seed int64) *flatMem {
	m := &flatMem{b: make([]byte, size)}
	rng := rand.New(rand.NewSource(seed))
	for p := int64(0); p < size/snapshot.PageSize; p += 2 {
		rng.Read(m.b[p*snapshot.PageSize : (p+1)*snapshot.PageSize])
	}
	return m
}

// demoManifest describes a demo guest of size bytes of RAM.
func demoManifest(size int64) *snapshot.Manifest {
	return &snapshot.Manifest{
		VCPUs:  1,
		Memory: []snapshot.MemRegion{{GPA: 0, Size: uint64(size), Kind: snapshot.MemRAM, Name: "ram"}},
		CPUID:  []snapshot.CPUIDLeaf{{Leaf: 0, EAX: 0x10, EBX: 0x68747541, ECX: 0x444d4163, EDX: 0x69746e65}},
		Devices: []snapshot.DeviceEntry{
			{Name: "uart16550", Instance: 0, StateVersion: 1, Required: true},
			{Name: "debugport", Instance: 0, StateVersion: 1},
		},
		Properties: []snapshot.Property{{Key: "hypervisor", Value: "tamavisor-snap demo"}},
	}
}

// saveGuest returns a fill function that writes the demo VM.
func saveGuest(mem *flatMem, m *snapshot.Manifest, gen int) func(*snapshot.Writer) error {
	return func(w *snapshot.Writer) error {
		if err := w.WriteManifest(m); err != nil {
			return err
		}
		e := snapshot.NewEncoder(64)
		e.PutU64(0x7c00 + uint64(gen)) // rip
		e.PutU64(0x1000)               // rsp
		e.PutU64(123456789)            // tsc
		if err := w.WriteChunk(snapshot.TypeVCPU, 0, 1, snapshot.Required, e.Bytes()); err != nil {
			return err
		}
		if err := w.WriteDevice("uart16550", 0, []byte{0x03, 0x00, 0xc1, byte(gen)}); err != nil {
			return err
		}
		if err := w.WriteDevice("debugport", 0, []byte("debug port state")); err != nil {
			return err
		}
		return w.WriteRAM(mem, []snapshot.MemRange{{GPA: 0, Size: uint64(len(mem.b))}}, snapshot.RAMOptions{})
	}
}

// writeDemo creates a disk image at path holding two snapshots (generations
// 1 and 2) of a demo guest with size bytes of RAM.
func writeDemo(path string, size int64) error {
	dev, err := filedev.Create(path, snapshot.DataStart+2*(size+1<<20), 512)
	if err != nil {
		return err
	}
	defer dev.Close()
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		return err
	}
	m := demoManifest(size)
	for gen := 1; gen <= 2; gen++ {
		mem := demoGuest(size, int64(gen))
		h := snapshot.Header{VMName: "demo", VMID: [16]byte{0xde, 0x30}, Created: 1767225600e9 + int64(gen)*1e9}
		if _, err := s.Save(snapshot.SaveOptions{Header: h}, saveGuest(mem, m, gen)); err != nil {
			return err
		}
	}
	return nil
}
