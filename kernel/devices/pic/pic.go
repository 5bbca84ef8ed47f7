// Package pic models the PC's two cascaded Intel 8259A programmable
// interrupt controllers (8259A datasheet, order 231468): the master at
// ports 0x20-0x21 handles IRQ 0-7, the slave at 0xA0-0xA1 IRQ 8-15 and
// drives the master's IR2. The edge/level control registers (ELCR) of
// the PIIX/ICH chipsets at 0x4D0-0x4D1 (Intel ICH datasheets, "ELCR1",
// "ELCR2") select level triggering per IRQ.
//
// Device models drive the inputs with SetIRQ (or an IRQLine from Line).
// The hypervisor's injection path uses Pending and Ack the way a CPU's
// interrupt acknowledge cycle uses the INTR pin and INTA: Pending says
// whether INTR is asserted and with which vector, Ack performs the
// acknowledge and returns the vector delivered.
//
// Implemented: the ICW1-ICW4 initialization sequence; OCW1 (the mask,
// read back exactly); OCW2 (non-specific, specific and rotating EOIs, set
// priority, rotation in automatic EOI mode); OCW3 (read IRR or ISR, poll
// read at the command port, special mask mode); automatic EOI; edge and
// level triggering (ICW1.LTIM or ELCR); fully nested priorities with
// rotation. Not modelled: the 8080/8085
// call format (vectors are always 8086 style), buffered mode and the
// special fully nested mode (stored and read back only), and the master's
// ICW3 other than its IR2 (the slave is wired to IR2).
//
// Edge-triggered inputs latch IRR on a rising edge and keep it until the
// acknowledge, so a pulse (Set(true) then Set(false)) is one request.
// The slave's INT output reaches the master's IR2 as a level whatever
// the master's trigger mode: a slave request that goes away before the
// acknowledge (masked, or a level input dropped) leaves no spurious IRQ
// 15 behind, as it would on the chips.
//
// Before the guest initializes them, both chips are as a PC BIOS leaves
// them: vectors 0x08 and 0x70, cascade on IR2, 8086 mode, all IRQs
// masked. Register the PIC on the port bus with Register. A PIC is safe
// for concurrent use.
package pic

import (
	"fmt"
	"sync"

	"tamavisor/kernel/devices"
)

// Ports (PC/AT; ELCR: Intel ICH datasheets).
const (
	MASTER_CMD  = 0x20 // master, A0 = 0: ICW1, OCW2, OCW3; IRR/ISR/poll read
	MASTER_DATA = 0x21 // master, A0 = 1: ICW2-4, OCW1 (IMR)
	SLAVE_CMD   = 0xA0
	SLAVE_DATA  = 0xA1
	ELCR1       = 0x4D0 // IRQ 0-7 trigger mode, 1 = level
	ELCR2       = 0x4D1 // IRQ 8-15 trigger mode

	// ELCR bits that must stay 0 (edge): IRQ 0, 1, 2 and IRQ 8, 13.
	elcr1Mask = 0xF8
	elcr2Mask = 0xDE

	// CascadeIRQ is the master input the slave drives.
	CascadeIRQ = 2
	// IRQs is the number of IRQ lines, 0-15.
	IRQs = 16
)

// ICW1 (8259A datasheet, Figure 7 "Initialization Command Word Format").
const (
	ICW1_IC4  = 0x01 // ICW4 needed
	ICW1_SNGL = 0x02 // single 8259A, no ICW3
	ICW1_ADI  = 0x04 // call address interval (8080 mode only)
	ICW1_LTIM = 0x08 // level triggered mode
	ICW1_INIT = 0x10 // D4 = 1 with A0 = 0 identifies ICW1
)

// ICW2 holds the vector's T7-T3 bits.
const ICW2_VECTOR = 0xF8

// ICW4.
const (
	ICW4_UPM  = 0x01 // 8086/8088 mode (vectors always 8086 style here)
	ICW4_AEOI = 0x02 // automatic end of interrupt
	ICW4_MS   = 0x04 // buffered mode master/slave (stored only)
	ICW4_BUF  = 0x08 // buffered mode (stored only)
	ICW4_SFNM = 0x10 // special fully nested mode (stored only)
	icw4Mask  = 0x1F
)

