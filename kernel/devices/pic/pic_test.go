package pic

import (
	"bytes"
	"errors"
	"testing"

	"tamavisor/kernel/devices"
)

func out(p *PIC, port uint16, v uint8) { p.Out(port, 1, uint32(v)) }
func in(p *PIC, port uint16) uint8     { return uint8(p.In(port, 1)) }

// linuxInit programs the pair the way Linux's init_8259A does, with
// vectors 0x30 and 0x38, and unmasks every IRQ.
func linuxInit(p *PIC) {
	out(p, MASTER_DATA, 0xFF)
	out(p, SLAVE_DATA, 0xFF)
	out(p, MASTER_CMD, ICW1_INIT|ICW1_IC4)
	out(p, MASTER_DATA, 0x30)
	out(p, MASTER_DATA, 1<<CascadeIRQ)
	out(p, MASTER_DATA, ICW4_UPM)
	out(p, SLAVE_CMD, ICW1_INIT|ICW1_IC4)
	out(p, SLAVE_DATA, 0x38)
	out(p, SLAVE_DATA, CascadeIRQ)
	out(p, SLAVE_DATA, ICW4_UPM)
	out(p, MASTER_DATA, 0)
	out(p, SLAVE_DATA, 0)
}

func pulse(p *PIC, irq int) {
	p.SetIRQ(irq, true)
	p.SetIRQ(irq, false)
}

func wantAck(t *testing.T, p *PIC, vector uint8) {
	t.Helper()
	if v, ok := p.Pending(); !ok || v != vector {
		t.Fatalf("Pending %#x %v, want %#x", v, ok, vector)
	}
	if v, ok := p.Ack(); !ok || v != vector {
		t.Fatalf("Ack %#x %v, want %#x", v, ok, vector)
	}
}

func wantNone(t *testing.T, p *PIC) {
	t.Helper()
	if v, ok := p.Pending(); ok {
		t.Fatalf("Pending %#x, want none", v)
	}
	if v, ok := p.Ack(); ok {
		t.Fatalf("Ack delivered %#x with nothing pending", v)
	}
}

func TestProbeMaskReadback(t *testing.T) {
	p := New()
	// Linux's probe_8259A.
	out(p, SLAVE_DATA, 0xFF)
	out(p, MASTER_DATA, 0xFB)
	if v := in(p, MASTER_DATA); v != 0xFB {
		t.Fatalf("master IMR reads %#x, want 0xfb", v)
	}
	for v := 0; v < 256; v++ {
		out(p, MASTER_DATA, uint8(v))
		out(p, SLAVE_DATA, ^uint8(v))
		if in(p, MASTER_DATA) != uint8(v) || in(p, SLAVE_DATA) != ^uint8(v) {
			t.Fatalf("IMR %#x does not read back", v)
		}
	}
}

func TestResetState(t *testing.T) {
	p := New()
	if in(p, MASTER_DATA) != 0xFF || in(p, SLAVE_DATA) != 0xFF {
		t.Fatal("IRQs not masked at reset")
	}
	pulse(p, 0)
	wantNone(t, p)
	out(p, MASTER_DATA, 0xFE)
	wantAck(t, p, 0x08)
}

func TestInitSequence(t *testing.T) {
	p := New()
	out(p, MASTER_DATA, 0x5A)
	out(p, MASTER_CMD, ICW1_INIT|ICW1_IC4)
	if v := in(p, MASTER_DATA); v != 0 {
		t.Fatalf("IMR %#x after ICW1, want 0 (cleared)", v)
	}
	out(p, MASTER_DATA, 0x37) // ICW2: low bits ignored
	out(p, MASTER_DATA, 1<<CascadeIRQ)
	out(p, MASTER_DATA, ICW4_UPM)
	out(p, MASTER_DATA, 0xF0) // OCW1 now
	if v := in(p, MASTER_DATA); v != 0xF0 {
		t.Fatalf("IMR %#x after init, want 0xf0", v)
	}
	pulse(p, 3)
	wantAck(t, p, 0x33)

	// Single mode without ICW4: ICW2 is the last word.
	out(p, MASTER_CMD, ICW1_INIT|ICW1_SNGL)
	out(p, MASTER_DATA, 0x40)
	out(p, MASTER_DATA, 0xFE) // OCW1
	if in(p, MASTER_DATA) != 0xFE {
		t.Fatal("ICW4 expected in single mode without IC4")
	}
	pulse(p, 0)
	wantAck(t, p, 0x40)
	// Single mode: IR2 is an ordinary input, the slave is not asked.
	out(p, MASTER_DATA, 0)
	out(p, MASTER_CMD, OCW2_EOI)
	p.SetIRQ(9, true)
	out(p, SLAVE_DATA, 0)
	wantAck(t, p, 0x42)
}

