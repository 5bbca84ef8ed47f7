package devices

import (
	"fmt"
	"io"
	"sync"
)

// 16550A register offsets from the base port (PC16550D datasheet). Several
// offsets hold two registers, selected by the access direction or by
// LCR.DLAB.
const (
	RBR = 0 // receiver buffer (read, DLAB=0)
	THR = 0 // transmitter holding (write, DLAB=0)
	DLL = 0 // divisor latch, low byte (DLAB=1)
	IER = 1 // interrupt enable (DLAB=0)
	DLM = 1 // divisor latch, high byte (DLAB=1)
	IIR = 2 // interrupt identification (read)
	FCR = 2 // FIFO control (write)
	LCR = 3 // line control
	MCR = 4 // modem control
	LSR = 5 // line status
	MSR = 6 // modem status
	SCR = 7 // scratch

	// UARTPorts is the number of ports a 16550 decodes.
	UARTPorts = 8
)

// IER bits.
const (
	IER_ERBFI = 0x01 // received data available interrupt
	IER_ETBEI = 0x02 // transmitter holding register empty interrupt
	IER_ELSI  = 0x04 // receiver line status interrupt
	IER_EDSSI = 0x08 // modem status interrupt
	ierMask   = 0x0F
)

// IIR values. Bit 0 clear means an interrupt is pending; bits 3:1 identify
// the highest-priority source; bits 7:6 are set when the FIFOs are enabled.
const (
	IIR_NO_INT   = 0x01 // no interrupt pending
	IIR_MSI      = 0x00 // modem status (lowest priority)
	IIR_THRI     = 0x02 // THR empty
	IIR_RDI      = 0x04 // received data available (FIFO at trigger level)
	IIR_RLSI     = 0x06 // receiver line status (highest priority)
	IIR_TIMEOUT  = 0x0C // character timeout (data below the trigger level)
	IIR_FIFO_ON  = 0xC0 // FIFOs enabled
	iirSourceMsk = 0x0F
)

// FCR bits.
const (
	FCR_ENABLE    = 0x01 // enable the FIFOs
	FCR_CLEAR_RX  = 0x02 // clear the receive FIFO (self-clearing)
	FCR_CLEAR_TX  = 0x04 // clear the transmit FIFO (self-clearing)
	FCR_DMA       = 0x08 // DMA mode select (no effect here)
	FCR_TRIG_MASK = 0xC0 // receive trigger level: 1, 4, 8 or 14 bytes
	fcrKeep       = FCR_ENABLE | FCR_TRIG_MASK
)

// LCR bits.
const (
	LCR_WLEN_MASK = 0x03 // word length - 5
	LCR_STOP      = 0x04 // 2 stop bits
	LCR_PARITY    = 0x08 // parity enable
	LCR_EPAR      = 0x10 // even parity
	LCR_SPAR      = 0x20 // stick parity
	LCR_SBC       = 0x40 // set break
	LCR_DLAB      = 0x80 // divisor latch access
)

// MCR bits.
const (
	MCR_DTR  = 0x01
	MCR_RTS  = 0x02
	MCR_OUT1 = 0x04
	MCR_OUT2 = 0x08
	MCR_LOOP = 0x10 // loopback
	mcrMask  = 0x1F
)

// LSR bits.
const (
	LSR_DR   = 0x01 // data ready
	LSR_OE   = 0x02 // overrun error
	LSR_PE   = 0x04 // parity error
	LSR_FE   = 0x08 // framing error
	LSR_BI   = 0x10 // break interrupt
	LSR_THRE = 0x20 // THR empty
	LSR_TEMT = 0x40 // transmitter empty
	LSR_FIFO = 0x80 // error in receive FIFO
	// lsrErrors are the sticky error bits cleared by reading LSR.
	lsrErrors = LSR_OE | LSR_PE | LSR_FE | LSR_BI
)

// MSR bits.
const (
	MSR_DCTS  = 0x01 // delta CTS
	MSR_DDSR  = 0x02 // delta DSR
	MSR_TERI  = 0x04 // trailing edge RI
	MSR_DDCD  = 0x08 // delta DCD
	MSR_CTS   = 0x10
	MSR_DSR   = 0x20
	MSR_RI    = 0x40
	MSR_DCD   = 0x80
	msrDeltas = 0x0F
)

// UARTFIFOSize is the depth of the receive FIFO.
const UARTFIFOSize = 16

// UART16550StateVersion is the version of UART16550's snapshot encoding.
const UART16550StateVersion = 1