// OCW2 (8259A datasheet, Figure 8 "Operation Command Word Format").
const (
	OCW2_R      = 0x80 // rotate
	OCW2_SL     = 0x40 // specific level
	OCW2_EOI    = 0x20
	OCW2_L_MASK = 0x07 // level acted on when SL = 1

	ocw2NonSpecificEOI = OCW2_EOI
	ocw2SpecificEOI    = OCW2_SL | OCW2_EOI
	ocw2RotateEOI      = OCW2_R | OCW2_EOI
	ocw2RotateAEOISet  = OCW2_R
	ocw2RotateAEOIClr  = 0
	ocw2RotateSpecific = OCW2_R | OCW2_SL | OCW2_EOI
	ocw2SetPriority    = OCW2_R | OCW2_SL
	ocw2Command        = OCW2_R | OCW2_SL | OCW2_EOI
)

// OCW3.
const (
	OCW3_ESMM = 0x40 // enable special mask mode change
	OCW3_SMM  = 0x20 // special mask mode
	OCW3_SEL  = 0x08 // D4 = 0, D3 = 1 identifies OCW3
	OCW3_P    = 0x04 // poll command
	OCW3_RR   = 0x02 // read register command
	OCW3_RIS  = 0x01 // read ISR (1) or IRR (0)

	// cmdKind selects ICW1 (D4 = 1), OCW3 (D4 = 0, D3 = 1) or OCW2.
	cmdKind = ICW1_INIT | OCW3_SEL
)

// pollIRQ is set in a poll read when an interrupt was pending.
const pollIRQ = 0x80

// Initialization sequence steps: the next byte to the data port is ...
const (
	stepReady = iota // OCW1
	stepICW2
	stepICW3
	stepICW4
)

// chip is one 8259A.
type chip struct {
	irr, isr, imr uint8
	lines         uint8 // input levels
	elcr          uint8 // level-triggered inputs (ELCR)
	icw1, icw2    uint8
	icw3, icw4    uint8
	step          uint8 // initialization step
	readISR       bool  // OCW3 RIS: the command port reads ISR
	poll          bool  // the next read is a poll
	smm           bool  // special mask mode
	rotateAEOI    bool  // rotate on automatic EOI
	lowest        uint8 // level with the lowest priority (7 after ICW1)
}

// biosChip returns a chip initialized with vector base vector and ICW3
// icw3 (edge triggered, 8086 mode), all inputs masked.
func biosChip(vector, icw3 uint8) chip {
	return chip{imr: 0xFF, icw1: ICW1_INIT | ICW1_IC4, icw2: vector, icw3: icw3, icw4: ICW4_UPM, lowest: 7}
}

func (c *chip) level() uint8 {
	if c.icw1&ICW1_LTIM != 0 {
		return 0xFF
	}
	return c.elcr
}

// setLine drives input i.
func (c *chip) setLine(i uint8, high bool) {
	bit := uint8(1) << i
	if high {
		if c.lines&bit == 0 || c.level()&bit != 0 {
			c.irr |= bit // rising edge, or level
		}
		c.lines |= bit
	} else {
		c.lines &^= bit
		if c.level()&bit != 0 {
			c.irr &^= bit
		}
	}
}

// priority returns the priority rank of level i: 0 is the highest.
func (c *chip) priority(i uint8) uint8 { return (i - c.lowest - 1) & 7 }

// highest returns the level of highest priority set in mask.
func (c *chip) highest(mask uint8) (uint8, bool) {
	for r := uint8(0); r < 8; r++ {
		if i := (c.lowest + 1 + r) & 7; mask&(1<<i) != 0 {
			return i, true
		}
	}
	return 0, false
}

// pending returns the request the chip would signal on INT: the unmasked
// IRR bit of highest priority, if higher than every level in service
// (in special mask mode, masked levels in service do not count).
func (c *chip) pending() (uint8, bool) {
	i, ok := c.highest(c.irr &^ c.imr)
	if !ok {
		return 0, false
	}
	isr := c.isr
	if c.smm {
		isr &^= c.imr
	}
	if s, ok := c.highest(isr); ok && c.priority(s) <= c.priority(i) {
		return 0, false
	}
	return i, true
}

