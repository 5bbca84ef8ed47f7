// Package virtio is a minimal modern (VIRTIO 1.x) driver core for
// tamavisor: the device initialisation sequence and feature negotiation
// (VIRTIO 1.2 section 3.1 and 2.1-2.2), a transport abstraction with a
// virtio-mmio version 2 implementation (section 4.2), and a split virtqueue
// with descriptor chains (section 2.7). Drivers poll for completions; no
// interrupts are used.
//
// The package is pure Go and host-testable. Register access goes through
// Regs, DMA memory through DMA; the TamaGo implementations live in
// *_tamago.go files. Ring structures are little-endian, and the code
// assumes a little-endian host (amd64).
package virtio

import (
	"errors"
	"fmt"
)

// Device status bits (section 2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 64
	StatusFailed           = 128
)

// Reserved feature bits (section 6).
const (
	FeatureVersion1 = 32 // VIRTIO_F_VERSION_1: modern device
)

// Transport is what a driver needs from a virtio transport (virtio-mmio,
// and later virtio-pci). Queue indices are zero-based.
type Transport interface {
	// DeviceID is the virtio device type (2 = block), 0 if no device.
	DeviceID() uint32
	DeviceFeatures() uint64
	SetDriverFeatures(f uint64)
	Status() uint8
	// SetStatus writes the whole status register.
	SetStatus(s uint8)
	// Reset resets the device and waits until it reports status 0.
	Reset() error
	// ReadConfig reads device-specific configuration bytes at off into p,
	// as one consistent snapshot (config generation). Implementations may
	// require off and len(p) to be multiples of 4.
	ReadConfig(off int, p []byte) error
	// QueueMax is the maximum size of queue q, 0 if it does not exist.
	QueueMax(q int) int
	SetQueueSize(q int, n int)
	// SetQueueAddrs sets the physical addresses of the descriptor table,
	// driver (available) area and device (used) area.
	SetQueueAddrs(q int, desc, driver, device uint64)
	SetQueueReady(q int, ready bool)
	Notify(q int)
}

// DMA hands out memory the device can access. pa is the physical address
// of buf[0]; buf has len size and is aligned to align (a power of two).
type DMA interface {
	Alloc(size, align int) (pa uint64, buf []byte, err error)
}

// ErrFeaturesRejected is returned when the device clears FEATURES_OK.
var ErrFeaturesRejected = errors.New("virtio: device rejected the negotiated features (FEATURES_OK not accepted)")

// Negotiate resets the device and runs the first steps of the driver
// initialisation (section 3.1.1): ACKNOWLEDGE, DRIVER, feature negotiation
// and FEATURES_OK. It accepts the device's offer restricted to
// required|optional and fails if a required bit is missing. On success
// the caller sets up its queues and then calls DriverOK.
func Negotiate(t Transport, required, optional uint64) (uint64, error) {
	if err := t.Reset(); err != nil {
		return 0, err
	}
	t.SetStatus(StatusAcknowledge)
	t.SetStatus(StatusAcknowledge | StatusDriver)
	dev := t.DeviceFeatures()
	if missing := required &^ dev; missing != 0 {
		t.SetStatus(StatusFailed)
		if missing&(1<<FeatureVersion1) != 0 {
			return 0, errors.New("virtio: device does not offer VIRTIO_F_VERSION_1 (legacy-only device)")
		}
		return 0, fmt.Errorf("virtio: device lacks required features %#x", missing)
	}
	f := dev & (required | optional)
	t.SetDriverFeatures(f)
	t.SetStatus(StatusAcknowledge | StatusDriver | StatusFeaturesOK)
	if t.Status()&StatusFeaturesOK == 0 {
		t.SetStatus(StatusFailed)
		return 0, ErrFeaturesRejected
	}
	return f, nil
}

// DriverOK completes initialisation: the device is live after this call.
func DriverOK(t Transport) {
	t.SetStatus(t.Status() | StatusDriverOK)
}
