package ioapic

import (
	"bytes"
	"errors"
	"testing"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/devices/lapic"
	"tamavisor/kernel/event"
)

var _ Target = (*lapic.LAPIC)(nil)

// recorder is a Target that records deliveries.
type recorder struct{ got []delivery }

type delivery struct {
	vector uint8
	level  bool
}

func (r *recorder) Deliver(v uint8, level bool) { r.got = append(r.got, delivery{v, level}) }

// take returns and forgets the deliveries so far.
func (r *recorder) take() []delivery {
	g := r.got
	r.got = nil
	return g
}

func newTest() (*IOAPIC, *recorder) {
	r := &recorder{}
	return New(r), r
}

func readReg(io *IOAPIC, reg uint8) uint32 {
	io.Write(IOREGSEL, 4, uint64(reg))
	return uint32(io.Read(IOWIN, 4))
}

func writeReg(io *IOAPIC, reg uint8, v uint32) {
	io.Write(IOREGSEL, 4, uint64(reg))
	io.Write(IOWIN, 4, uint64(v))
}

// route programs pin's entry (low half) with the high half 0.
func route(io *IOAPIC, pin int, low uint32) {
	writeReg(io, IOREDTBL+2*uint8(pin)+1, 0)
	writeReg(io, IOREDTBL+2*uint8(pin), low)
}

func entry(io *IOAPIC, pin int) uint64 {
	lo := readReg(io, IOREDTBL+2*uint8(pin))
	hi := readReg(io, IOREDTBL+2*uint8(pin)+1)
	return uint64(hi)<<32 | uint64(lo)
}

func same(a, b []delivery) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRegisters(t *testing.T) {
	io, _ := newTest()
	if got := readReg(io, IOAPICVER); got != 0x00170020 {
		t.Errorf("IOAPICVER = %#x, want 0x00170020", got)
	}
	if got := readReg(io, IOAPICID); got != 0 {
		t.Errorf("IOAPICID = %#x after reset", got)
	}
	writeReg(io, IOAPICID, 0xFFFFFFFF)
	if got := readReg(io, IOAPICID); got != 0x0F000000 {
		t.Errorf("IOAPICID = %#x after writing ones, want 0x0f000000", got)
	}
	if got := readReg(io, IOAPICARB); got != 0x0F000000 {
		t.Errorf("IOAPICARB = %#x, want the ID", got)
	}
	writeReg(io, IOAPICVER, 0)
	writeReg(io, IOAPICARB, 0)
	if readReg(io, IOAPICVER) != 0x00170020 || readReg(io, IOAPICARB) != 0x0F000000 {
		t.Error("read-only register written")
	}
	for pin := 0; pin < Pins; pin++ {
		if got := entry(io, pin); got != MASK {
			t.Fatalf("entry %d = %#x after reset, want masked", pin, got)
		}
	}
	// Writable bits: DELIVS and remote IRR are read only.
	writeReg(io, IOREDTBL+2*5, 0xFFFFFFFF)
	writeReg(io, IOREDTBL+2*5+1, 0xFFFFFFFF)
	if got := entry(io, 5); got != 0xFF0000000001AFFF {
		t.Errorf("entry 5 = %#x after writing ones, want 0xff0000000001afff", got)
	}
	// Neighbours untouched; undefined indices read 0.
	if entry(io, 4) != MASK || entry(io, 6) != MASK {
		t.Error("write reached a neighbouring entry")
	}
	for _, reg := range []uint8{0x03, 0x0F, IOREDTBL + 2*Pins, 0xFF} {
		writeReg(io, reg, 0xFFFFFFFF)
		if got := readReg(io, reg); got != 0 {
			t.Errorf("register %#x = %#x, want 0", reg, got)
		}
	}
	// IOREGSEL reads back its low byte.
	io.Write(IOREGSEL, 4, 0x12345678)
	if got := io.Read(IOREGSEL, 4); got != 0x78 {
		t.Errorf("IOREGSEL = %#x, want 0x78", got)
	}
	// Sizes other than 4 and other offsets do nothing.
	io.Write(IOREGSEL, 4, IOAPICID)
	io.Write(IOWIN, 1, 0)
	io.Write(IOWIN, 8, 0)
	io.Write(0x20, 4, 0)
	if readReg(io, IOAPICID) != 0x0F000000 {
		t.Error("a wrong-size write reached IOWIN")
	}
	for _, c := range []struct {
		off  uint64
		size uint8
	}{{IOWIN, 1}, {IOWIN, 2}, {IOWIN, 8}, {IOREGSEL, 2}, {0x04, 4}, {0x20, 4}, {EOI, 4}, {Size, 4}} {
		if got := io.Read(c.off, c.size); got != 0 {
			t.Errorf("read %#x size %d = %#x, want 0", c.off, c.size, got)
		}
	}
}