// uartStateLen is the length of a version 1 snapshot, see MarshalState.
const uartStateLen = 11 + UARTFIFOSize

// UART16550 models a National Semiconductor 16550A UART.
//
// Transmission is instantaneous: a byte written to THR goes straight to the
// output writer, so THR and the transmitter are always empty (LSR.THRE and
// LSR.TEMT are always set) and the THR-empty interrupt is raised again
// after every write. Received bytes are queued with Receive. The receive
// FIFO holds 16 bytes with the FIFOs enabled (FCR bit 0) and 1 byte
// without. The character-timeout interrupt is reported as soon as data
// below the FIFO trigger level is present (there is no timer).
//
// With MCR.LOOP set, THR writes go to the receive FIFO instead of the
// output (a full FIFO sets LSR.OE) and the modem status inputs follow the
// modem control outputs (CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2). Otherwise
// the modem status reports CTS, DSR and DCD asserted (a connected line).
//
// Line parameters (divisor, word length, parity) are stored and read back
// but do not affect the data. IRQ is the interrupt output of the chip;
// the PC's gating of that line by MCR.OUT2 is left to the caller.
//
// A UART16550 is safe for concurrent use: Receive may be called from a
// console input goroutine while a vCPU runs In and Out.
type UART16550 struct {
	mu   sync.Mutex
	base uint16
	out  io.Writer

	ier, lcr, mcr, fcr, scr uint8
	dll, dlm                uint8
	lsrErr                  uint8 // sticky LSR error bits (lsrErrors)
	msrDelta                uint8 // MSR delta bits (msrDeltas)
	thrPending              bool  // THR-empty interrupt pending

	rx      [UARTFIFOSize]byte // ring buffer
	rxHead  uint8              // index of the oldest byte
	rxCount uint8
}

// NewUART16550 returns a 16550A at ports base..base+7 whose transmitted
// bytes are written, one Write per byte, to out (nil discards them). Its
// registers hold their reset values, except the divisor latch which is
// set to 1 (115200 baud).
func NewUART16550(base uint16, out io.Writer) *UART16550 {
	if out == nil {
		out = io.Discard
	}
	u := &UART16550{base: base, out: out}
	u.reset()
	return u
}

func (u *UART16550) reset() {
	u.ier, u.lcr, u.mcr, u.fcr, u.scr = 0, 0, 0, 0, 0
	u.dll, u.dlm = 1, 0
	u.lsrErr, u.msrDelta = 0, 0
	u.thrPending = false
	u.rxHead, u.rxCount = 0, 0
}

// Base returns the first port of the UART; it decodes UARTPorts ports.
func (u *UART16550) Base() uint16 { return u.base }

// In implements PortDevice. Ports outside base..base+7 read as all ones.
func (u *UART16550) In(port uint16, size uint8) uint32 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return ByteWiseIn(port, size, u.in8)
}

// Out implements PortDevice. Writes outside base..base+7 are ignored.
func (u *UART16550) Out(port uint16, size uint8, v uint32) {
	u.mu.Lock()
	defer u.mu.Unlock()
	ByteWiseOut(port, size, v, u.out8)
}

// Receive queues b as received from the line. It returns false, dropping
// b, if the receive FIFO is full.
func (u *UART16550) Receive(b byte) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.push(b)
}

// IRQ reports the level of the UART's interrupt output: true when an
// enabled interrupt condition is pending (IIR bit 0 clear).
func (u *UART16550) IRQ() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.iir()&IIR_NO_INT == 0
}

func (u *UART16550) fifoEnabled() bool { return u.fcr&FCR_ENABLE != 0 }

// capacity is the receive buffer depth: the FIFO, or the single holding
// register in 16450 mode.
func (u *UART16550) capacity() uint8 {
	if u.fifoEnabled() {
		return UARTFIFOSize
	}
	return 1
}

func (u *UART16550) trigger() uint8 {
	switch u.fcr & FCR_TRIG_MASK {
	case 0x00:
		return 1
	case 0x40:
		return 4
	case 0x80:
		return 8
	default:
		return 14
	}
}

func (u *UART16550) push(b byte) bool {
	if u.rxCount >= u.capacity() {
		return false
	}
	u.rx[(u.rxHead+u.rxCount)%UARTFIFOSize] = b
	u.rxCount++
	return true
}

func (u *UART16550) pop() byte {
	if u.rxCount == 0 {
		return 0
	}
	b := u.rx[u.rxHead]
	u.rxHead = (u.rxHead + 1) % UARTFIFOSize
	u.rxCount--
	return b
}

