package pci

import (
	"encoding/binary"
	"slices"
	"testing"
)

// fakeFn is one function's configuration space. BAR i decodes sizes[i]
// bytes (0: not implemented); the low bits of a BAR are fixed flags.
type fakeFn struct {
	regs  [64]uint32
	sizes [6]uint64
}

// fakeCfg is configuration space with a few functions.
type fakeCfg struct {
	t      *testing.T
	fns    map[Addr]*fakeFn
	writes int
}

func (c *fakeCfg) Read32(a Addr, off uint16) uint32 {
	f, ok := c.fns[a]
	if !ok {
		return allOnes32
	}
	if off%4 != 0 || int(off/4) >= len(f.regs) {
		c.t.Errorf("read of %v offset %#x", a, off)
		return 0
	}
	return f.regs[off/4]
}

func (c *fakeCfg) Write32(a Addr, off uint16, v uint32) {
	f, ok := c.fns[a]
	if !ok {
		c.t.Errorf("write to absent function %v", a)
		return
	}
	c.writes++
	i := int(off-BAR0) / barStride
	switch {
	case off == Command:
		f.regs[off/4] = f.regs[off/4]&^commandMask16 | v&commandMask16
	case off >= BAR0 && i < len(f.sizes):
		if f.regs[Command/4]&(1<<Command_MEM|1<<Command_IO) != 0 && v == allOnes32 {
			c.t.Errorf("%v: BAR %d sized with decoding on", a, i)
		}
		f.regs[off/4] = f.writeBAR(i, v)
	default:
		f.regs[off/4] = v
	}
}

// writeBAR keeps the address bits a BAR of its size implements.
func (f *fakeFn) writeBAR(i int, v uint32) uint32 {
	old := f.regs[BAR0/4+i]
	switch {
	case f.sizes[i] != 0:
		flags := uint64(barMemMask)
		if old&(1<<BAR_IO) != 0 {
			flags = barIOMask
		}
		return uint32(uint64(v)&^(f.sizes[i]-1)&^flags | uint64(old)&flags)
	case i > 0 && f.sizes[i-1] > 0 && f.regs[BAR0/4+i-1]>>BAR_TYPE&barTypeMask == barType64: // upper half
		return uint32((uint64(v) << 32 &^ (f.sizes[i-1] - 1)) >> 32)
	}
	return 0
}

func (c *fakeCfg) add(a Addr, vendor, device uint16, class uint32, header uint8) *fakeFn {
	f := &fakeFn{}
	f.regs[VendorID/4] = uint32(device)<<16 | uint32(vendor)
	f.regs[ClassRevision/4] = class<<progIFShift | 1
	f.regs[HeaderType/4] = uint32(header) << headerTypeShift
	f.regs[Command/4] = 1<<Command_MEM | 1<<Command_IO
	c.fns[a] = f
	return f
}

const (
	nvmeClass   = ClassStorage<<16 | SubclassNVM<<8 | ProgIFNVMe
	netClass    = ClassNetwork << 16
	bridgeClass = 0x060400
	vendorA     = 0x144d
	vendorB     = 0x8086
)