// ack performs the acknowledge of level i: ISR set (unless automatic
// EOI), IRR cleared (a level-triggered input still high keeps it).
func (c *chip) ack(i uint8) {
	bit := uint8(1) << i
	c.irr &^= bit
	c.irr |= c.lines & c.level() & bit
	if c.icw4&ICW4_AEOI == 0 {
		c.isr |= bit
	} else if c.rotateAEOI {
		c.lowest = i
	}
}

func (c *chip) vector(i uint8) uint8 { return c.icw2&ICW2_VECTOR | i }

func (c *chip) writeCmd(v uint8) {
	switch {
	case v&ICW1_INIT != 0:
		// ICW1 (8259A datasheet, "Initialization Command Words"):
		// edge sense reset, IMR cleared, IR7 lowest priority, special
		// mask mode off, IRR selected for reading; ICW4 functions
		// cleared if no ICW4 follows.
		c.icw1 = v
		c.irr = c.lines & c.level()
		c.isr, c.imr = 0, 0
		c.lowest = 7
		c.smm, c.readISR, c.poll, c.rotateAEOI = false, false, false, false
		if v&ICW1_IC4 == 0 {
			c.icw4 = 0
		}
		c.step = stepICW2
	case v&cmdKind == OCW3_SEL:
		if v&OCW3_ESMM != 0 {
			c.smm = v&OCW3_SMM != 0
		}
		if v&OCW3_RR != 0 {
			c.readISR = v&OCW3_RIS != 0
		}
		c.poll = v&OCW3_P != 0
	default:
		c.ocw2(v)
	}
}

func (c *chip) ocw2(v uint8) {
	l := v & OCW2_L_MASK
	switch v & ocw2Command {
	case ocw2NonSpecificEOI:
		if i, ok := c.highest(c.isr); ok {
			c.isr &^= 1 << i
		}
	case ocw2SpecificEOI:
		c.isr &^= 1 << l
	case ocw2RotateEOI:
		if i, ok := c.highest(c.isr); ok {
			c.isr &^= 1 << i
			c.lowest = i
		}
	case ocw2RotateAEOISet:
		c.rotateAEOI = true
	case ocw2RotateAEOIClr:
		c.rotateAEOI = false
	case ocw2RotateSpecific:
		c.isr &^= 1 << l
		c.lowest = l
	case ocw2SetPriority:
		c.lowest = l
	}
	// OCW2_SL alone is a no-op.
}

func (c *chip) writeData(v uint8) {
	switch c.step {
	case stepICW2:
		c.icw2 = v & ICW2_VECTOR
		switch {
		case c.icw1&ICW1_SNGL == 0:
			c.step = stepICW3
		case c.icw1&ICW1_IC4 != 0:
			c.step = stepICW4
		default:
			c.step = stepReady
		}
	case stepICW3:
		c.icw3 = v
		c.step = stepReady
		if c.icw1&ICW1_IC4 != 0 {
			c.step = stepICW4
		}
	case stepICW4:
		c.icw4 = v & icw4Mask
		c.step = stepReady
	default:
		c.imr = v // OCW1
	}
}

// readCmd reads the command port: a poll result after a poll command,
// else IRR or ISR as OCW3 selected.
func (c *chip) readCmd() uint8 {
	if c.poll {
		c.poll = false
		if i, ok := c.pending(); ok {
			c.ack(i)
			return pollIRQ | i
		}
		return 0
	}
	if c.readISR {
		return c.isr
	}
	return c.irr
}

// PIC is the PC's master and slave 8259A pair.
type PIC struct {
	mu            sync.Mutex
	master, slave chip
}

// New returns a PIC pair in the state a PC BIOS leaves it.
func New() *PIC {
	return &PIC{master: biosChip(0x08, 1<<CascadeIRQ), slave: biosChip(0x70, CascadeIRQ)}
}

// Register puts the PIC on bus: MASTER_CMD-MASTER_DATA,
// SLAVE_CMD-SLAVE_DATA and ELCR1-ELCR2.
func (p *PIC) Register(bus *devices.Bus) error {
	for _, base := range []uint16{MASTER_CMD, SLAVE_CMD, ELCR1} {
		if err := bus.Register(base, 2, p); err != nil {
			return err
		}
	}
	return nil
}

// cascaded reports whether the master takes IR2's vector from the slave.
func (p *PIC) cascaded() bool {
	return p.master.icw1&ICW1_SNGL == 0 && p.master.icw3&(1<<CascadeIRQ) != 0
}