func TestPriorityAndEOI(t *testing.T) {
	p := New()
	linuxInit(p)
	pulse(p, 3)
	pulse(p, 1)
	wantAck(t, p, 0x31) // 1 before 3
	wantNone(t, p)      // 3 waits for 1's EOI
	pulse(p, 0)
	wantAck(t, p, 0x30) // 0 preempts 1
	out(p, MASTER_CMD, 0x0B)
	if isr := in(p, MASTER_CMD); isr != 0x03 {
		t.Fatalf("ISR %#x, want 0x03", isr)
	}
	out(p, MASTER_CMD, 0x0A)
	if irr := in(p, MASTER_CMD); irr != 0x08 {
		t.Fatalf("IRR %#x, want 0x08", irr)
	}
	out(p, MASTER_CMD, OCW2_EOI) // non-specific: clears 0
	wantNone(t, p)
	out(p, MASTER_CMD, OCW2_SL|OCW2_EOI|1) // specific EOI of 1
	wantAck(t, p, 0x33)
	out(p, MASTER_CMD, OCW2_SL|OCW2_EOI|3)
	out(p, MASTER_CMD, 0x0B)
	if isr := in(p, MASTER_CMD); isr != 0 {
		t.Fatalf("ISR %#x after EOIs", isr)
	}
	// A masked request waits in IRR.
	out(p, MASTER_DATA, 0x10)
	pulse(p, 4)
	wantNone(t, p)
	out(p, MASTER_DATA, 0)
	wantAck(t, p, 0x34)
}

func TestCascade(t *testing.T) {
	p := New()
	linuxInit(p)
	pulse(p, 10)
	pulse(p, 9)
	wantAck(t, p, 0x39)
	out(p, SLAVE_CMD, 0x0B)
	out(p, MASTER_CMD, 0x0B)
	if s, m := in(p, SLAVE_CMD), in(p, MASTER_CMD); s != 0x02 || m != 0x04 {
		t.Fatalf("ISR slave %#x master %#x", s, m)
	}
	wantNone(t, p) // 10 waits for the EOIs
	pulse(p, 0)
	wantAck(t, p, 0x30) // the master's IR0 is above IR2
	out(p, MASTER_CMD, OCW2_EOI)
	out(p, SLAVE_CMD, OCW2_SL|OCW2_EOI|1) // Linux: slave, then master
	wantNone(t, p)                        // master IR2 still in service
	out(p, MASTER_CMD, OCW2_SL|OCW2_EOI|CascadeIRQ)
	wantAck(t, p, 0x3A)
	// IRQ 2 is the cascade: driving it does nothing.
	out(p, SLAVE_CMD, OCW2_EOI)
	out(p, MASTER_CMD, OCW2_EOI)
	p.SetIRQ(2, true)
	p.SetIRQ(-1, true)
	p.SetIRQ(16, true)
	wantNone(t, p)
	// Slave masked: no INT to the master.
	out(p, SLAVE_DATA, 0xFF)
	pulse(p, 12)
	wantNone(t, p)
	out(p, SLAVE_DATA, 0)
	wantAck(t, p, 0x3C)
}

// TestNoSpurious: the slave's request is masked after it raised the
// master's IR2: IR2 follows the slave's INT, so nothing is delivered
// (the chips would deliver a spurious IRQ 15).
func TestNoSpurious(t *testing.T) {
	p := New()
	linuxInit(p)
	out(p, MASTER_DATA, 1<<CascadeIRQ) // hold IR2 off at the master
	pulse(p, 11)
	out(p, SLAVE_DATA, 1<<3)
	out(p, MASTER_DATA, 0)
	wantNone(t, p)
	out(p, MASTER_CMD, 0x0A)
	if irr := in(p, MASTER_CMD); irr != 0 {
		t.Fatalf("master IRR %#x", irr)
	}
	out(p, SLAVE_DATA, 0) // the latched slave request is still there
	wantAck(t, p, 0x3B)
}

