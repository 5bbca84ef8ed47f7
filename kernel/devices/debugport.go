package devices

import "io"

// DebugPortAddr is the Bochs/QEMU debug console port.
const DebugPortAddr = 0xE9

// DebugPortStateVersion is the version of DebugPort's snapshot encoding.
const DebugPortStateVersion = 1

// DebugPort models the Bochs debug console at port 0xE9: a byte written
// there is written to the output; a read returns 0xE9, which is how a
// guest detects the port (Bochs convention).
//
// Multi-byte accesses follow the ISA bus: a 2- or 4-byte access at 0xE9
// touches 0xE9 and the ports after it, which read as all ones and ignore
// writes; only the low byte reaches the debug port.
type DebugPort struct {
	out io.Writer
}

// NewDebugPort returns a debug port writing to out (nil discards).
func NewDebugPort(out io.Writer) *DebugPort {
	if out == nil {
		out = io.Discard
	}
	return &DebugPort{out: out}
}

// In implements PortDevice.
func (d *DebugPort) In(port uint16, size uint8) uint32 {
	return ByteWiseIn(port, size, func(p uint16) uint8 {
		if p == DebugPortAddr {
			return DebugPortAddr
		}
		return 0xFF
	})
}

// Out implements PortDevice.
func (d *DebugPort) Out(port uint16, size uint8, v uint32) {
	ByteWiseOut(port, size, v, func(p uint16, b uint8) {
		if p == DebugPortAddr {
			_, _ = d.out.Write([]byte{b})
		}
	})
}

// MarshalState returns the debug port's state: it has none, so this is an
// empty slice (version DebugPortStateVersion). It exists so that every
// model is saved the same way.
func (d *DebugPort) MarshalState() []byte { return []byte{} }

// UnmarshalState accepts only the empty state of DebugPortStateVersion.
func (d *DebugPort) UnmarshalState(version uint16, b []byte) error {
	return checkState("DebugPort", DebugPortStateVersion, 0, version, b)
}