func TestEdge(t *testing.T) {
	io, r := newTest()
	io.SetIRQ(4, true) // masked: ignored, not held
	route(io, 4, 0x24)
	if got := r.take(); len(got) != 0 {
		t.Fatalf("masked edge delivered on unmask: %v", got)
	}
	io.SetIRQ(4, false)
	io.SetIRQ(4, true)
	io.SetIRQ(4, true) // no edge
	if got := r.take(); !same(got, []delivery{{0x24, false}}) {
		t.Fatalf("deliveries %v, want one edge 0x24", got)
	}
	io.SetIRQ(4, false)
	io.SetIRQ(4, true)
	if got := r.take(); !same(got, []delivery{{0x24, false}}) {
		t.Fatalf("second edge: %v", got)
	}
	if entry(io, 4)&(REMOTE_IRR|DELIVS) != 0 {
		t.Error("edge entry shows remote IRR or busy delivery status")
	}
	// Mask while asserted, pulse, unmask: nothing.
	route(io, 4, 0x24|MASK)
	io.SetIRQ(4, false)
	io.SetIRQ(4, true)
	route(io, 4, 0x24)
	if got := r.take(); len(got) != 0 {
		t.Fatalf("masked edge delivered: %v", got)
	}
}

func TestLevelRemoteIRR(t *testing.T) {
	io, r := newTest()
	route(io, 9, TRIGGER|0x39)
	io.SetIRQ(9, true)
	if got := r.take(); !same(got, []delivery{{0x39, true}}) {
		t.Fatalf("deliveries %v, want level 0x39", got)
	}
	if entry(io, 9)&REMOTE_IRR == 0 {
		t.Fatal("remote IRR not set")
	}
	io.SetIRQ(9, true)
	io.SetIRQ(9, false)
	io.SetIRQ(9, true) // remote IRR holds everything back
	if got := r.take(); len(got) != 0 {
		t.Fatalf("delivered under remote IRR: %v", got)
	}
	io.EOI(0x40) // another vector
	if entry(io, 9)&REMOTE_IRR == 0 || len(r.take()) != 0 {
		t.Fatal("EOI of another vector cleared remote IRR")
	}
	io.EOI(0x39) // still asserted: sent again
	if got := r.take(); !same(got, []delivery{{0x39, true}}) {
		t.Fatalf("re-delivery %v", got)
	}
	if entry(io, 9)&REMOTE_IRR == 0 {
		t.Fatal("remote IRR not set again")
	}
	io.SetIRQ(9, false)
	io.Write(EOI, 4, 0x39) // EOI register
	if got := r.take(); len(got) != 0 || entry(io, 9)&REMOTE_IRR != 0 {
		t.Fatalf("EOI after deassert: %v, entry %#x", got, entry(io, 9))
	}
	// Remote IRR is read only.
	io.SetIRQ(9, true)
	r.take()
	writeReg(io, IOREDTBL+2*9, TRIGGER|0x39)
	if entry(io, 9)&REMOTE_IRR == 0 {
		t.Error("rewriting the entry cleared remote IRR")
	}
	// Switching to edge clears it.
	writeReg(io, IOREDTBL+2*9, 0x39)
	if entry(io, 9)&REMOTE_IRR != 0 {
		t.Error("edge entry kept remote IRR")
	}
}