func (u *UART16550) lsr() uint8 {
	v := uint8(LSR_THRE|LSR_TEMT) | u.lsrErr
	if u.rxCount > 0 {
		v |= LSR_DR
	}
	return v
}

// modemInputs returns the MSR status bits (7:4).
func (u *UART16550) modemInputs() uint8 {
	if u.mcr&MCR_LOOP == 0 {
		return MSR_CTS | MSR_DSR | MSR_DCD
	}
	var v uint8
	if u.mcr&MCR_RTS != 0 {
		v |= MSR_CTS
	}
	if u.mcr&MCR_DTR != 0 {
		v |= MSR_DSR
	}
	if u.mcr&MCR_OUT1 != 0 {
		v |= MSR_RI
	}
	if u.mcr&MCR_OUT2 != 0 {
		v |= MSR_DCD
	}
	return v
}

// iir computes the interrupt identification without side effects.
func (u *UART16550) iir() uint8 {
	id := uint8(IIR_NO_INT)
	switch {
	case u.ier&IER_ELSI != 0 && u.lsrErr != 0:
		id = IIR_RLSI
	case u.ier&IER_ERBFI != 0 && u.rxCount > 0:
		id = IIR_RDI
		if u.fifoEnabled() && u.rxCount < u.trigger() {
			id = IIR_TIMEOUT
		}
	case u.ier&IER_ETBEI != 0 && u.thrPending:
		id = IIR_THRI
	case u.ier&IER_EDSSI != 0 && u.msrDelta != 0:
		id = IIR_MSI
	}
	if u.fifoEnabled() {
		id |= IIR_FIFO_ON
	}
	return id
}

func (u *UART16550) in8(port uint16) uint8 {
	if port < u.base || port-u.base >= UARTPorts {
		return 0xFF
	}
	dlab := u.lcr&LCR_DLAB != 0
	switch port - u.base {
	case RBR: // or DLL
		if dlab {
			return u.dll
		}
		return u.pop()
	case IER: // or DLM
		if dlab {
			return u.dlm
		}
		return u.ier
	case IIR:
		v := u.iir()
		// Reading IIR while it reports THR empty clears that interrupt.
		if v&iirSourceMsk == IIR_THRI {
			u.thrPending = false
		}
		return v
	case LCR:
		return u.lcr
	case MCR:
		return u.mcr
	case LSR:
		v := u.lsr()
		u.lsrErr = 0
		return v
	case MSR:
		v := u.modemInputs() | u.msrDelta
		u.msrDelta = 0
		return v
	default: // SCR
		return u.scr
	}
}

func (u *UART16550) out8(port uint16, v uint8) {
	if port < u.base || port-u.base >= UARTPorts {
		return
	}
	dlab := u.lcr&LCR_DLAB != 0
	switch port - u.base {
	case THR: // or DLL
		if dlab {
			u.dll = v
			return
		}
		u.transmit(v)
	case IER: // or DLM
		if dlab {
			u.dlm = v
			return
		}
		old := u.ier
		u.ier = v & ierMask
		// Enabling the THR-empty interrupt while THR is empty (always,
		// here) raises it.
		if old&IER_ETBEI == 0 && u.ier&IER_ETBEI != 0 {
			u.thrPending = true
		}
	case FCR:
		if (v^u.fcr)&FCR_ENABLE != 0 || v&FCR_CLEAR_RX != 0 {
			// Clearing, or switching the FIFOs on or off, empties
			// the receive FIFO.
			u.rxHead, u.rxCount = 0, 0
		}
		u.fcr = v & fcrKeep
	case LCR:
		u.lcr = v
	case MCR:
		before := u.modemInputs()
		u.mcr = v & mcrMask
		u.noteModemChange(before, u.modemInputs())
	case LSR:
		// LSR is read-only (writes are for factory test).
	case MSR:
		// MSR is read-only.
	default: // SCR
		u.scr = v
	}
}

// noteModemChange sets the MSR delta bits for a change of the modem
// status inputs from before to after.
func (u *UART16550) noteModemChange(before, after uint8) {
	changed := before ^ after
	if changed&MSR_CTS != 0 {
		u.msrDelta |= MSR_DCTS
	}
	if changed&MSR_DSR != 0 {
		u.msrDelta |= MSR_DDSR
	}
	if changed&MSR_DCD != 0 {
		u.msrDelta |= MSR_DDCD
	}
	if before&MSR_RI != 0 && after&MSR_RI == 0 {
		u.msrDelta |= MSR_TERI
	}
}

