package snapshot

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestStreamRoundTrip(t *testing.T) {
	vm := newTestVM(1, 4<<20)
	b := vm.encode(t, 5, nil)
	sink := &guestMem{b: make([]byte, len(vm.mem.b))}
	for i := range sink.b {
		sink.b[i] = 0xAA // restore must clear zero pages
	}
	snap, err := decodeBytes(b, DecodeOptions{Registry: testRegistry(t), Memory: sink})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Header.Generation != 5 || snap.Header.VMName != "test vm" || snap.Header.VMID != [16]byte{1, 2, 3} || snap.Header.Created != 1700000000e9 {
		t.Errorf("header = %+v", snap.Header)
	}
	if !reflect.DeepEqual(snap.Manifest, vm.manifest) {
		t.Errorf("manifest = %+v, want %+v", snap.Manifest, vm.manifest)
	}
	// Only RAM ranges are restored; the MMIO hole stays untouched.
	for _, r := range vm.ranges {
		if !bytes.Equal(sink.b[r.GPA:r.GPA+r.Size], vm.mem.b[r.GPA:r.GPA+r.Size]) {
			t.Errorf("RAM range %#x differs after restore", r.GPA)
		}
	}
	if sink.b[testLowEnd] != 0xAA {
		t.Errorf("MMIO hole was written")
	}
	for i := range vm.vcpus {
		c := snap.Find(TypeVCPU, uint32(i))
		if c == nil {
			t.Fatalf("vcpu %d missing", i)
		}
		v := c.Value.(*vcpuState)
		if v.RIP != 0xfff0+uint64(i) || v.TSC != 0x1122334455667788 || v.FPU != "fpu" {
			t.Errorf("vcpu %d = %+v", i, v)
		}
	}
	for name, state := range vm.devs {
		c := snap.Find(DevicePrefix+name, 0)
		if c == nil || !bytes.Equal(c.Value.([]byte), state) {
			t.Errorf("device %s state = %v", name, c)
		}
	}
	if snap.Authenticated {
		t.Error("unkeyed snapshot reported authenticated")
	}
	if snap.RAM == nil || len(snap.RAM.Ranges) != 2 || snap.RAM.Bytes() != uint64(len(vm.mem.b))-(testHighGPA-testLowEnd) {
		t.Errorf("RAM info = %+v", snap.RAM)
	}
	// Re-encoding gives the same bytes: the encoding is deterministic.
	if !bytes.Equal(b, vm.encode(t, 5, nil)) {
		t.Error("encoding is not deterministic")
	}
}

