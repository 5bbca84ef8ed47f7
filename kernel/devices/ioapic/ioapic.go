// Package ioapic models an I/O APIC after the Intel 82093AA I/O Advanced
// Programmable Interrupt Controller datasheet (order 290566-001), with the
// EOI register of version 0x20 I/O APICs (Intel ICH datasheets, "EOI
// Register"): 24 interrupt input pins, each routed by a redirection table
// entry to a local APIC.
//
// The guest programs it through MMIO at DefaultBase (IOAPIC implements
// devices.MMIODevice); device models drive its pins with SetIRQ or an
// IRQLine. Interrupts go to a Target, the one vCPU's local APIC.
//
// The model is plain Go with no hardware access. An IOAPIC is safe for
// concurrent use; its lock is held while it calls Target.Deliver, so a
// Target must not call back into the IOAPIC from Deliver.
package ioapic

import (
	"encoding/binary"
	"fmt"
	"sync"

	"tamavisor/kernel/devices"
)

// Memory-mapped registers, offsets from the base (82093AA 3.1; EOI from
// version 0x20 parts). Only 32-bit accesses are defined.
const (
	IOREGSEL = 0x00 // register select (index)
	IOWIN    = 0x10 // data window onto the selected register
	EOI      = 0x40 // write a vector: EOI for level-triggered entries

	// Size is the length of the register page.
	Size = 0x1000
	// DefaultBase is the guest-physical address of the register page.
	DefaultBase = 0xFEC00000
)

// Indirect registers selected by IOREGSEL (82093AA 3.2 "IOAPIC Registers").
const (
	IOAPICID  = 0x00 // ID
	IOAPICVER = 0x01 // version (read only)
	IOAPICARB = 0x02 // arbitration ID (read only)
	IOREDTBL  = 0x10 // redirection entry n: low half at 0x10+2n, high half at 0x11+2n

	// Pins is the number of interrupt inputs and redirection entries.
	Pins = 24
)

// IOAPICID, IOAPICVER and IOAPICARB fields (82093AA 3.2.1-3.2.3).
const (
	ID_SHIFT   = 24  // IOAPICID and IOAPICARB bits 27:24
	ID_MASK    = 0xF // 4-bit ID
	VER_MRE    = 16  // shift of the maximum redirection entry field
	apicVer    = 0x20
	verValue   = apicVer | (Pins-1)<<VER_MRE
	regselMask = 0xFF // IOREGSEL bits 7:0
)

// Redirection table entry fields (82093AA 3.2.4).
const (
	INTVEC       = 0xFF    // interrupt vector
	DELMOD       = 7 << 8  // delivery mode
	DELMOD_FIXED = 0 << 8  // fixed
	DELMOD_LOPRI = 1 << 8  // lowest priority
	DELMOD_SMI   = 2 << 8  // SMI (not modelled)
	DELMOD_NMI   = 4 << 8  // NMI (not modelled)
	DELMOD_INIT  = 5 << 8  // INIT (not modelled)
	DELMOD_EXTIN = 7 << 8  // ExtINT (not modelled: no 8259)
	DESTMOD      = 1 << 11 // logical destination mode
	DELIVS       = 1 << 12 // delivery status (read only, always idle)
	INTPOL       = 1 << 13 // input pin polarity: active low
	REMOTE_IRR   = 1 << 14 // level interrupt accepted, EOI awaited (read only)
	TRIGGER      = 1 << 15 // trigger mode: level
	MASK         = 1 << 16 // interrupt mask
	DEST_SHIFT   = 56      // destination, bits 63:56

	entryWritable = INTVEC | DELMOD | DESTMOD | INTPOL | TRIGGER | MASK | 0xFF<<DEST_SHIFT
	entryReset    = MASK
	halfShift     = 32 // an entry is read and written as two 32-bit halves
	lowHalf       = 1<<halfShift - 1
)

// Target receives the interrupts the I/O APIC sends: a fixed interrupt
// with vector, level-triggered or not. *lapic.LAPIC implements it.
type Target interface {
	Deliver(vector uint8, level bool)
}

// StateVersion is the version of IOAPIC's snapshot encoding.
const StateVersion = 1

// stateLen is the length of a version 1 snapshot, see MarshalState.
const stateLen = 6 + 8*Pins

