package devices

import (
	"bytes"
	"errors"
	"testing"
)

const com1 = 0x3F8

func newTestUART() (*UART16550, *bytes.Buffer) {
	var out bytes.Buffer
	return NewUART16550(com1, &out), &out
}

func in8(u *UART16550, reg uint16) uint8 { return uint8(u.In(com1+reg, 1)) }

func out8(u *UART16550, reg uint16, v uint8) { u.Out(com1+reg, 1, uint32(v)) }

func TestUARTTransmit(t *testing.T) {
	u, out := newTestUART()
	for _, c := range []byte("hi\n") {
		if lsr := in8(u, LSR); lsr&LSR_THRE == 0 || lsr&LSR_TEMT == 0 {
			t.Fatalf("LSR %#x: THRE/TEMT not set", lsr)
		}
		out8(u, THR, c)
	}
	if got := out.String(); got != "hi\n" {
		t.Errorf("output %q, want %q", got, "hi\n")
	}
}

func TestUARTResetValues(t *testing.T) {
	u, _ := newTestUART()
	for _, c := range []struct {
		reg  uint16
		want uint8
	}{
		{IER, 0},
		{IIR, IIR_NO_INT},
		{LCR, 0},
		{MCR, 0},
		{LSR, LSR_THRE | LSR_TEMT},
		{MSR, MSR_CTS | MSR_DSR | MSR_DCD},
		{SCR, 0},
	} {
		if got := in8(u, c.reg); got != c.want {
			t.Errorf("register %d = %#x, want %#x", c.reg, got, c.want)
		}
	}
	if u.IRQ() {
		t.Error("IRQ asserted after reset")
	}
}

func TestUARTScratch(t *testing.T) {
	u, _ := newTestUART()
	for _, v := range []uint8{0x5A, 0xA5, 0x00, 0xFF} {
		out8(u, SCR, v)
		if got := in8(u, SCR); got != v {
			t.Errorf("SCR = %#x after writing %#x", got, v)
		}
	}
}

func TestUARTDLAB(t *testing.T) {
	u, out := newTestUART()
	out8(u, IER, IER_ERBFI)
	out8(u, LCR, LCR_DLAB|0x03)
	out8(u, DLL, 0x0C)
	out8(u, DLM, 0x01)
	if got := in8(u, DLL); got != 0x0C {
		t.Errorf("DLL = %#x, want 0x0c", got)
	}
	if got := in8(u, DLM); got != 0x01 {
		t.Errorf("DLM = %#x, want 0x01", got)
	}
	if out.Len() != 0 {
		t.Errorf("DLL write was transmitted: %q", out.String())
	}
	u.Receive('x')
	if got := in8(u, DLL); got != 0x0C {
		t.Errorf("DLL read with DLAB = %#x, want 0x0c (not RBR)", got)
	}
	out8(u, LCR, 0x03)
	if got := in8(u, IER); got != IER_ERBFI {
		t.Errorf("IER = %#x after DLAB cleared, want %#x (DLM write must not touch it)", got, IER_ERBFI)
	}
	if got := in8(u, RBR); got != 'x' {
		t.Errorf("RBR = %#x, want 'x'", got)
	}
	if got := in8(u, LCR); got != 0x03 {
		t.Errorf("LCR = %#x", got)
	}
	// The divisor survives DLAB being cleared.
	out8(u, LCR, LCR_DLAB)
	if in8(u, DLL) != 0x0C || in8(u, DLM) != 0x01 {
		t.Error("divisor latch lost")
	}
}