// cascade drives the master's IR2 with the slave's INT output, as a
// level: IRR bit 2 follows it.
func (p *PIC) cascade() {
	const bit = 1 << CascadeIRQ
	if _, ok := p.slave.pending(); ok {
		p.master.lines |= bit
		p.master.irr |= bit
	} else {
		p.master.lines &^= bit
		p.master.irr &^= bit
	}
}

// SetIRQ drives IRQ line irq (0-15) to level. IRQ 2 is the cascade and
// other values are ignored.
func (p *PIC) SetIRQ(irq int, level bool) {
	if irq < 0 || irq >= IRQs || irq == CascadeIRQ {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if irq < 8 {
		p.master.setLine(uint8(irq), level)
	} else {
		p.slave.setLine(uint8(irq-8), level)
	}
	p.cascade()
}

// Line returns the IRQLine of IRQ irq, for a device model's constructor.
func (p *PIC) Line(irq int) devices.IRQLine {
	return devices.IRQFunc(func(level bool) { p.SetIRQ(irq, level) })
}

// Pending reports whether the PIC asserts INTR, and the vector the
// acknowledge would deliver now.
func (p *PIC) Pending() (vector uint8, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.master.pending()
	if !ok {
		return 0, false
	}
	if i == CascadeIRQ && p.cascaded() {
		// IR2 follows the slave's INT: the slave has a request.
		s, _ := p.slave.pending()
		return p.slave.vector(s), true
	}
	return p.master.vector(i), true
}

// Ack performs the interrupt acknowledge the CPU does when it takes the
// interrupt Pending reported, and returns the vector delivered: the
// requests move from IRR to ISR (unless automatic EOI). ok is false, and
// nothing is acknowledged, when INTR is not asserted.
func (p *PIC) Ack() (vector uint8, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.master.pending()
	if !ok {
		return 0, false
	}
	p.master.ack(i)
	if i != CascadeIRQ || !p.cascaded() {
		p.cascade()
		return p.master.vector(i), true
	}
	s, _ := p.slave.pending() // IR2 follows the slave's INT
	p.slave.ack(s)
	p.cascade()
	return p.slave.vector(s), true
}

// In implements devices.PortDevice. A multi-byte access is split into
// byte accesses to consecutive ports; ports the PIC does not decode read
// as 0xFF.
func (p *PIC) In(port uint16, size uint8) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return devices.ByteWiseIn(port, size, p.in8)
}

// Out implements devices.PortDevice.
func (p *PIC) Out(port uint16, size uint8, v uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	devices.ByteWiseOut(port, size, v, p.out8)
}

func (p *PIC) in8(port uint16) uint8 {
	var v uint8
	switch port {
	case MASTER_CMD:
		v = p.master.readCmd()
	case MASTER_DATA:
		v = p.master.imr
	case SLAVE_CMD:
		v = p.slave.readCmd()
	case SLAVE_DATA:
		v = p.slave.imr
	case ELCR1:
		v = p.master.elcr
	case ELCR2:
		v = p.slave.elcr
	default:
		return 0xFF
	}
	p.cascade() // a poll acknowledges
	return v
}

func (p *PIC) out8(port uint16, v uint8) {
	switch port {
	case MASTER_CMD:
		p.master.writeCmd(v)
	case MASTER_DATA:
		p.master.writeData(v)
	case SLAVE_CMD:
		p.slave.writeCmd(v)
	case SLAVE_DATA:
		p.slave.writeData(v)
	case ELCR1:
		p.master.setELCR(v & elcr1Mask)
	case ELCR2:
		p.slave.setELCR(v & elcr2Mask)
	default:
		return
	}
	p.cascade()
}

// setELCR changes the trigger modes; inputs now level-triggered request
// as long as they are high.
func (c *chip) setELCR(v uint8) {
	c.elcr = v
	lvl := c.level()
	c.irr = c.irr&^lvl | c.lines&lvl
}

// StateVersion is the version of the PIC's snapshot encoding.
const StateVersion = 1