func newCfg(t *testing.T) *fakeCfg {
	c := &fakeCfg{t: t, fns: map[Addr]*fakeFn{}}
	c.add(Addr{0, 0, 0}, vendorB, 1, 0x060000, layoutDevice)
	c.add(Addr{0, 1, 0}, vendorB, 2, bridgeClass, layoutBridge|headerMulti)
	c.add(Addr{0, 1, 3}, vendorB, 3, netClass, layoutDevice) // function 3 of a multi-function device
	c.add(Addr{0, 2, 5}, vendorB, 9, netClass, layoutDevice) // hidden: function 0 absent
	c.add(Addr{0, 3, 0}, vendorB, 4, netClass, layoutDevice)
	c.add(Addr{0, 3, 1}, vendorB, 5, netClass, layoutDevice) // hidden: function 0 not multi-function
	nv := c.add(Addr{2, 0, 0}, vendorA, 0xa808, nvmeClass, layoutDevice)
	nv.regs[BAR0/4] = 0xfe000000 | barType64<<BAR_TYPE | 1<<BAR_PREFETCH
	nv.regs[BAR0/4+1] = 0x1
	nv.sizes[0] = 16 << 10
	nv.regs[BAR0/4+2] = 0xd001 // I/O BAR
	nv.sizes[2] = 0x20
	nv.regs[BAR0/4+3] = 0xfd000000 // 32-bit memory BAR
	nv.sizes[3] = 1 << 20
	big := c.add(Addr{3, 0, 0}, vendorA, 0xa809, nvmeClass, layoutDevice)
	big.regs[BAR0/4+4] = barType64 << BAR_TYPE
	big.regs[BAR0/4+5] = 0x40
	big.sizes[4] = 8 << 30 // 8 GiB: only the upper half is writable
	return c
}

func TestECAM(t *testing.T) {
	e := ECAM{Base: 0xb000_0000, StartBus: 1, EndBus: 0x7f}
	for _, tc := range []struct {
		a    Addr
		off  uint16
		want uint64
		ok   bool
	}{
		{Addr{1, 0, 0}, 0, 0xb010_0000, true},
		{Addr{2, 3, 4}, 0x10, 0xb000_0000 + 2<<20 + 3<<15 + 4<<12 + 0x10, true},
		{Addr{0x7f, 31, 7}, 0xffc, 0xb7ff_fffc, true},
		{Addr{0, 0, 0}, 0, 0, false},
		{Addr{0x80, 0, 0}, 0, 0, false},
		{Addr{1, 32, 0}, 0, 0, false},
		{Addr{1, 0, 8}, 0, 0, false},
		{Addr{1, 0, 0}, 0x1000, 0, false},
	} {
		got, ok := e.Address(tc.a, tc.off)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Address(%v, %#x) = %#x, %v; want %#x, %v", tc.a, tc.off, got, ok, tc.want, tc.ok)
		}
	}
}

func mcfg(entries ...ECAM) []byte {
	b := make([]byte, mcfgHeaderLen+mcfgEntryLen*len(entries))
	copy(b, mcfgSignature)
	binary.LittleEndian.PutUint32(b[acpiLengthOff:], uint32(len(b)))
	for i, e := range entries {
		p := b[mcfgHeaderLen+mcfgEntryLen*i:]
		binary.LittleEndian.PutUint64(p[mcfgBase:], e.Base)
		binary.LittleEndian.PutUint16(p[mcfgSegment:], e.Segment)
		p[mcfgStartBus], p[mcfgEndBus] = e.StartBus, e.EndBus
	}
	return b
}

func TestParseMCFG(t *testing.T) {
	want := []ECAM{{Base: 0xe000_0000, EndBus: 0xff}, {Base: 0x3_0000_0000, Segment: 1, StartBus: 0x10, EndBus: 0x1f}}
	got, err := ParseMCFG(mcfg(want...))
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ParseMCFG = %+v, %v", got, err)
	}
	short := mcfg(want...)
	binary.LittleEndian.PutUint32(short[acpiLengthOff:], mcfgHeaderLen+mcfgEntryLen+3)
	for name, b := range map[string][]byte{
		"signature": append([]byte("APIC"), mcfg(want...)[4:]...),
		"truncated": mcfg(want...)[:mcfgHeaderLen+mcfgEntryLen],
		"length":    short,
		"bus-range": mcfg(ECAM{Base: 0xe000_0000, StartBus: 5, EndBus: 4}),
		"unaligned": mcfg(ECAM{Base: 0xe000_1000, EndBus: 1}),
		"tiny":      []byte("MCFG"),
	} {
		if _, err := ParseMCFG(b); err == nil {
			t.Errorf("%s: ParseMCFG accepted a bad table", name)
		}
	}
}

