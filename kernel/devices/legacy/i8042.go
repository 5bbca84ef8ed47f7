package legacy

import "tamavisor/kernel/devices"

// i8042 ports (IBM PC/AT Technical Reference, "Keyboard Controller").
const (
	I8042_DATA    = 0x60 // output buffer (read), input buffer (write)
	I8042_STATUS  = 0x64 // status register (read)
	I8042_COMMAND = 0x64 // command (write)
)

// Status register bits.
const (
	STR_OBF = 0x01 // output buffer full: a byte waits at I8042_DATA
	STR_IBF = 0x02 // input buffer full: the controller is busy
)

// Commands.
const (
	// CMD_PULSE_OUTPUT (0xF0-0xFF) pulses low, for 6 us, the output
	// port bits 3:0 that are 0 in the command; bit 0 is the CPU reset
	// line, so 0xFE resets the machine.
	CMD_PULSE_OUTPUT = 0xF0
	OUT_RESET        = 0x01 // output port bit 0: system reset (active low)
)

// I8042 is a PC keyboard controller that is not there, except for its
// reset line.
//
// The status register reads STR_OBF and never STR_IBF, and the data port
// reads 0xFF: a probe that empties the output buffer before talking to
// the controller never sees it empty, so Linux's i8042 driver gives up
// at once ("i8042: No controller found") without any command timeouts,
// while code that waits for IBF clear before writing a command (Linux's
// keyboard-controller reboot) goes ahead at once. Writing a pulse-output
// command with bit 0 clear (0xFE) calls the reset callback; every other
// write is ignored. (Code that waits for OBF clear, like the 16-bit boot
// code's A20 gate, loops until its own limit: the 64-bit boot protocol
// skips it.)
type I8042 struct {
	reset func()
}

// NewI8042 returns a controller calling reset (nil: nothing) when the
// guest pulses the reset line.
func NewI8042(reset func()) *I8042 {
	if reset == nil {
		reset = func() {}
	}
	return &I8042{reset: reset}
}

// Register puts the controller on bus at I8042_DATA and I8042_STATUS
// (0x61, between them, belongs to the PIT's NMI_SC).
func (k *I8042) Register(bus *devices.Bus) error {
	if err := bus.Register(I8042_DATA, 1, k); err != nil {
		return err
	}
	return bus.Register(I8042_STATUS, 1, k)
}

// In implements devices.PortDevice.
func (k *I8042) In(port uint16, size uint8) uint32 {
	return devices.ByteWiseIn(port, size, func(port uint16) uint8 {
		if port == I8042_STATUS {
			return STR_OBF
		}
		return 0xFF // I8042_DATA, and ports not decoded
	})
}

// Out implements devices.PortDevice.
func (k *I8042) Out(port uint16, size uint8, v uint32) {
	reset := false
	devices.ByteWiseOut(port, size, v, func(port uint16, b uint8) {
		if port == I8042_COMMAND && b&CMD_PULSE_OUTPUT == CMD_PULSE_OUTPUT && b&OUT_RESET == 0 {
			reset = true
		}
	})
	if reset {
		k.reset()
	}
}

// MarshalState returns the controller's state: it has none, so this is
// an empty slice (version StateVersion).
func (k *I8042) MarshalState() []byte { return []byte{} }

// UnmarshalState accepts only the empty state.
func (k *I8042) UnmarshalState(version uint16, b []byte) error {
	return checkState("I8042", 0, version, b)
}