// Snapshot layout, version 1: the master's chipStateLen bytes, then the
// slave's:
//
//	offset size field
//	0      1    IRR
//	1      1    ISR
//	2      1    IMR
//	3      1    input line levels
//	4      1    ELCR (master: bits 0-2 clear; slave: bits 0 and 5 clear)
//	5      1    ICW1 (bit 4 set)
//	6      1    ICW2 (bits 2-0 clear)
//	7      1    ICW3
//	8      1    ICW4 (bits 7-5 clear)
//	9      1    initialization step: 0 ready, 1 ICW2, 2 ICW3, 3 ICW4 next
//	10     1    flags: bit 0 read ISR, 1 poll, 2 special mask mode,
//	            3 rotate on automatic EOI
//	11     1    lowest priority level, 0-7
const (
	chipStateLen = 12
	stateLen     = 2 * chipStateLen
)

const (
	flagReadISR = 1 << iota
	flagPoll
	flagSMM
	flagRotateAEOI
	flagsMask = 1<<iota - 1
)

// MarshalState returns the PIC's state, version StateVersion.
func (p *PIC) MarshalState() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := make([]byte, 0, stateLen)
	for _, c := range []*chip{&p.master, &p.slave} {
		var flags uint8
		for i, f := range []bool{c.readISR, c.poll, c.smm, c.rotateAEOI} {
			if f {
				flags |= 1 << i
			}
		}
		b = append(b, c.irr, c.isr, c.imr, c.lines, c.elcr, c.icw1, c.icw2, c.icw3, c.icw4, c.step, flags, c.lowest)
	}
	return b
}

// UnmarshalState replaces the PIC's state with one produced by
// MarshalState. It rejects an unknown version, a wrong length and values
// the PIC can never hold; on error the state is unchanged.
func (p *PIC) UnmarshalState(version uint16, b []byte) error {
	if version != StateVersion {
		return fmt.Errorf("%w: PIC state version %d, want %d", devices.ErrStateVersion, version, StateVersion)
	}
	if len(b) != stateLen {
		return fmt.Errorf("%w: PIC state is %d bytes, want %d", devices.ErrStateLength, len(b), stateLen)
	}
	var chips [2]chip
	for n, name := range []string{"master", "slave"} {
		s := b[n*chipStateLen:]
		c := &chips[n]
		c.irr, c.isr, c.imr, c.lines, c.elcr = s[0], s[1], s[2], s[3], s[4]
		c.icw1, c.icw2, c.icw3, c.icw4, c.step = s[5], s[6], s[7], s[8], s[9]
		flags := s[10]
		c.readISR, c.poll = flags&flagReadISR != 0, flags&flagPoll != 0
		c.smm, c.rotateAEOI = flags&flagSMM != 0, flags&flagRotateAEOI != 0
		c.lowest = s[11]
		elcrMask := uint8(elcr1Mask)
		if n == 1 {
			elcrMask = elcr2Mask
		}
		bad := func(field string, v uint8) error {
			return fmt.Errorf("%w: PIC %s %s = %#02x", devices.ErrStateInvalid, name, field, v)
		}
		lvl := c.level()
		switch {
		case c.elcr&^elcrMask != 0:
			return bad("ELCR", c.elcr)
		case c.icw1&ICW1_INIT == 0:
			return bad("ICW1", c.icw1)
		case c.icw2&^ICW2_VECTOR != 0:
			return bad("ICW2", c.icw2)
		case c.icw4&^icw4Mask != 0:
			return bad("ICW4", c.icw4)
		case c.step > stepICW4:
			return bad("initialization step", c.step)
		case flags&^flagsMask != 0:
			return bad("flags", flags)
		case c.lowest > 7:
			return bad("lowest priority", c.lowest)
		case c.irr&lvl != c.lines&lvl:
			return bad("level-triggered IRR", c.irr)
		}
	}
	q := PIC{master: chips[0], slave: chips[1]}
	_, slaveINT := q.slave.pending()
	ir2 := q.master.lines & q.master.irr & (1 << CascadeIRQ)
	if (q.master.lines^q.master.irr)&(1<<CascadeIRQ) != 0 || (ir2 != 0) != slaveINT {
		return fmt.Errorf("%w: PIC master IR2 (lines %#02x, IRR %#02x), slave INT %v",
			devices.ErrStateInvalid, q.master.lines, q.master.irr, slaveINT)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.master, p.slave = q.master, q.slave
	return nil
}