func TestUARTReceiveFIFO(t *testing.T) {
	u, _ := newTestUART()
	// 16450 mode: one holding register.
	if !u.Receive('a') {
		t.Fatal("Receive into empty UART failed")
	}
	if u.Receive('b') {
		t.Error("second Receive without FIFO succeeded")
	}
	if got := in8(u, RBR); got != 'a' {
		t.Errorf("RBR = %q", got)
	}
	if in8(u, LSR)&LSR_DR != 0 {
		t.Error("DR set with an empty receiver")
	}

	out8(u, FCR, FCR_ENABLE)
	for i := 0; i < UARTFIFOSize; i++ {
		if in8(u, LSR)&LSR_DR != 0 != (i > 0) {
			t.Fatalf("DR wrong with %d bytes queued", i)
		}
		if !u.Receive(byte('A' + i)) {
			t.Fatalf("Receive %d failed", i)
		}
	}
	if u.Receive('!') {
		t.Error("Receive into a full FIFO succeeded")
	}
	if in8(u, LSR)&LSR_OE != 0 {
		t.Error("a refused Receive set OE")
	}
	for i := 0; i < UARTFIFOSize; i++ {
		if got := in8(u, RBR); got != byte('A'+i) {
			t.Fatalf("byte %d = %q, want %q", i, got, byte('A'+i))
		}
	}
	if in8(u, LSR)&LSR_DR != 0 {
		t.Error("DR set after draining the FIFO")
	}
	if got := in8(u, RBR); got != 0 {
		t.Errorf("RBR on empty FIFO = %#x, want 0", got)
	}

	// FCR clear-RX empties it; so does switching the FIFO off.
	u.Receive('1')
	u.Receive('2')
	out8(u, FCR, FCR_ENABLE|FCR_CLEAR_RX)
	if in8(u, LSR)&LSR_DR != 0 {
		t.Error("FCR clear RX left data")
	}
	u.Receive('3')
	out8(u, FCR, 0)
	if in8(u, LSR)&LSR_DR != 0 {
		t.Error("disabling the FIFO left data")
	}
	if in8(u, IIR)&IIR_FIFO_ON != 0 {
		t.Error("IIR reports FIFOs on after disabling them")
	}
}

func TestUARTIIRPriority(t *testing.T) {
	u, _ := newTestUART()
	out8(u, FCR, FCR_ENABLE) // trigger level 1
	if got := in8(u, IIR); got != IIR_NO_INT|IIR_FIFO_ON {
		t.Fatalf("IIR = %#x with nothing enabled", got)
	}

	// Enabling ETBEI with THR empty raises the THR interrupt.
	out8(u, IER, IER_ETBEI)
	if !u.IRQ() {
		t.Fatal("no IRQ after enabling ETBEI")
	}
	if got := in8(u, IIR); got != IIR_THRI|IIR_FIFO_ON {
		t.Fatalf("IIR = %#x, want THRI", got)
	}
	// Reading IIR cleared it.
	if got := in8(u, IIR); got != IIR_NO_INT|IIR_FIFO_ON {
		t.Fatalf("IIR = %#x after reading THRI, want none", got)
	}
	if u.IRQ() {
		t.Fatal("IRQ still asserted")
	}
	// Writing THR re-raises it (transmission is instant).
	out8(u, THR, 'x')
	if got := in8(u, IIR) & iirSourceMsk; got != IIR_THRI {
		t.Fatalf("IIR source %#x after THR write, want THRI", got)
	}

	// Received data beats THR empty.
	out8(u, THR, 'y')
	out8(u, IER, IER_ETBEI|IER_ERBFI)
	u.Receive('z')
	if got := in8(u, IIR) & iirSourceMsk; got != IIR_RDI {
		t.Fatalf("IIR source %#x, want RDI", got)
	}
	// Reading IIR does not clear RDI, and THRI is still pending below it.
	if got := in8(u, IIR) & iirSourceMsk; got != IIR_RDI {
		t.Fatalf("IIR source %#x on second read, want RDI", got)
	}
	in8(u, RBR)
	if got := in8(u, IIR) & iirSourceMsk; got != IIR_THRI {
		t.Fatalf("IIR source %#x after draining, want THRI", got)
	}

	// Disabling the source drops the line even with the condition present.
	out8(u, IER, 0)
	u.Receive('w')
	if u.IRQ() {
		t.Error("IRQ with IER=0")
	}
	in8(u, RBR)
}

