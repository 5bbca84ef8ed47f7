package snapshot

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "regenerate testdata fixtures and fuzz seeds")

const manifestV1Fixture = "testdata/manifest-v1.snap"

// fixtureVM is the VM stored in the version 1 fixture.
func fixtureVM() *testVM {
	vm := tinyVM(42)
	vm.mem.b[testHighGPA+5] = 0x5a
	vm.manifest.CPUID = nil
	vm.manifest.Properties = nil
	return vm
}

// encodeV1 encodes vm with a version 1 manifest, as an old tamavisor did.
func encodeV1(t testing.TB, vm *testVM) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Generation: 1, Created: 1600000000e9, VMName: "v1 guest"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.ramVersion1 = true // the fixture predates RAM chunk version 2
	if err := w.writeRawManifest(vm.manifest, 1, encodeManifestV1(vm.manifest)); err != nil {
		t.Fatal(err)
	}
	for i, b := range vm.vcpus {
		w.WriteChunk(TypeVCPU, uint32(i), 1, Required, b)
	}
	for _, d := range vm.manifest.Devices {
		w.WriteDevice(d.Name, d.Instance, vm.devs[d.Name])
	}
	if err := w.WriteRAM(vm.mem, vm.ranges, RAMOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestGenerateFixtures writes the checked-in fixtures; run with -update.
func TestGenerateFixtures(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate testdata")
	}
	os.MkdirAll("testdata", 0o755)
	if err := os.WriteFile(manifestV1Fixture, encodeV1(t, fixtureVM()), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFuzzSeeds(t)
}

func TestManifestV1FixtureUpgrade(t *testing.T) {
	b, err := os.ReadFile(manifestV1Fixture)
	if err != nil {
		t.Fatal(err)
	}
	vm := fixtureVM()
	sink := &guestMem{b: make([]byte, len(vm.mem.b))}
	snap, err := decodeBytes(b, DecodeOptions{Registry: testRegistry(t), Memory: sink})
	if err != nil {
		t.Fatal(err)
	}
	if c := snap.Chunks[0]; c.Type != TypeManifest || c.Version != 1 {
		t.Fatalf("fixture chunk 0 is %q v%d, want manifest v1", c.Type, c.Version)
	}
	want := *vm.manifest
	want.CPUID = nil
	want.Properties = []Property{{Key: "upgraded-from", Value: "manifest v1"}}
	if !reflect.DeepEqual(snap.Manifest, &want) {
		t.Errorf("upgraded manifest = %+v\nwant %+v", snap.Manifest, &want)
	}
	if !bytes.Equal(sink.b[:testLowEnd], vm.mem.b[:testLowEnd]) || !bytes.Equal(sink.b[testHighGPA:], vm.mem.b[testHighGPA:]) {
		t.Error("fixture RAM differs")
	}
	// The fixture is what this code would write for a v1 manifest: the
	// v1 encoder and the fixture agree.
	if !bytes.Equal(b, encodeV1(t, vm)) {
		t.Error("fixture differs from encodeManifestV1 output (format changed?)")
	}
}

func TestNewerVersionRefused(t *testing.T) {
	vm := newTestVM(7, 2<<20)
	// manifest version 3 (this reader knows 2)
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{Generation: 1}, nil)
	w.writeRawManifest(vm.manifest, 3, vm.manifest.Encode())
	w.Close()
	_, err := decodeBytes(buf.Bytes(), DecodeOptions{})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), `chunk "manifest"`) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("manifest v3: %v", err)
	}
	// vcpu version 2 (registry knows 1)
	buf.Reset()
	vm.manifest.Devices = nil
	w, _ = NewWriter(&buf, Header{Generation: 1}, nil)
	w.WriteManifest(vm.manifest)
	w.WriteChunk(TypeVCPU, 1, 2, Required, []byte{1})
	w.Close()
	_, err = decodeBytes(buf.Bytes(), DecodeOptions{Registry: testRegistry(t)})
	var ce *ChunkError
	if !errors.Is(err, ErrVersion) || !errors.As(err, &ce) || ce.Type != TypeVCPU || ce.Instance != 1 || ce.Index != 1 {
		t.Errorf("vcpu v2: %v", err)
	}
	// A raw device codec refuses a newer device state version too.
	r := NewRegistry()
	r.RegisterRaw("dev:uart16550", 2)
	r.RegisterRaw("dev:debugport", 1)
	r.RegisterRaw(TypeVCPU, 1)
	_, err = decodeBytes(newTestVM(7, 2<<20).encode(t, 1, nil), DecodeOptions{Registry: r})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), `"dev:uart16550"`) {
		t.Errorf("device v3 with reader v2: %v", err)
	}
}