func TestLevelMaskWhileAsserted(t *testing.T) {
	io, r := newTest()
	route(io, 3, TRIGGER|MASK|0x33)
	io.SetIRQ(3, true)
	if len(r.take()) != 0 || entry(io, 3)&REMOTE_IRR != 0 {
		t.Fatal("masked level input delivered")
	}
	route(io, 3, TRIGGER|0x33) // unmask while asserted
	if got := r.take(); !same(got, []delivery{{0x33, true}}) {
		t.Fatalf("unmask delivered %v", got)
	}
	route(io, 3, TRIGGER|MASK|0x33)
	io.EOI(0x33) // masked: remote IRR cleared, nothing sent
	if len(r.take()) != 0 || entry(io, 3)&REMOTE_IRR != 0 {
		t.Fatal("EOI on a masked entry")
	}
	io.SetIRQ(3, false)
	route(io, 3, TRIGGER|0x33) // unmask while deasserted
	if len(r.take()) != 0 {
		t.Fatal("deasserted input delivered on unmask")
	}
}

func TestActiveLow(t *testing.T) {
	io, r := newTest()
	io.SetIRQ(10, true) // idle high
	io.SetIRQ(11, true)
	route(io, 10, INTPOL|TRIGGER|0x50)
	route(io, 11, INTPOL|0x51)
	if len(r.take()) != 0 {
		t.Fatal("inactive low-active inputs delivered")
	}
	io.SetIRQ(10, false)
	io.SetIRQ(11, false) // falling edge = active edge
	if got := r.take(); !same(got, []delivery{{0x50, true}, {0x51, false}}) {
		t.Fatalf("deliveries %v", got)
	}
	io.SetIRQ(11, true) // rising edge: inactive
	io.SetIRQ(10, true)
	io.EOI(0x50)
	if got := r.take(); len(got) != 0 {
		t.Fatalf("inactive transitions delivered %v", got)
	}
}

func TestDeliveryModes(t *testing.T) {
	io, r := newTest()
	for i, mode := range []uint32{DELMOD_FIXED, DELMOD_LOPRI, DELMOD_SMI, DELMOD_NMI, DELMOD_INIT, DELMOD_EXTIN} {
		route(io, i, mode|TRIGGER|uint32(0x60+i))
		io.SetIRQ(i, true)
	}
	if got := r.take(); !same(got, []delivery{{0x60, true}, {0x61, true}}) {
		t.Fatalf("deliveries %v, want only fixed and lowest priority", got)
	}
	for i := 2; i < 6; i++ {
		if entry(io, i)&REMOTE_IRR != 0 {
			t.Errorf("entry %d: remote IRR set without delivery", i)
		}
	}
	// Out-of-range pins and a nil target.
	io.SetIRQ(-1, true)
	io.SetIRQ(Pins, true)
	io.SetIRQ(1000, true)
	io.IRQLine(Pins).Set(true)
	if len(r.take()) != 0 {
		t.Error("out-of-range pin delivered")
	}
	n := New(nil)
	route(n, 0, 0x30)
	n.SetIRQ(0, true)
	line := io.IRQLine(7)
	route(io, 7, 0x77)
	line.Set(true)
	if got := r.take(); !same(got, []delivery{{0x77, false}}) {
		t.Errorf("IRQLine delivered %v", got)
	}
}

func TestReset(t *testing.T) {
	io, r := newTest()
	route(io, 2, TRIGGER|0x42)
	writeReg(io, IOAPICID, 3<<24)
	io.SetIRQ(2, true)
	r.take()
	io.Reset()
	if entry(io, 2) != MASK || readReg(io, IOAPICID) != 0 {
		t.Error("Reset left registers set")
	}
	route(io, 2, TRIGGER|0x42) // the pin is still high
	if got := r.take(); !same(got, []delivery{{0x42, true}}) {
		t.Errorf("pin level lost by Reset: %v", got)
	}
}