func TestUARTTriggerAndTimeout(t *testing.T) {
	u, _ := newTestUART()
	out8(u, FCR, FCR_ENABLE|0x40) // trigger at 4 bytes
	out8(u, IER, IER_ERBFI)
	u.Receive('1')
	if got := in8(u, IIR) & iirSourceMsk; got != IIR_TIMEOUT {
		t.Errorf("IIR source %#x below trigger, want TIMEOUT", got)
	}
	u.Receive('2')
	u.Receive('3')
	u.Receive('4')
	if got := in8(u, IIR) & iirSourceMsk; got != IIR_RDI {
		t.Errorf("IIR source %#x at trigger, want RDI", got)
	}
	if !u.IRQ() {
		t.Error("no IRQ with data")
	}
}

func TestUARTLoopbackAndLineStatus(t *testing.T) {
	u, out := newTestUART()
	out8(u, FCR, FCR_ENABLE)
	out8(u, MCR, MCR_LOOP)
	// Loopback: modem inputs follow the outputs, all low now.
	if got := in8(u, MSR); got&0xF0 != 0 {
		t.Errorf("MSR inputs %#x in loopback with outputs low", got)
	}
	out8(u, MCR, MCR_LOOP|MCR_RTS|MCR_DTR|MCR_OUT1|MCR_OUT2)
	if got := in8(u, MSR); got != MSR_CTS|MSR_DSR|MSR_RI|MSR_DCD|MSR_DCTS|MSR_DDSR|MSR_DDCD {
		t.Errorf("MSR = %#x after raising all outputs", got)
	}
	if got := in8(u, MSR); got&msrDeltas != 0 {
		t.Errorf("MSR deltas %#x not cleared by reading", got)
	}
	out8(u, MCR, MCR_LOOP|MCR_RTS|MCR_DTR|MCR_OUT2) // RI falls
	if got := in8(u, MSR) & msrDeltas; got != MSR_TERI {
		t.Errorf("MSR deltas %#x, want TERI", got)
	}

	for i := 0; i < UARTFIFOSize; i++ {
		out8(u, THR, byte(i))
	}
	if out.Len() != 0 {
		t.Errorf("loopback bytes reached the output: %q", out.String())
	}
	out8(u, THR, 0xEE) // overrun
	out8(u, IER, IER_ELSI|IER_ERBFI)
	if got := in8(u, IIR) & iirSourceMsk; got != IIR_RLSI {
		t.Errorf("IIR source %#x with overrun, want RLSI", got)
	}
	lsr := in8(u, LSR)
	if lsr&(LSR_OE|LSR_DR) != LSR_OE|LSR_DR {
		t.Errorf("LSR = %#x, want OE and DR", lsr)
	}
	if in8(u, LSR)&LSR_OE != 0 {
		t.Error("OE not cleared by reading LSR")
	}
	for i := 0; i < UARTFIFOSize; i++ {
		if got := in8(u, RBR); got != byte(i) {
			t.Fatalf("looped byte %d = %#x", i, got)
		}
	}
	out8(u, MCR, 0)
	out8(u, THR, 'k')
	if out.String() != "k" {
		t.Errorf("output %q after leaving loopback", out.String())
	}
}

func TestUARTModemStatusInterrupt(t *testing.T) {
	u, _ := newTestUART()
	out8(u, IER, IER_EDSSI)
	out8(u, MCR, MCR_LOOP) // inputs drop from connected to low: deltas
	if got := in8(u, IIR); got != IIR_MSI {
		t.Errorf("IIR = %#x, want MSI", got)
	}
	in8(u, MSR)
	if u.IRQ() {
		t.Error("IRQ after reading MSR")
	}
}

