// Package devices holds tamavisor's device models on the I/O port bus: the
// emulated devices a guest reaches with IN and OUT (docs/guest-abi.md,
// "Devices").
//
// The models are plain Go with no hardware access, so they are tested on
// the host. Each model implements PortDevice and has a versioned snapshot
// encoding (MarshalState / UnmarshalState) for save and restore.
package devices

import (
	"errors"
	"fmt"
)

// PortDevice is a device model reached through x86 port I/O.
type PortDevice interface {
	// In returns the value read from port, size is 1, 2 or 4 bytes.
	In(port uint16, size uint8) uint32
	// Out writes the low size bytes of v to port.
	Out(port uint16, size uint8, v uint32)
}

// Floating is what a read from a port nobody decodes returns (all ones,
// the ISA bus convention). The mask for a size-byte access is
// Floating >> (32 - 8*size).
const Floating = 0xFFFFFFFF

// validSize reports whether size is a port access width (1, 2 or 4 bytes).
func validSize(size uint8) bool {
	return size == 1 || size == 2 || size == 4
}

// sizeMask returns the value mask for a size-byte access (size valid).
func sizeMask(size uint8) uint32 {
	return Floating >> (32 - 8*uint32(size))
}

// ByteWiseIn and ByteWiseOut implement a multi-byte port access on a
// device whose registers are one byte wide, the way the ISA bus does it: a
// size-byte access to port is size single-byte accesses to port, port+1,
// ..., assembled little endian. Invalid sizes read as Floating and write
// nothing.
func ByteWiseIn(port uint16, size uint8, in8 func(port uint16) uint8) uint32 {
	if !validSize(size) {
		return Floating
	}
	var v uint32
	for i := uint8(0); i < size; i++ {
		v |= uint32(in8(port+uint16(i))) << (8 * i)
	}
	return v
}

func ByteWiseOut(port uint16, size uint8, v uint32, out8 func(port uint16, b uint8)) {
	if !validSize(size) {
		return
	}
	for i := uint8(0); i < size; i++ {
		out8(port+uint16(i), uint8(v>>(8*i)))
	}
}

// ErrStateVersion is returned (wrapped) by UnmarshalState for a snapshot
// version the model does not understand.
var ErrStateVersion = errors.New("devices: unsupported state version")

// ErrStateLength is returned (wrapped) by UnmarshalState for a snapshot of
// the wrong size.
var ErrStateLength = errors.New("devices: wrong state length")

// ErrStateInvalid is returned (wrapped) by UnmarshalState for a snapshot
// whose fields hold values the model can never be in.
var ErrStateInvalid = errors.New("devices: invalid state")

func checkState(model string, wantVersion uint16, wantLen int, version uint16, b []byte) error {
	if version != wantVersion {
		return fmt.Errorf("%w: %s state version %d, want %d", ErrStateVersion, model, version, wantVersion)
	}
	if len(b) != wantLen {
		return fmt.Errorf("%w: %s state is %d bytes, want %d", ErrStateLength, model, len(b), wantLen)
	}
	return nil
}