func TestUnknownChunks(t *testing.T) {
	vm := newTestVM(8, 2<<20)
	vm.extra = true
	b := vm.encode(t, 1, nil)
	var notices []string
	snap, err := decodeBytes(b, DecodeOptions{Registry: testRegistry(t), Notice: func(s string) { notices = append(notices, s) }})
	if err != nil {
		t.Fatal(err)
	}
	c := snap.Find("x-trace", 0)
	if c == nil || !c.Skipped || c.Known || c.Body != nil {
		t.Errorf("optional unknown chunk = %+v", c)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], `"x-trace"`) {
		t.Errorf("notices = %q", notices)
	}
	// Unknown required chunk: refused, naming it.
	var buf bytes.Buffer
	vm.manifest.Devices = nil
	w, _ := NewWriter(&buf, Header{Generation: 1}, nil)
	w.WriteManifest(vm.manifest)
	w.WriteChunk("x-future", 0, 1, Required, []byte("?"))
	w.Close()
	_, err = decodeBytes(buf.Bytes(), DecodeOptions{Registry: testRegistry(t)})
	if !errors.Is(err, ErrUnknownChunk) || !strings.Contains(err.Error(), `chunk "x-future" (index 1)`) {
		t.Errorf("unknown required: %v", err)
	}
	// Inspect mode keeps it.
	snap, err = decodeBytes(buf.Bytes(), DecodeOptions{Inspect: true})
	if err != nil || snap.Find("x-future", 0) == nil || string(snap.Find("x-future", 0).Body) != "?" {
		t.Errorf("inspect: %v", err)
	}
}

func TestRegistryChecks(t *testing.T) {
	r := NewRegistry()
	dec := func(d *Decoder) (any, error) { return nil, nil }
	if err := r.Register(Codec{Type: "a", Current: 2, Decoders: map[uint16]DecodeFunc{1: dec, 2: dec}}); err == nil {
		t.Error("missing upgrade accepted")
	}
	if err := r.Register(Codec{Type: "a", Current: 2, Decoders: map[uint16]DecodeFunc{1: dec}}); err == nil {
		t.Error("missing current decoder accepted")
	}
	if err := r.Register(Codec{Type: TypeRAM, Current: 1}); err == nil {
		t.Error("reserved type accepted")
	}
	if err := r.Register(Codec{Type: TypeManifest, Current: 1}); err == nil {
		t.Error("duplicate type accepted")
	}
	if err := r.Register(Codec{Type: TypeChain, Current: 1}); err == nil {
		t.Error("the store's chain type accepted")
	}
	if err := r.Register(Codec{Type: "bad name", Current: 1}); err == nil {
		t.Error("type with a space accepted")
	}
	// Upgrade chains run in order.
	up := func(v any) (any, error) { return v.(int) * 10, nil }
	r.MustRegister(Codec{Type: "upgraded", Current: 3,
		Decoders: map[uint16]DecodeFunc{1: func(d *Decoder) (any, error) { return int(d.U8()), d.Finish() }, 3: dec},
		Upgrades: map[uint16]UpgradeFunc{1: up, 2: func(v any) (any, error) { return v.(int) + 1, nil }}})
	v, err := r.Lookup("upgraded").decode(1, []byte{4})
	if err != nil || v != 41 {
		t.Errorf("chain decode = %v, %v", v, err)
	}
	if _, err := r.Lookup("upgraded").decode(2, nil); !errors.Is(err, ErrVersion) {
		t.Errorf("version without decoder: %v", err)
	}
}