func TestEdgeAndLevel(t *testing.T) {
	p := New()
	linuxInit(p)
	// Edge: a held line is one request.
	p.SetIRQ(5, true)
	wantAck(t, p, 0x35)
	out(p, MASTER_CMD, OCW2_EOI)
	wantNone(t, p)
	p.SetIRQ(5, false)
	// Level via ELCR: requests while high, again after each EOI.
	out(p, 0x4D0, 0xFF)
	out(p, 0x4D1, 0xFF)
	if e1, e2 := in(p, ELCR1), in(p, ELCR2); e1 != 0xF8 || e2 != 0xDE {
		t.Fatalf("ELCR %#x %#x, want 0xf8 0xde", e1, e2)
	}
	p.SetIRQ(5, true)
	wantAck(t, p, 0x35)
	out(p, MASTER_CMD, OCW2_EOI)
	wantAck(t, p, 0x35)
	out(p, MASTER_CMD, OCW2_EOI)
	p.SetIRQ(5, false)
	wantNone(t, p)
	// A level request that goes away before the acknowledge is gone.
	p.SetIRQ(14, true)
	p.SetIRQ(14, false)
	wantNone(t, p)
	// ICW1.LTIM makes every input level triggered, edge sense reset.
	out(p, 0x4D0, 0)
	p.SetIRQ(6, true)
	out(p, MASTER_CMD, ICW1_INIT|ICW1_IC4|ICW1_LTIM)
	out(p, MASTER_DATA, 0x30)
	out(p, MASTER_DATA, 1<<CascadeIRQ)
	out(p, MASTER_DATA, ICW4_UPM)
	wantAck(t, p, 0x36) // high line requests at once
	p.SetIRQ(6, false)
}

func TestPoll(t *testing.T) {
	p := New()
	linuxInit(p)
	out(p, MASTER_CMD, OCW3_SEL|OCW3_P)
	if v := in(p, MASTER_CMD); v != 0 {
		t.Fatalf("poll with nothing pending: %#x", v)
	}
	pulse(p, 6)
	out(p, MASTER_DATA, 1<<6) // the mask applies to polls too
	out(p, MASTER_CMD, OCW3_SEL|OCW3_P)
	if v := in(p, MASTER_CMD); v != 0 {
		t.Fatalf("poll of a masked request: %#x", v)
	}
	out(p, MASTER_DATA, 0)
	out(p, MASTER_CMD, OCW3_SEL|OCW3_P)
	if v := in(p, MASTER_CMD); v != pollIRQ|6 {
		t.Fatalf("poll %#x, want 0x86", v)
	}
	if v := in(p, MASTER_CMD); v != 0 { // IRR again, 6 acknowledged
		t.Fatalf("IRR %#x after poll", v)
	}
	out(p, MASTER_CMD, 0x0B)
	if v := in(p, MASTER_CMD); v != 1<<6 {
		t.Fatalf("ISR %#x after poll", v)
	}
}

func TestAEOIAndRotation(t *testing.T) {
	p := New()
	out(p, MASTER_CMD, ICW1_INIT|ICW1_IC4|ICW1_SNGL)
	out(p, MASTER_DATA, 0x20)
	out(p, MASTER_DATA, ICW4_UPM|ICW4_AEOI)
	pulse(p, 1)
	wantAck(t, p, 0x21)
	out(p, MASTER_CMD, 0x0B)
	if v := in(p, MASTER_CMD); v != 0 {
		t.Fatalf("ISR %#x in AEOI mode", v)
	}
	// Rotate in AEOI: the level served becomes the lowest.
	out(p, MASTER_CMD, ocw2RotateAEOISet)
	pulse(p, 1)
	wantAck(t, p, 0x21)
	pulse(p, 1)
	pulse(p, 4)
	wantAck(t, p, 0x24) // 2..7, 0, 1: 4 before 1
	wantAck(t, p, 0x21)
	out(p, MASTER_CMD, ocw2RotateAEOIClr)

	// Set priority: 5 lowest, so 6 is highest.
	out(p, MASTER_CMD, ICW1_INIT|ICW1_IC4|ICW1_SNGL)
	out(p, MASTER_DATA, 0x20)
	out(p, MASTER_DATA, ICW4_UPM)
	out(p, MASTER_CMD, ocw2SetPriority|5)
	pulse(p, 0)
	pulse(p, 6)
	wantAck(t, p, 0x26)
	wantNone(t, p) // 0 is below 6
	// Rotate on non-specific EOI: 6 becomes lowest; 0 is served.
	out(p, MASTER_CMD, ocw2RotateEOI)
	pulse(p, 6)
	wantAck(t, p, 0x20)
	out(p, MASTER_CMD, ocw2RotateSpecific|0) // EOI 0, 0 lowest
	wantAck(t, p, 0x26)
}

func TestSpecialMaskMode(t *testing.T) {
	p := New()
	linuxInit(p)
	pulse(p, 1)
	wantAck(t, p, 0x31)
	pulse(p, 3)
	wantNone(t, p)
	out(p, MASTER_DATA, 1<<1)
	out(p, MASTER_CMD, OCW3_SEL|OCW3_ESMM|OCW3_SMM)
	wantAck(t, p, 0x33) // 1 is masked: it no longer blocks 3
	out(p, MASTER_CMD, OCW3_SEL|OCW3_ESMM)
	out(p, MASTER_DATA, 0)
	pulse(p, 4)
	wantNone(t, p) // 1 and 3 in service again block 4
}