func TestEnumerate(t *testing.T) {
	c := newCfg(t)
	fs := Enumerate(c, 0, 3)
	var got []Addr
	for _, f := range fs {
		got = append(got, f.Addr)
	}
	want := []Addr{{0, 0, 0}, {0, 1, 0}, {0, 1, 3}, {0, 3, 0}, {2, 0, 0}, {3, 0, 0}}
	if !slices.Equal(got, want) {
		t.Fatalf("Enumerate found %v, want %v", got, want)
	}
	if !fs[1].Bridge || fs[0].Bridge || fs[4].VendorID != vendorA || fs[4].DeviceID != 0xa808 || fs[4].Class != nvmeClass || fs[4].Revision != 1 {
		t.Errorf("functions %+v", fs)
	}
	nvme := Find(fs, ClassStorage, SubclassNVM, ProgIFNVMe)
	if len(nvme) != 2 || nvme[0].Addr != (Addr{2, 0, 0}) || nvme[1].Addr != (Addr{3, 0, 0}) {
		t.Errorf("Find NVMe = %+v", nvme)
	}
	if n := Find(fs, ClassNetwork, 0, 0); len(n) != 2 {
		t.Errorf("Find network = %+v", n)
	}
	if c.writes != 0 {
		t.Errorf("Enumerate wrote configuration space %d times", c.writes)
	}
}

func TestBARs(t *testing.T) {
	c := newCfg(t)
	before := c.fns[Addr{2, 0, 0}].regs
	bars, err := BARs(c, Addr{2, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	want := []BAR{
		{Index: 0, Addr: 0x1_fe00_0000, Size: 16 << 10, Is64: true, Prefetchable: true},
		{Index: 2, Addr: 0xd000, Size: 0x20, IO: true},
		{Index: 3, Addr: 0xfd00_0000, Size: 1 << 20},
		{Index: 4}, {Index: 5},
	}
	if !slices.Equal(bars, want) {
		t.Fatalf("BARs =\n%+v, want\n%+v", bars, want)
	}
	if after := c.fns[Addr{2, 0, 0}].regs; after != before {
		t.Errorf("sizing changed configuration space:\n%x\n%x", before, after)
	}
	bars, err = BARs(c, Addr{3, 0, 0})
	if err != nil || bars[4] != (BAR{Index: 4, Addr: 0x40_0000_0000, Size: 8 << 30, Is64: true}) {
		t.Fatalf("8 GiB BAR: %+v, %v", bars, err)
	}
	bars, err = BARs(c, Addr{0, 1, 0})
	if err != nil || len(bars) != barsBridge {
		t.Fatalf("bridge BARs: %+v, %v", bars, err)
	}
	c.fns[Addr{0, 0, 0}].regs[HeaderType/4] = 0x02 << headerTypeShift // CardBus
	if _, err := BARs(c, Addr{0, 0, 0}); err == nil {
		t.Error("BARs of a CardBus header succeeded")
	}
	f := c.add(Addr{4, 0, 0}, vendorA, 1, nvmeClass, layoutDevice)
	f.regs[BAR0/4+5] = barType64 << BAR_TYPE
	f.sizes[5] = pageSizeTest
	if _, err := BARs(c, Addr{4, 0, 0}); err == nil {
		t.Error("64-bit BAR 5 without an upper half accepted")
	}
}

const pageSizeTest = 4096

func TestEnableMemory(t *testing.T) {
	c := newCfg(t)
	a := Addr{2, 0, 0}
	c.fns[a].regs[Command/4] = 0xabcd_0000 // status bits, nothing enabled
	EnableMemory(c, a)
	if got := c.fns[a].regs[Command/4]; got != 0xabcd_0000|1<<Command_MEM|1<<Command_BUSMASTER {
		t.Errorf("Command/Status = %#x", got)
	}
}