func TestUARTWideAccessAndRange(t *testing.T) {
	u, _ := newTestUART()
	out8(u, SCR, 0x42)
	// A 2-byte read at MSR covers MSR and SCR.
	if got := u.In(com1+MSR, 2); got != uint32(0x42)<<8|uint32(MSR_CTS|MSR_DSR|MSR_DCD) {
		t.Errorf("In(MSR, 2) = %#x", got)
	}
	// A 4-byte read at SCR runs past the UART: all ones above.
	if got := u.In(com1+SCR, 4); got != 0xFFFFFF42 {
		t.Errorf("In(SCR, 4) = %#x", got)
	}
	if got := u.In(com1-1, 1); got != 0xFF {
		t.Errorf("In below base = %#x", got)
	}
	if got := u.In(com1, 3); got != Floating {
		t.Errorf("In size 3 = %#x", got)
	}
	u.Out(com1+LCR, 2, 0x0B03) // LCR=0x03, MCR=0x0B
	if in8(u, LCR) != 0x03 || in8(u, MCR) != 0x0B {
		t.Errorf("2-byte write: LCR %#x MCR %#x", in8(u, LCR), in8(u, MCR))
	}
	u.Out(com1+8, 1, 0x99) // outside: ignored, no panic
	u.Out(0xFFFF, 4, 0)    // wraps the port space
	u.In(0xFFFF, 4)
}

func TestUARTStateRoundTrip(t *testing.T) {
	u, _ := newTestUART()
	out8(u, FCR, FCR_ENABLE|0x80)
	out8(u, LCR, LCR_DLAB)
	out8(u, DLL, 0x34)
	out8(u, DLM, 0x12)
	out8(u, LCR, 0x1B)
	out8(u, IER, IER_ERBFI|IER_ETBEI)
	out8(u, MCR, MCR_DTR|MCR_OUT2)
	out8(u, SCR, 0x77)
	// Rotate the ring so the FIFO wraps.
	for i := 0; i < 10; i++ {
		u.Receive(0)
		in8(u, RBR)
	}
	for _, c := range []byte("snapshot") {
		u.Receive(c)
	}
	st := u.MarshalState()
	if len(st) != uartStateLen {
		t.Fatalf("state is %d bytes", len(st))
	}

	v := NewUART16550(com1, nil)
	if err := v.UnmarshalState(UART16550StateVersion, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.MarshalState(), st) {
		t.Fatal("state differs after restore")
	}
	if a, b := in8(u, IIR), in8(v, IIR); a != b {
		t.Errorf("IIR %#x vs %#x", a, b)
	}
	for _, reg := range []uint16{IER, LCR, MCR, LSR, MSR, SCR} {
		if a, b := in8(u, reg), in8(v, reg); a != b {
			t.Errorf("register %d: %#x vs %#x", reg, a, b)
		}
	}
	var got []byte
	for in8(v, LSR)&LSR_DR != 0 {
		got = append(got, in8(v, RBR))
	}
	if string(got) != "snapshot" {
		t.Errorf("restored FIFO %q", got)
	}
	out8(v, LCR, LCR_DLAB)
	if in8(v, DLL) != 0x34 || in8(v, DLM) != 0x12 {
		t.Error("divisor not restored")
	}
}

func TestUARTStateRejects(t *testing.T) {
	good := func() []byte {
		u, _ := newTestUART()
		out8(u, FCR, FCR_ENABLE)
		u.Receive('a')
		return u.MarshalState()
	}
	mod := func(i int, v byte) []byte {
		b := good()
		b[i] = v
		return b
	}
	cases := []struct {
		name    string
		version uint16
		state   []byte
		want    error
	}{
		{"version 0", 0, good(), ErrStateVersion},
		{"version 2", 2, good(), ErrStateVersion},
		{"nil", UART16550StateVersion, nil, ErrStateLength},
		{"short", UART16550StateVersion, good()[:uartStateLen-1], ErrStateLength},
		{"long", UART16550StateVersion, append(good(), 0), ErrStateLength},
		{"IER high bits", UART16550StateVersion, mod(0, 0x10), ErrStateInvalid},
		{"MCR high bits", UART16550StateVersion, mod(2, 0x20), ErrStateInvalid},
		{"FCR clear bits", UART16550StateVersion, mod(3, FCR_ENABLE|FCR_CLEAR_RX), ErrStateInvalid},
		{"LSR non-error bits", UART16550StateVersion, mod(7, LSR_DR), ErrStateInvalid},
		{"MSR status bits", UART16550StateVersion, mod(8, MSR_CTS), ErrStateInvalid},
		{"flags", UART16550StateVersion, mod(9, 2), ErrStateInvalid},
		{"count 17", UART16550StateVersion, mod(10, 17), ErrStateInvalid},
		{"count 2 without FIFO", UART16550StateVersion, func() []byte { b := mod(3, 0); b[10] = 2; return b }(), ErrStateInvalid},
		{"garbage past count", UART16550StateVersion, mod(11+5, 'x'), ErrStateInvalid},
	}
	for _, c := range cases {
		u, _ := newTestUART()
		out8(u, SCR, 0x5A)
		before := u.MarshalState()
		err := u.UnmarshalState(c.version, c.state)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		if !bytes.Equal(u.MarshalState(), before) {
			t.Errorf("%s: rejected state changed the UART", c.name)
		}
	}
}