// IOAPIC is an 82093AA-style I/O APIC serving one CPU.
//
// Fixed and lowest-priority entries deliver to the Target; the
// destination mode and field are stored but not matched (there is one
// CPU). SMI, NMI, INIT and ExtINT entries deliver nothing. Delivery is
// instantaneous, so DELIVS always reads idle. Remote IRR is kept only for
// level-triggered entries (the datasheet leaves it undefined for edge):
// switching an entry to edge clears it.
type IOAPIC struct {
	mu     sync.Mutex
	target Target

	regsel uint8
	id     uint8
	lines  uint32 // input pin levels as driven, bit n = pin n
	redtbl [Pins]uint64
}

// New returns an I/O APIC in its reset state (every entry masked) that
// sends interrupts to t (nil: they are dropped).
func New(t Target) *IOAPIC {
	io := &IOAPIC{target: t}
	io.reset()
	return io
}

// Reset returns the registers to their reset state. The input pins keep
// their levels: the devices driving them are not reset by this.
func (io *IOAPIC) Reset() {
	io.mu.Lock()
	defer io.mu.Unlock()
	io.reset()
}

func (io *IOAPIC) reset() {
	io.regsel, io.id = 0, 0
	for i := range io.redtbl {
		io.redtbl[i] = entryReset
	}
}

var _ devices.MMIODevice = (*IOAPIC)(nil)

// Read implements devices.MMIODevice. Only 32-bit reads of IOREGSEL and
// IOWIN are defined; everything else reads 0.
func (io *IOAPIC) Read(off uint64, size uint8) uint64 {
	io.mu.Lock()
	defer io.mu.Unlock()
	if size != 4 {
		return 0
	}
	switch off {
	case IOREGSEL:
		return uint64(io.regsel)
	case IOWIN:
		return uint64(io.readReg(io.regsel))
	}
	return 0
}

// Write implements devices.MMIODevice. Only 32-bit writes to IOREGSEL,
// IOWIN and EOI have an effect.
func (io *IOAPIC) Write(off uint64, size uint8, v uint64) {
	io.mu.Lock()
	defer io.mu.Unlock()
	if size != 4 {
		return
	}
	switch off {
	case IOREGSEL:
		io.regsel = uint8(v & regselMask)
	case IOWIN:
		io.writeReg(io.regsel, uint32(v))
	case EOI:
		io.eoi(uint8(v & INTVEC))
	}
}

func (io *IOAPIC) readReg(r uint8) uint32 {
	switch {
	case r == IOAPICID, r == IOAPICARB:
		// No APIC bus: the arbitration ID is the ID.
		return uint32(io.id) << ID_SHIFT
	case r == IOAPICVER:
		return verValue
	case r >= IOREDTBL && r < IOREDTBL+2*Pins:
		e := io.redtbl[(r-IOREDTBL)/2]
		if r&1 != 0 {
			return uint32(e >> halfShift)
		}
		return uint32(e)
	}
	return 0
}

func (io *IOAPIC) writeReg(r uint8, v uint32) {
	switch {
	case r == IOAPICID:
		io.id = uint8(v>>ID_SHIFT) & ID_MASK
	case r >= IOREDTBL && r < IOREDTBL+2*Pins:
		pin := int(r-IOREDTBL) / 2
		e := io.redtbl[pin]
		if r&1 != 0 {
			e = e&lowHalf | uint64(v)<<halfShift&entryWritable
		} else {
			e = e&^(lowHalf&entryWritable) | uint64(v)&lowHalf&entryWritable
		}
		if e&TRIGGER == 0 {
			e &^= REMOTE_IRR
		}
		io.redtbl[pin] = e
		// Unmasking (or switching to level) an asserted level input
		// delivers it.
		io.serviceLevel(pin)
	}
}

// asserted reports whether pin's input is active, after polarity.
func (io *IOAPIC) asserted(pin int) bool {
	high := io.lines&(1<<pin) != 0
	return high != (io.redtbl[pin]&INTPOL != 0)
}

