package legacy

import (
	"sync"

	"tamavisor/kernel/devices"
)

// POST_PORT is the PC's power-on self test code port.
const POST_PORT = 0x80

// POST is the POST code port: a byte written there is kept and read back
// (0xFF before the first write), with no other effect; a host may show it
// with Code. Multi-byte accesses follow the ISA bus: the bytes after the
// first go to ports 0x81 and up, which read as 0xFF and ignore writes.
type POST struct {
	mu   sync.Mutex
	code uint8
}

// NewPOST returns a POST code port holding 0xFF.
func NewPOST() *POST { return &POST{code: 0xFF} }

// Register puts the port on bus at POST_PORT.
func (p *POST) Register(bus *devices.Bus) error { return bus.Register(POST_PORT, 1, p) }

// Code returns the last byte written.
func (p *POST) Code() uint8 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

// In implements devices.PortDevice.
func (p *POST) In(port uint16, size uint8) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return devices.ByteWiseIn(port, size, func(port uint16) uint8 {
		if port != POST_PORT {
			return 0xFF
		}
		return p.code
	})
}

// Out implements devices.PortDevice.
func (p *POST) Out(port uint16, size uint8, v uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	devices.ByteWiseOut(port, size, v, func(port uint16, b uint8) {
		if port == POST_PORT {
			p.code = b
		}
	})
}

// MarshalState returns the port's state, version StateVersion: one byte,
// the last code written.
func (p *POST) MarshalState() []byte { return []byte{p.Code()} }

// UnmarshalState restores a state produced by MarshalState.
func (p *POST) UnmarshalState(version uint16, b []byte) error {
	if err := checkState("POST", 1, version, b); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.code = b[0]
	return nil
}