func TestDebugPort(t *testing.T) {
	var out bytes.Buffer
	d := NewDebugPort(&out)
	if got := d.In(DebugPortAddr, 1); got != 0xE9 {
		t.Errorf("In = %#x, want 0xe9", got)
	}
	if got := d.In(DebugPortAddr, 2); got != 0xFFE9 {
		t.Errorf("In 2 bytes = %#x, want 0xffe9", got)
	}
	if got := d.In(DebugPortAddr, 0); got != Floating {
		t.Errorf("In size 0 = %#x", got)
	}
	d.Out(DebugPortAddr, 1, 'o')
	d.Out(DebugPortAddr, 4, 0x4B4B4B4B) // only the low byte is on 0xE9
	d.Out(DebugPortAddr+1, 1, 'x')
	if out.String() != "oK" {
		t.Errorf("output %q, want %q", out.String(), "oK")
	}
	if st := d.MarshalState(); len(st) != 0 {
		t.Errorf("state %x, want empty", st)
	}
	if err := d.UnmarshalState(DebugPortStateVersion, nil); err != nil {
		t.Error(err)
	}
	if err := d.UnmarshalState(2, nil); !errors.Is(err, ErrStateVersion) {
		t.Errorf("version 2: %v", err)
	}
	if err := d.UnmarshalState(DebugPortStateVersion, []byte{0}); !errors.Is(err, ErrStateLength) {
		t.Errorf("1-byte state: %v", err)
	}
}

func TestBus(t *testing.T) {
	var out bytes.Buffer
	var bus Bus
	u := NewUART16550(com1, &out)
	if err := bus.Register(com1, UARTPorts, u); err != nil {
		t.Fatal(err)
	}
	if err := bus.Register(DebugPortAddr, 1, NewDebugPort(&out)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ first, count uint16 }{
		{com1 + 7, 2}, {com1 - 1, 2}, {0x100, 0}, {0xFFFF, 2},
	} {
		if err := bus.Register(bad.first, bad.count, NewDebugPort(nil)); err == nil {
			t.Errorf("Register(%#x, %d) accepted", bad.first, bad.count)
		}
	}
	bus.Out(com1+SCR, 1, 0x5A)
	if got := bus.In(com1+SCR, 1); got != 0x5A {
		t.Errorf("SCR through bus = %#x", got)
	}
	if got := bus.In(0x80, 1); got != 0xFF {
		t.Errorf("unclaimed 1-byte read = %#x", got)
	}
	if got := bus.In(0x80, 2); got != 0xFFFF {
		t.Errorf("unclaimed 2-byte read = %#x", got)
	}
	if got := bus.In(0x80, 4); got != 0xFFFFFFFF {
		t.Errorf("unclaimed 4-byte read = %#x", got)
	}
	if got := bus.In(0x80, 5); got != Floating {
		t.Errorf("bad size read = %#x", got)
	}
	bus.Out(0x80, 1, 1) // ignored
	bus.Out(DebugPortAddr, 1, '!')
	bus.Out(com1+THR, 1, '?')
	if out.String() != "!?" {
		t.Errorf("output %q", out.String())
	}
}