// SetIRQ drives input pin to level (true = electrically high). An edge
// entry sends its interrupt when its input becomes active while
// unmasked; a level entry sends it while the input is active, unmasked
// and remote IRR is clear (82093AA 3.2.4). Pins outside 0-23 are ignored.
func (io *IOAPIC) SetIRQ(pin int, level bool) {
	if pin < 0 || pin >= Pins {
		return
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	was := io.asserted(pin)
	if level {
		io.lines |= 1 << pin
	} else {
		io.lines &^= 1 << pin
	}
	e := io.redtbl[pin]
	if e&TRIGGER == 0 {
		if !was && io.asserted(pin) && e&MASK == 0 {
			io.deliver(pin)
		}
		return
	}
	io.serviceLevel(pin)
}

// IRQLine returns pin as an IRQ line for a device model.
func (io *IOAPIC) IRQLine(pin int) devices.IRQLine {
	return devices.IRQFunc(func(level bool) { io.SetIRQ(pin, level) })
}

// EOI is the end of interrupt for vector broadcast by the local APIC
// (LAPIC.OnEOI): level entries with that vector clear remote IRR and
// send again if their input is still active.
func (io *IOAPIC) EOI(vector uint8) {
	io.mu.Lock()
	defer io.mu.Unlock()
	io.eoi(vector)
}

func (io *IOAPIC) eoi(vector uint8) {
	for pin, e := range io.redtbl {
		if e&REMOTE_IRR != 0 && uint8(e&INTVEC) == vector {
			io.redtbl[pin] = e &^ REMOTE_IRR
			io.serviceLevel(pin)
		}
	}
}

// serviceLevel sends a level entry's interrupt if its input is active,
// it is unmasked and no earlier one awaits its EOI.
func (io *IOAPIC) serviceLevel(pin int) {
	e := io.redtbl[pin]
	if e&TRIGGER != 0 && e&(MASK|REMOTE_IRR) == 0 && io.asserted(pin) {
		io.deliver(pin)
	}
}

// deliver sends pin's interrupt to the target. Only fixed and
// lowest-priority modes reach it; a level one sets remote IRR.
func (io *IOAPIC) deliver(pin int) {
	e := io.redtbl[pin]
	if mode := e & DELMOD; mode != DELMOD_FIXED && mode != DELMOD_LOPRI {
		return
	}
	level := e&TRIGGER != 0
	if level {
		io.redtbl[pin] = e | REMOTE_IRR
	}
	if io.target != nil {
		io.target.Deliver(uint8(e&INTVEC), level)
	}
}

// MarshalState returns the I/O APIC's state, version StateVersion. The
// target is not part of it.
//
// Layout, 198 bytes, little endian:
//
//	offset size field
//	0      1    IOREGSEL
//	1      1    ID (IOAPICID bits 27:24)
//	2      4    input pin levels as driven, bit n = pin n (bits 31:24 zero)
//	6      192  redirection entries 0-23, 8 bytes each, remote IRR included
func (io *IOAPIC) MarshalState() []byte {
	io.mu.Lock()
	defer io.mu.Unlock()
	b := make([]byte, 0, stateLen)
	b = append(b, io.regsel, io.id)
	b = binary.LittleEndian.AppendUint32(b, io.lines)
	for _, e := range io.redtbl {
		b = binary.LittleEndian.AppendUint64(b, e)
	}
	return b
}

// UnmarshalState replaces the I/O APIC's state with one produced by
// MarshalState. Nothing is delivered: interrupts already sent are in the
// local APIC's own state. It rejects an unknown version, a wrong length
// and values the I/O APIC can never hold; on error the state is
// unchanged.
func (io *IOAPIC) UnmarshalState(version uint16, b []byte) error {
	if version != StateVersion {
		return fmt.Errorf("%w: IOAPIC state version %d, want %d", devices.ErrStateVersion, version, StateVersion)
	}
	if len(b) != stateLen {
		return fmt.Errorf("%w: IOAPIC state is %d bytes, want %d", devices.ErrStateLength, len(b), stateLen)
	}
	id := b[1]
	lines := binary.LittleEndian.Uint32(b[2:])
	var tbl [Pins]uint64
	for i := range tbl {
		tbl[i] = binary.LittleEndian.Uint64(b[6+8*i:])
	}
	if id&^ID_MASK != 0 {
		return fmt.Errorf("%w: IOAPIC ID %#x", devices.ErrStateInvalid, id)
	}
	if lines>>Pins != 0 {
		return fmt.Errorf("%w: IOAPIC pin levels %#x", devices.ErrStateInvalid, lines)
	}
	for i, e := range tbl {
		if e&^(entryWritable|REMOTE_IRR) != 0 || (e&REMOTE_IRR != 0 && e&TRIGGER == 0) {
			return fmt.Errorf("%w: IOAPIC redirection entry %d = %#x", devices.ErrStateInvalid, i, e)
		}
	}

	io.mu.Lock()
	defer io.mu.Unlock()
	io.regsel, io.id, io.lines, io.redtbl = b[0], id, lines, tbl
	return nil
}
