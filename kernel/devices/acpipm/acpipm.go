// Package acpipm models the ACPI fixed hardware a PC guest with full ACPI
// uses (ACPI 6.0 Errata A, 4.8 "ACPI Hardware Features"): the PM1a event
// block (PM1 status and enable, 4.8.3.1), the PM1a control block (SCI_EN,
// SLP_TYP, SLP_EN, 4.8.3.2) and the power management timer (4.8.3.3), all
// in I/O space.
//
// The PM timer counts at 3.579545 MHz from VM time: two reads at VM times
// t1 and t2 differ by exactly (t2-t1)*3579545/1e9 ticks, so a guest can
// calibrate its TSC against it. It is 24 bits wide (the FADT does not set
// TMR_VAL_EXT). Writing SLP_EN with SLP_TYP = the \_S5 value calls
// PowerOff: the guest's `poweroff`. There is no SMI command port: the FADT
// has SMI_CMD 0, so SCI_EN reads 1 (ACPI mode always on). No event ever
// sets a status bit here: the SCI is never raised.
package acpipm

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
)

// Register layout relative to each block's port, and bits.
const (
	PM1_STS = 0 // PM1a event block: status (write 1 to clear)
	PM1_EN  = 2 // PM1a event block: enable

	SCI_EN        = 1 << 0 // PM1_CNT: the SCI is enabled (ACPI mode)
	SLP_TYP_SHIFT = 10     // PM1_CNT: sleep type, 3 bits
	SLP_TYP_MASK  = 7 << SLP_TYP_SHIFT
	SLP_EN        = 1 << 13 // PM1_CNT: enter the sleep state (write-only)

	TMR_STS = 1 << 0 // PM1_STS: timer carry (bit 23 toggled)
	TMR_EN  = 1 << 0 // PM1_EN

	// PMTimerHz is the PM timer's rate (4.8.3.3).
	PMTimerHz   = 3579545
	timerMask   = 1<<24 - 1
	nsPerSecond = 1_000_000_000

	EventLen   = 4
	ControlLen = 2
	TimerLen   = 4
)

// StateVersion is the version of PM's snapshot encoding.
const StateVersion = 1

const stateLen = 6 // en (2), cnt (2), stsWritten (2)

// PM is the PM1a event and control blocks and the PM timer.
type PM struct {
	q             *event.Queue
	evt, cnt, tmr uint16 // ports
	en, ctl       uint16
	sts           uint16 // status bits the guest has not cleared (none are ever set)
	s5            uint8  // SLP_TYP of \_S5
	PowerOff      func() // called for SLP_EN with SLP_TYP = s5
}

// New returns the PM blocks at the given ports, SLP_TYP s5 meaning S5.
func New(q *event.Queue, evt, cnt, tmr uint16, s5 uint8) *PM {
	return &PM{q: q, evt: evt, cnt: cnt, tmr: tmr, s5: s5, ctl: SCI_EN}
}

// Register puts the three blocks on bus.
func (p *PM) Register(bus *devices.Bus) error {
	if err := bus.Register(p.evt, EventLen, p); err != nil {
		return err
	}
	if err := bus.Register(p.cnt, ControlLen, p); err != nil {
		return err
	}
	return bus.Register(p.tmr, TimerLen, p)
}

// Timer returns the PM timer's value at VM time now (ns).
func Timer(now int64) uint32 {
	if now < 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(now), PMTimerHz)
	ticks, _ := bits.Div64(hi, lo, nsPerSecond) // hi < 1e9 for any int64 now
	return uint32(ticks & timerMask)
}

// In implements devices.PortDevice. The registers are read whole at their
// first port (word or dword accesses, as the FADT's GAS say); other
// accesses read as all ones.
func (p *PM) In(port uint16, size uint8) uint32 {
	switch {
	case port == p.evt+PM1_STS && size == 2:
		return uint32(p.sts)
	case port == p.evt+PM1_EN && size == 2:
		return uint32(p.en)
	case port == p.evt && size == 4:
		return uint32(p.sts) | uint32(p.en)<<16
	case port == p.cnt && size == 2:
		return uint32(p.ctl)
	case port == p.tmr && size == 4:
		return Timer(p.q.Now())
	}
	return devices.Floating >> (32 - 8*uint32(min(max(size, 1), 4)))
}

// Out implements devices.PortDevice.
func (p *PM) Out(port uint16, size uint8, v uint32) {
	switch {
	case port == p.evt+PM1_STS && size == 2:
		p.sts &^= uint16(v) // write 1 to clear
	case port == p.evt+PM1_EN && size == 2:
		p.en = uint16(v)
	case port == p.evt && size == 4:
		p.sts &^= uint16(v)
		p.en = uint16(v >> 16)
	case port == p.cnt && size == 2:
		p.ctl = uint16(v)&^SLP_EN | SCI_EN
		if v&SLP_EN != 0 && uint8((v&SLP_TYP_MASK)>>SLP_TYP_SHIFT) == p.s5 && p.PowerOff != nil {
			p.PowerOff()
		}
	}
}

// MarshalState returns the state, version StateVersion (the timer is VM
// time: nothing to save).
func (p *PM) MarshalState() []byte {
	b := make([]byte, stateLen)
	binary.LittleEndian.PutUint16(b[0:], p.en)
	binary.LittleEndian.PutUint16(b[2:], p.ctl)
	binary.LittleEndian.PutUint16(b[4:], p.sts)
	return b
}

// UnmarshalState restores a MarshalState result.
func (p *PM) UnmarshalState(version uint16, b []byte) error {
	if version != StateVersion {
		return fmt.Errorf("%w: ACPI PM state version %d, want %d", devices.ErrStateVersion, version, StateVersion)
	}
	if len(b) != stateLen {
		return fmt.Errorf("%w: ACPI PM state is %d bytes, want %d", devices.ErrStateLength, len(b), stateLen)
	}
	ctl := binary.LittleEndian.Uint16(b[2:])
	if ctl&SLP_EN != 0 || ctl&SCI_EN == 0 {
		return fmt.Errorf("%w: ACPI PM control %#x", devices.ErrStateInvalid, ctl)
	}
	p.en, p.ctl, p.sts = binary.LittleEndian.Uint16(b[0:]), ctl, binary.LittleEndian.Uint16(b[4:])
	return nil
}