func (u *UART16550) transmit(b byte) {
	if u.mcr&MCR_LOOP != 0 {
		if !u.push(b) {
			u.lsrErr |= LSR_OE
		}
	} else {
		// Output errors have nowhere to go: a real line drops bytes too.
		_, _ = u.out.Write([]byte{b})
	}
	// The byte left THR at once: THR is empty again.
	u.thrPending = true
}

// MarshalState returns the UART's state, version UART16550StateVersion.
// The configuration (base port, output writer) is not part of it.
//
// Layout, 27 bytes (multi-byte fields would be little endian; all are
// single bytes in version 1):
//
//	offset size field
//	0      1    IER (bits 3:0)
//	1      1    LCR
//	2      1    MCR (bits 4:0)
//	3      1    FCR as kept: FIFO enable (bit 0) and trigger (bits 7:6)
//	4      1    SCR
//	5      1    DLL
//	6      1    DLM
//	7      1    LSR sticky error bits (OE, PE, FE, BI)
//	8      1    MSR delta bits (bits 3:0)
//	9      1    flags: bit 0 = THR-empty interrupt pending; others 0
//	10     1    receive FIFO byte count, 0-16 (0-1 with FIFOs disabled)
//	11     16   receive FIFO bytes, oldest first, unused bytes 0
func (u *UART16550) MarshalState() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	b := make([]byte, uartStateLen)
	b[0] = u.ier
	b[1] = u.lcr
	b[2] = u.mcr
	b[3] = u.fcr
	b[4] = u.scr
	b[5] = u.dll
	b[6] = u.dlm
	b[7] = u.lsrErr
	b[8] = u.msrDelta
	if u.thrPending {
		b[9] |= 1
	}
	b[10] = u.rxCount
	for i := uint8(0); i < u.rxCount; i++ {
		b[11+int(i)] = u.rx[(u.rxHead+i)%UARTFIFOSize]
	}
	return b
}

// UnmarshalState replaces the UART's state with one produced by
// MarshalState. It rejects an unknown version, a wrong length and field
// values the UART can never hold; on error the state is unchanged.
func (u *UART16550) UnmarshalState(version uint16, b []byte) error {
	if err := checkState("UART16550", UART16550StateVersion, uartStateLen, version, b); err != nil {
		return err
	}
	var s struct {
		ier, lcr, mcr, fcr, scr, dll, dlm, lsrErr, msrDelta, flags, count uint8
	}
	s.ier, s.lcr, s.mcr, s.fcr, s.scr = b[0], b[1], b[2], b[3], b[4]
	s.dll, s.dlm, s.lsrErr, s.msrDelta = b[5], b[6], b[7], b[8]
	s.flags, s.count = b[9], b[10]

	bad := func(field string, v uint8) error {
		return fmt.Errorf("%w: UART16550 %s = %#02x", ErrStateInvalid, field, v)
	}
	switch {
	case s.ier&^ierMask != 0:
		return bad("IER", s.ier)
	case s.mcr&^mcrMask != 0:
		return bad("MCR", s.mcr)
	case s.fcr&^fcrKeep != 0:
		return bad("FCR", s.fcr)
	case s.lsrErr&^lsrErrors != 0:
		return bad("LSR errors", s.lsrErr)
	case s.msrDelta&^msrDeltas != 0:
		return bad("MSR deltas", s.msrDelta)
	case s.flags&^1 != 0:
		return bad("flags", s.flags)
	case s.count > UARTFIFOSize || (s.fcr&FCR_ENABLE == 0 && s.count > 1):
		return bad("FIFO count", s.count)
	}
	for i := 11 + int(s.count); i < len(b); i++ {
		if b[i] != 0 {
			return bad(fmt.Sprintf("unused FIFO byte %d", i-11), b[i])
		}
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	u.ier, u.lcr, u.mcr, u.fcr, u.scr = s.ier, s.lcr, s.mcr, s.fcr, s.scr
	u.dll, u.dlm, u.lsrErr, u.msrDelta = s.dll, s.dlm, s.lsrErr, s.msrDelta
	u.thrPending = s.flags&1 != 0
	u.rxHead, u.rxCount = 0, s.count
	u.rx = [UARTFIFOSize]byte{}
	copy(u.rx[:], b[11:11+int(s.count)])
	return nil
}