func TestPortsAndBus(t *testing.T) {
	p := New()
	var bus devices.Bus
	if err := p.Register(&bus); err != nil {
		t.Fatal(err)
	}
	for _, port := range []uint16{0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1} {
		if bus.Lookup(port) == nil {
			t.Errorf("port %#x not registered", port)
		}
	}
	for _, port := range []uint16{0x1F, 0x22, 0x9F, 0xA2, 0x4CF, 0x4D2} {
		if bus.Lookup(port) != nil {
			t.Errorf("port %#x registered", port)
		}
	}
	// A word write at 0x20 is OCW/ICW at 0x20 and a byte to 0x21.
	bus.Out(MASTER_CMD, 2, 0x5A<<8|OCW3_SEL|OCW3_RR|OCW3_RIS)
	if v := bus.In(MASTER_CMD, 2); v != 0x5A00 {
		t.Fatalf("word read %#x, want 0x5a00 (ISR, IMR)", v)
	}
	if v := p.In(MASTER_CMD, 3); v != devices.Floating {
		t.Fatalf("size 3 read %#x", v)
	}
	if v := p.In(0x4D1, 2); v != 0xFF00 {
		t.Fatalf("word read at 0x4d1: %#x", v)
	}
}

func TestLine(t *testing.T) {
	p := New()
	linuxInit(p)
	l := p.Line(8)
	l.Set(true)
	l.Set(false)
	wantAck(t, p, 0x38)
}

func TestStateRoundTrip(t *testing.T) {
	p := New()
	linuxInit(p)
	out(p, 0x4D1, 0x08) // IRQ 11 level
	p.SetIRQ(11, true)
	pulse(p, 4)
	pulse(p, 1)
	wantAck(t, p, 0x31)
	out(p, MASTER_CMD, OCW3_SEL|OCW3_RR|OCW3_RIS)
	out(p, SLAVE_CMD, ICW1_INIT) // mid-initialization
	st := p.MarshalState()

	q := New()
	if err := q.UnmarshalState(StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(q.MarshalState(), st) {
		t.Fatal("state differs after a round trip")
	}
	for _, port := range []uint16{MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA, ELCR1, ELCR2} {
		if a, b := in(p, port), in(q, port); a != b {
			t.Fatalf("port %#x reads %#x after restore, %#x before", port, b, a)
		}
	}
	a1, ok1 := p.Pending()
	a2, ok2 := q.Pending()
	if a1 != a2 || ok1 != ok2 {
		t.Fatalf("Pending %#x %v after restore, %#x %v before", a2, ok2, a1, ok1)
	}
}

func TestStateErrors(t *testing.T) {
	p := New()
	linuxInit(p)
	good := p.MarshalState()
	if err := p.UnmarshalState(2, good); !errors.Is(err, devices.ErrStateVersion) {
		t.Errorf("version 2: %v", err)
	}
	if err := p.UnmarshalState(StateVersion, good[:5]); !errors.Is(err, devices.ErrStateLength) {
		t.Errorf("short: %v", err)
	}
	s := chipStateLen
	for name, edit := range map[string]func(b []byte){
		"ELCR1":      func(b []byte) { b[4] = 0x01 },
		"ELCR2":      func(b []byte) { b[s+4] = 0x01 },
		"ICW1":       func(b []byte) { b[5] = 0x01 },
		"ICW2":       func(b []byte) { b[6] = 0x31 },
		"ICW4":       func(b []byte) { b[8] = 0x21 },
		"step":       func(b []byte) { b[9] = 4 },
		"flags":      func(b []byte) { b[10] = 0x10 },
		"lowest":     func(b []byte) { b[11] = 8 },
		"level IRR":  func(b []byte) { b[4] = 0x08; b[0] = 0x08 },
		"IR2 line":   func(b []byte) { b[3] = 1 << CascadeIRQ },
		"IR2 IRR":    func(b []byte) { b[0] = 1 << CascadeIRQ },
		"slave INT":  func(b []byte) { b[s] = 0x01 },
		"level line": func(b []byte) { b[5] |= ICW1_LTIM; b[3] = 0x01 },
	} {
		b := append([]byte(nil), good...)
		edit(b)
		if err := p.UnmarshalState(StateVersion, b); !errors.Is(err, devices.ErrStateInvalid) {
			t.Errorf("%s: %v", name, err)
		}
		if !bytes.Equal(p.MarshalState(), good) {
			t.Fatalf("%s: rejected state changed the PIC", name)
		}
	}
}
