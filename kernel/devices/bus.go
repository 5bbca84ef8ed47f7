package devices

import "fmt"

// Bus dispatches port I/O to the devices registered on it. Ports no device
// claims read as all ones and ignore writes (docs/guest-abi.md). A Bus is
// itself a PortDevice.
//
// A multi-byte access is sent whole to the device owning its first port;
// devices built on ByteWiseIn/ByteWiseOut split it themselves. Register
// devices before the bus is used: Register is not safe to call
// concurrently with In and Out.
type Bus struct {
	ranges []busRange
}

type busRange struct {
	first, last uint16 // inclusive
	dev         PortDevice
}

// Register makes dev handle ports first..first+count-1. It fails if count
// is 0, the range wraps past 0xFFFF or overlaps a registered one.
func (b *Bus) Register(first, count uint16, dev PortDevice) error {
	if count == 0 || dev == nil {
		return fmt.Errorf("devices: bad registration at port %#x (count %d)", first, count)
	}
	last := uint32(first) + uint32(count) - 1
	if last > 0xFFFF {
		return fmt.Errorf("devices: ports %#x+%d wrap past 0xffff", first, count)
	}
	for _, r := range b.ranges {
		if uint32(r.first) <= last && first <= r.last {
			return fmt.Errorf("devices: ports %#x-%#x overlap %#x-%#x", first, last, r.first, r.last)
		}
	}
	b.ranges = append(b.ranges, busRange{first, uint16(last), dev})
	return nil
}

// Lookup returns the device owning port, or nil.
func (b *Bus) Lookup(port uint16) PortDevice {
	for _, r := range b.ranges {
		if port >= r.first && port <= r.last {
			return r.dev
		}
	}
	return nil
}

// In implements PortDevice.
func (b *Bus) In(port uint16, size uint8) uint32 {
	if !validSize(size) {
		return Floating
	}
	if d := b.Lookup(port); d != nil {
		return d.In(port, size) & sizeMask(size)
	}
	return sizeMask(size)
}

// Out implements PortDevice.
func (b *Bus) Out(port uint16, size uint8, v uint32) {
	if !validSize(size) {
		return
	}
	if d := b.Lookup(port); d != nil {
		d.Out(port, size, v&sizeMask(size))
	}
}
