package devices

import "fmt"

// MMIODevice is a device model reached through memory-mapped I/O: a guest
// load or store on its guest-physical range is trapped (a nested page
// fault), decoded, and sent here. off is the offset from the start of the
// device's range; size is 1, 2, 4 or 8 bytes.
type MMIODevice interface {
	Read(off uint64, size uint8) uint64
	Write(off uint64, size uint8, v uint64)
}

// MMIOBus dispatches MMIO accesses to the devices registered on it. It is
// the one MMIO bus of a VM: the local APIC, the I/O APIC and any future
// device (virtio-mmio) register here. Unclaimed addresses are the caller's
// business (Lookup returns nil).
type MMIOBus struct {
	ranges []mmioRange
}

type mmioRange struct {
	base, size uint64
	dev        MMIODevice
}

// Register makes dev handle [base, base+size). It fails for an empty or
// wrapping range or one overlapping a registered range.
func (b *MMIOBus) Register(base, size uint64, dev MMIODevice) error {
	if size == 0 || dev == nil || base+size < base {
		return fmt.Errorf("devices: bad MMIO registration at %#x (size %#x)", base, size)
	}
	for _, r := range b.ranges {
		if base < r.base+r.size && r.base < base+size {
			return fmt.Errorf("devices: MMIO %#x+%#x overlaps %#x+%#x", base, size, r.base, r.size)
		}
	}
	b.ranges = append(b.ranges, mmioRange{base, size, dev})
	return nil
}

// Lookup returns the device whose range holds the whole access
// [gpa, gpa+size), and the offset of gpa in that range.
func (b *MMIOBus) Lookup(gpa uint64, size uint8) (MMIODevice, uint64, bool) {
	for _, r := range b.ranges {
		if gpa >= r.base && gpa-r.base < r.size && uint64(size) <= r.size-(gpa-r.base) {
			return r.dev, gpa - r.base, true
		}
	}
	return nil, 0, false
}

// Claims reports whether gpa lies in a registered range.
func (b *MMIOBus) Claims(gpa uint64) bool {
	_, _, ok := b.Lookup(gpa, 1)
	return ok
}

// validMMIOSize reports whether size is an MMIO access width.
func validMMIOSize(size uint8) bool {
	return size == 1 || size == 2 || size == 4 || size == 8
}

// IRQLine is one interrupt request line from a device to an interrupt
// controller. Edge-triggered sources pulse it (Set(true) then Set(false));
// level-triggered ones hold it while the condition lasts.
type IRQLine interface {
	Set(level bool)
}

// IRQFunc adapts a function to IRQLine.
type IRQFunc func(level bool)

// Set implements IRQLine.
func (f IRQFunc) Set(level bool) { f(level) }

// NoIRQ is an IRQ line wired to nothing.
var NoIRQ IRQLine = IRQFunc(func(bool) {})
