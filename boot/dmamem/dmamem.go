//go:build tamago

// Package dmamem is the memory the board's device drivers (virtio-blk,
// NVMe) hand to their devices under TamaGo: allocations from TamaGo's
// DMA region, and the physical address of any Go slice, which TamaGo's
// identity map makes physically contiguous and reachable by a device.
package dmamem

import (
	"fmt"
	"unsafe"

	"github.com/usbarmory/tamago/dma"
)

// Region allocates from TamaGo's global DMA region (dma.Init must have
// been called by the board). Allocations are never freed. It is the DMA
// of both virtio.DMA and nvme.DMA.
type Region struct{}

func (Region) Alloc(size, align int) (pa uint64, buf []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("DMA allocation of %d bytes failed: %v", size, r)
		}
	}()
	addr, b := dma.Reserve(size, align)
	if b == nil {
		return 0, nil, fmt.Errorf("DMA allocation of %d bytes failed", size)
	}
	return uint64(addr), b, nil
}

// Phys returns the physical address of b[0]: under TamaGo's identity map
// every Go slice is physically contiguous and device-accessible. The
// buffer must stay in place during the I/O: heap memory does (Go's
// collector does not move objects), and slices passed through Phys escape
// to the heap.
func Phys(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), true
}
