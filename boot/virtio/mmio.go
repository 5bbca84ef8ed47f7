package virtio

import (
	"errors"
	"fmt"
)

// Regs is 32-bit register access to one virtio-mmio device window.
type Regs interface {
	Read32(off uint32) uint32
	Write32(off uint32, v uint32)
}

// virtio-mmio register offsets (section 4.2.2, table 4.1).
const (
	RegMagicValue        = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegConfigGeneration  = 0x0fc
	RegConfig            = 0x100
)

// Values of the identification registers.
const (
	MMIOMagic         = 0x74726976 // "virt", little-endian
	MMIOVersion       = 2          // modern virtio-mmio
	MMIOVersionLegacy = 1
)

// resetSpins bounds the wait for a reset to complete.
const resetSpins = 1 << 20

// ErrNoMMIODevice is returned by ProbeMMIO for a window without the magic value.
var ErrNoMMIODevice = errors.New("virtio-mmio: no device (bad magic value)")

// MMIO is the virtio-mmio version 2 transport.
type MMIO struct {
	r Regs
}

var _ Transport = (*MMIO)(nil)

// ProbeMMIO checks the magic value and version of a virtio-mmio window.
// A window whose DeviceID is 0 is a valid transport without a device.
func ProbeMMIO(r Regs) (*MMIO, error) {
	if m := r.Read32(RegMagicValue); m != MMIOMagic {
		return nil, fmt.Errorf("%w: %#x", ErrNoMMIODevice, m)
	}
	switch v := r.Read32(RegVersion); v {
	case MMIOVersion:
	case MMIOVersionLegacy:
		return nil, errors.New("virtio-mmio: legacy (version 1) device; start QEMU with -global virtio-mmio.force-legacy=false")
	default:
		return nil, fmt.Errorf("virtio-mmio: unsupported version %d", v)
	}
	return &MMIO{r: r}, nil
}

func (m *MMIO) DeviceID() uint32 { return m.r.Read32(RegDeviceID) }

func (m *MMIO) DeviceFeatures() uint64 {
	m.r.Write32(RegDeviceFeaturesSel, 0)
	lo := m.r.Read32(RegDeviceFeatures)
	m.r.Write32(RegDeviceFeaturesSel, 1)
	hi := m.r.Read32(RegDeviceFeatures)
	return uint64(hi)<<32 | uint64(lo)
}

func (m *MMIO) SetDriverFeatures(f uint64) {
	m.r.Write32(RegDriverFeaturesSel, 0)
	m.r.Write32(RegDriverFeatures, uint32(f))
	m.r.Write32(RegDriverFeaturesSel, 1)
	m.r.Write32(RegDriverFeatures, uint32(f>>32))
}

func (m *MMIO) Status() uint8      { return uint8(m.r.Read32(RegStatus)) }
func (m *MMIO) SetStatus(s uint8)  { m.r.Write32(RegStatus, uint32(s)) }
func (m *MMIO) Notify(q int)       { m.r.Write32(RegQueueNotify, uint32(q)) }
func (m *MMIO) QueueMax(q int) int { m.sel(q); return int(m.r.Read32(RegQueueNumMax)) }

func (m *MMIO) Reset() error {
	m.r.Write32(RegStatus, 0)
	for range resetSpins {
		if m.r.Read32(RegStatus) == 0 {
			return nil
		}
	}
	return errors.New("virtio-mmio: device did not complete reset")
}

// ReadConfig reads with aligned 32-bit accesses, which section 4.2.2.2
// prescribes for 32- and 64-bit fields; off and len(p) must be multiples of 4.
func (m *MMIO) ReadConfig(off int, p []byte) error {
	if off < 0 || off%4 != 0 || len(p)%4 != 0 {
		return fmt.Errorf("virtio-mmio: unaligned config read (offset %d, length %d)", off, len(p))
	}
	for range 100 {
		gen := m.r.Read32(RegConfigGeneration)
		for i := 0; i < len(p); i += 4 {
			v := m.r.Read32(RegConfig + uint32(off+i))
			p[i], p[i+1], p[i+2], p[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
		if m.r.Read32(RegConfigGeneration) == gen {
			return nil
		}
	}
	return errors.New("virtio-mmio: config space keeps changing")
}

func (m *MMIO) sel(q int) { m.r.Write32(RegQueueSel, uint32(q)) }

func (m *MMIO) SetQueueSize(q int, n int) {
	m.sel(q)
	m.r.Write32(RegQueueNum, uint32(n))
}

func (m *MMIO) SetQueueAddrs(q int, desc, driver, device uint64) {
	m.sel(q)
	m.r.Write32(RegQueueDescLow, uint32(desc))
	m.r.Write32(RegQueueDescHigh, uint32(desc>>32))
	m.r.Write32(RegQueueDriverLow, uint32(driver))
	m.r.Write32(RegQueueDriverHigh, uint32(driver>>32))
	m.r.Write32(RegQueueDeviceLow, uint32(device))
	m.r.Write32(RegQueueDeviceHigh, uint32(device>>32))
}

func (m *MMIO) SetQueueReady(q int, ready bool) {
	m.sel(q)
	v := uint32(0)
	if ready {
		v = 1
	}
	m.r.Write32(RegQueueReady, v)
}