// TestWithLAPIC runs a level interrupt through a real local APIC: inject,
// EOI to the LAPIC, EOI broadcast to the I/O APIC, re-delivery.
func TestWithLAPIC(t *testing.T) {
	now := int64(0)
	a := lapic.New(event.NewQueue(func() int64 { return now }), 0)
	io := New(a)
	a.OnEOI = io.EOI
	a.Write(lapic.SVR, 4, lapic.SVR_ASE|0xFF)
	route(io, 4, TRIGGER|INTPOL|0x34)
	irq := io.IRQLine(4)
	irq.Set(false) // active low: asserted
	v, ok := a.Pending()
	if !ok || v != 0x34 {
		t.Fatalf("Pending %#x %v", v, ok)
	}
	a.Ack(v)
	a.Write(lapic.EOI, 4, 0) // line still active: comes back
	if v, ok := a.Pending(); !ok || v != 0x34 {
		t.Fatalf("after EOI Pending %#x %v, want 0x34 again", v, ok)
	}
	a.Ack(0x34)
	irq.Set(true) // device satisfied
	a.Write(lapic.EOI, 4, 0)
	if _, ok := a.Pending(); ok || entry(io, 4)&REMOTE_IRR != 0 {
		t.Fatal("interrupt after the line went inactive")
	}
}

func TestStateRoundTrip(t *testing.T) {
	io, _ := newTest()
	writeReg(io, IOAPICID, 5<<24)
	route(io, 1, 0x31)
	route(io, 9, TRIGGER|INTPOL|0x39)
	writeReg(io, IOREDTBL+2*9+1, 0xAB000000)
	io.SetIRQ(1, true)
	io.SetIRQ(9, false)
	io.SetIRQ(23, true)
	io.Write(IOREGSEL, 4, IOREDTBL+3)
	st := io.MarshalState()
	if len(st) != stateLen {
		t.Fatalf("state is %d bytes", len(st))
	}
	n, r := newTest()
	if err := n.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(n.MarshalState(), st) {
		t.Fatal("round trip differs")
	}
	if len(r.take()) != 0 {
		t.Error("UnmarshalState delivered")
	}
	if got := n.Read(IOREGSEL, 4); got != IOREDTBL+3 {
		t.Errorf("IOREGSEL %#x", got)
	}
	if entry(n, 9)&REMOTE_IRR == 0 || entry(n, 9)>>56 != 0xAB {
		t.Errorf("entry 9 = %#x", entry(n, 9))
	}
	// Pin levels survive: no new edge on pin 1, EOI re-delivers pin 9.
	n.SetIRQ(1, true)
	n.EOI(0x39)
	if got := r.take(); !same(got, []delivery{{0x39, true}}) {
		t.Errorf("after restore: %v", got)
	}
}

func TestUnmarshalRefusals(t *testing.T) {
	io, _ := newTest()
	route(io, 0, TRIGGER|0x30)
	io.SetIRQ(0, true)
	good := io.MarshalState
	or := func(off int, v byte) []byte {
		b := good()
		b[off] |= v
		return b
	}
	for _, c := range []struct {
		name    string
		version uint16
		b       []byte
		want    error
	}{
		{"version 0", 0, good(), devices.ErrStateVersion},
		{"version 2", 2, good(), devices.ErrStateVersion},
		{"nil", StateVersion, nil, devices.ErrStateLength},
		{"short", StateVersion, good()[:stateLen-1], devices.ErrStateLength},
		{"long", StateVersion, append(good(), 0), devices.ErrStateLength},
		{"ID above 15", StateVersion, or(1, 0x10), devices.ErrStateInvalid},
		{"pin 24", StateVersion, or(5, 0x01), devices.ErrStateInvalid},
		{"delivery status", StateVersion, or(6+8*3+1, 0x10), devices.ErrStateInvalid},
		{"reserved bit 17", StateVersion, or(6+8*3+2, 0x02), devices.ErrStateInvalid},
		{"reserved bit 55", StateVersion, or(6+8*23+6, 0x80), devices.ErrStateInvalid},
		{"remote IRR on edge", StateVersion, or(6+8*2+1, 0x40), devices.ErrStateInvalid},
	} {
		n, _ := newTest()
		before := n.MarshalState()
		err := n.UnmarshalState(c.version, c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		if !bytes.Equal(n.MarshalState(), before) {
			t.Errorf("%s: failed UnmarshalState changed the state", c.name)
		}
	}
}