func TestZeroPagesElided(t *testing.T) {
	vm := newTestVM(2, 8<<20)
	var nonZero uint64
	for p := 0; p < len(vm.mem.b)/PageSize; p++ {
		if !IsZeroPage(vm.mem.b[p*PageSize : (p+1)*PageSize]) {
			nonZero++
		}
	}
	b := vm.encode(t, 1, nil)
	snap, err := decodeBytes(b, DecodeOptions{Registry: testRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	var data uint64
	for _, r := range snap.RAM.Ranges {
		data += r.Data
		if r.Carried != r.Pages {
			t.Errorf("full snapshot range %#x carries %d of %d pages", r.GPA, r.Carried, r.Pages)
		}
	}
	if data != nonZero {
		t.Errorf("data pages %d, want %d", data, nonZero)
	}
	if max := nonZero*PageSize + 64<<10; uint64(len(b)) > max {
		t.Errorf("stream %d bytes, want <= %d", len(b), max)
	}
	// An all-zero guest costs almost nothing.
	empty := newTestVM(3, 8<<20)
	clear(empty.mem.b)
	if n := len(empty.encode(t, 1, nil)); n > 4096 {
		t.Errorf("all-zero 8 MiB guest takes %d bytes", n)
	}
}

func TestIsZeroPage(t *testing.T) {
	p := make([]byte, PageSize)
	if !IsZeroPage(p) {
		t.Fatal("zero page not detected")
	}
	for _, i := range []int{0, 7, 8, 63, 64, 2049, PageSize - 1} {
		p[i] = 1
		if IsZeroPage(p) {
			t.Errorf("byte %d set: reported zero", i)
		}
		p[i] = 0
	}
	if IsZeroPage([]byte{0, 0, 1}) || !IsZeroPage([]byte{0, 0, 0}) {
		t.Error("short input")
	}
}

func TestIncrementalRAM(t *testing.T) {
	base := newTestVM(4, 2<<20)
	cur := newTestVM(4, 2<<20)
	// Dirty pages: page 3 gets new data, page 5 becomes zero, page 200
	// (in the high range) new data.
	dirty := map[uint64]bool{3 * PageSize: true, 5 * PageSize: true, testHighGPA + 10*PageSize: true}
	for gpa := range dirty {
		for i := uint64(0); i < PageSize; i++ {
			cur.mem.b[gpa+i] = byte(gpa>>12) + 1
		}
	}
	clear(cur.mem.b[5*PageSize : 6*PageSize])
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Generation: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteManifest(cur.manifest); err != nil {
		t.Fatal(err)
	}
	for i, b := range cur.vcpus {
		w.WriteChunk(TypeVCPU, uint32(i), 1, Required, b)
	}
	for _, d := range cur.manifest.Devices {
		w.WriteDevice(d.Name, d.Instance, cur.devs[d.Name])
	}
	opts := RAMOptions{BaseGeneration: 1, BaseDigest: [32]byte{9}, Carried: func(i int) []byte {
		r := cur.ranges[i]
		bm := make([]byte, bitmapLen(r.Size/PageSize))
		for gpa := range dirty {
			if gpa >= r.GPA && gpa < r.GPA+r.Size {
				p := (gpa - r.GPA) / PageSize
				bm[p/8] |= 1 << (p % 8)
			}
		}
		return bm
	}}
	if err := w.WriteRAM(cur.mem, cur.ranges, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 4*PageSize+2048 {
		t.Errorf("incremental snapshot of 3 dirty pages is %d bytes", buf.Len())
	}
	// Apply it on top of the base memory.
	sink := &guestMem{b: append([]byte(nil), base.mem.b...)}
	snap, err := decodeBytes(buf.Bytes(), DecodeOptions{Registry: testRegistry(t), Memory: sink})
	if err != nil {
		t.Fatal(err)
	}
	if !snap.RAM.Incremental || snap.RAM.BaseGeneration != 1 || snap.RAM.BaseDigest != [32]byte{9} {
		t.Errorf("RAM info = %+v", snap.RAM)
	}
	var carried, data uint64
	for _, r := range snap.RAM.Ranges {
		carried += r.Carried
		data += r.Data
	}
	if carried != 3 || data != 2 {
		t.Errorf("carried %d data %d, want 3 and 2", carried, data)
	}
	if !bytes.Equal(sink.b[:testLowEnd], cur.mem.b[:testLowEnd]) || !bytes.Equal(sink.b[testHighGPA:], cur.mem.b[testHighGPA:]) {
		t.Error("base + incremental differs from the current memory")
	}
}

func TestWriterRules(t *testing.T) {
	vm := newTestVM(5, 2<<20)
	newW := func() *Writer {
		w, err := NewWriter(&bytes.Buffer{}, Header{Generation: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := newW()
	if err := w.WriteChunk(TypeVCPU, 0, 1, Required, nil); err == nil {
		t.Error("chunk before manifest accepted")
	}
	w = newW()
	w.WriteManifest(vm.manifest)
	if err := w.WriteChunk("dev:uart16550", 0, 2, Required, nil); err == nil {
		t.Error("device chunk with a version other than the manifest's accepted")
	}
	w = newW()
	w.WriteManifest(vm.manifest)
	if err := w.WriteChunk("dev:nosuch", 0, 1, 0, nil); err == nil {
		t.Error("device missing from the manifest accepted")
	}
	w = newW()
	w.WriteManifest(vm.manifest)
	w.WriteDevice("uart16550", 0, nil)
	if _, err := w.Close(); err == nil || !strings.Contains(err.Error(), "debugport") {
		t.Errorf("missing device state: %v", err)
	}
	w = newW()
	w.WriteManifest(vm.manifest)
	if err := w.WriteRAM(vm.mem, []MemRange{{testLowEnd, PageSize}}, RAMOptions{}); err == nil {
		t.Error("RAM range in an MMIO region accepted")
	}
	w = newW()
	w.WriteManifest(vm.manifest)
	w.WriteChunk(TypeVCPU, 0, 1, Required, nil)
	if err := w.WriteChunk(TypeVCPU, 0, 1, Required, nil); err == nil {
		t.Error("duplicate chunk accepted")
	}
	if _, err := NewWriter(&bytes.Buffer{}, Header{VMName: strings.Repeat("x", 33)}, nil); err == nil {
		t.Error("long VM name accepted")
	}
}

func TestTruncatedStream(t *testing.T) {
	b := newTestVM(6, 2<<20).encode(t, 1, nil)
	for _, n := range []int{0, 10, HeaderSize, HeaderSize + 30, len(b) / 2, len(b) - 1} {
		_, err := decodeBytes(b[:n], DecodeOptions{Registry: testRegistry(t)})
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	_, err := decodeBytes(append(b, 0), DecodeOptions{Registry: testRegistry(t)})
	if err == nil {
		t.Error("trailing byte accepted")
	}
}

// TestDecodeLimits: a reader's memory caps hold before any checksum can be
// checked (a hostile stream must not exhaust a 512 MiB heap).
func TestDecodeLimits(t *testing.T) {
	vm := newTestVM(7, 1<<20+64<<10)
	b := vm.encode(t, 1, nil)
	reg := testRegistry(t)
	if _, err := decodeBytes(b, DecodeOptions{Registry: reg, MaxRAM: 512 << 10}); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("MaxRAM: %v", err)
	}
	if _, err := decodeBytes(b, DecodeOptions{Registry: reg, MaxRetained: 64}); err == nil || !strings.Contains(err.Error(), "in all") {
		t.Errorf("MaxRetained: %v", err)
	}
	if _, err := decodeBytes(b, DecodeOptions{Registry: reg, MaxRAM: 8 << 20}); err != nil {
		t.Errorf("within the limits: %v", err)
	}
}

// TestProgress: the writer reports page bytes written up to exactly the
// data to write (zero pages excluded) and the reader the stream bytes read
// up to its size; both end at 100% and never go back.
func TestProgress(t *testing.T) {
	vm := newTestVM(3, 4<<20)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Generation: 1, VMName: "p"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var calls, last, total uint64
	if err := w.WriteManifest(vm.manifest); err != nil {
		t.Fatal(err)
	}
	for i, b := range vm.vcpus {
		w.WriteChunk(TypeVCPU, uint32(i), 1, Required, b)
	}
	for _, d := range vm.manifest.Devices {
		w.WriteDevice(d.Name, d.Instance, vm.devs[d.Name])
	}
	err = w.WriteRAM(vm.mem, vm.ranges, RAMOptions{Progress: func(done, tot uint64) {
		calls++
		if done < last || tot == 0 || done > tot || total != 0 && tot != total {
			t.Fatalf("progress %d/%d after %d/%d", done, tot, last, total)
		}
		last, total = done, tot
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	snap, err := decodeBytes(buf.Bytes(), DecodeOptions{Registry: testRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	var data uint64
	for _, r := range snap.RAM.Ranges {
		data += r.Data * PageSize
	}
	if last != total || total != data || calls < 2 {
		t.Errorf("write progress ended at %d/%d after %d calls; the chunk has %d data bytes", last, total, calls, data)
	}
	last, total = 0, 0
	_, err = decodeBytes(buf.Bytes(), DecodeOptions{Registry: testRegistry(t), Progress: func(done, tot uint64) {
		if done < last || done > tot {
			t.Fatalf("read progress %d/%d after %d", done, tot, last)
		}
		last, total = done, tot
	}})
	if err != nil {
		t.Fatal(err)
	}
	if last != total || total != uint64(buf.Len()) {
		t.Errorf("read progress ended at %d/%d for a %d-byte stream", last, total, buf.Len())
	}
}

// viewMem is guestMem that also lets the writer and reader work in place.
type viewMem struct{ *guestMem }

func (v viewMem) View(gpa, n uint64) ([]byte, bool) {
	if gpa+n > uint64(len(v.b)) || gpa+n < gpa {
		return nil, false
	}
	return v.b[gpa : gpa+n], true
}

// TestViewerSameStream: reading guest memory in place (Viewer) writes the
// same stream as copying it out, and decoding into a Viewer sink gives
// the same memory.
func TestViewerSameStream(t *testing.T) {
	vm := newTestVM(41, 4<<20)
	want := vm.encode(t, 1, nil)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Generation: 1, Created: 1700000000e9, VMName: "test vm", VMID: [16]byte{1, 2, 3}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteManifest(vm.manifest); err != nil {
		t.Fatal(err)
	}
	for i, b := range vm.vcpus {
		w.WriteChunk(TypeVCPU, uint32(i), 1, Required, b)
	}
	for _, d := range vm.manifest.Devices {
		w.WriteDevice(d.Name, d.Instance, vm.devs[d.Name])
	}
	if err := w.WriteRAM(viewMem{vm.mem}, vm.ranges, RAMOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatal("the stream written through a Viewer differs")
	}
	sink := viewMem{&guestMem{b: make([]byte, len(vm.mem.b))}}
	if _, err := decodeBytes(want, DecodeOptions{Registry: testRegistry(t), Memory: sink}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.b, vm.mem.b) {
		t.Error("memory decoded into a Viewer differs")
	}
}
