//go:build tamago

package virtio

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/usbarmory/tamago/dma"
)

// PhysRegs is a virtio-mmio register window at a physical (= virtual)
// base address. Accesses are 32-bit volatile loads and stores: sync/atomic
// keeps the compiler from caching, merging or eliding them.
type PhysRegs uintptr

func (r PhysRegs) reg(off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(uintptr(r) + uintptr(off)))
}

func (r PhysRegs) Read32(off uint32) uint32     { return atomic.LoadUint32(r.reg(off)) }
func (r PhysRegs) Write32(off uint32, v uint32) { atomic.StoreUint32(r.reg(off), v) }

// TamagoDMA allocates from tamago's global DMA region (dma.Init must have
// been called by the board). Allocations are never freed.
type TamagoDMA struct{}

func (TamagoDMA) Alloc(size, align int) (pa uint64, buf []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("virtio: DMA allocation of %d bytes failed: %v", size, r)
		}
	}()
	addr, b := dma.Reserve(size, align)
	if b == nil {
		return 0, nil, fmt.Errorf("virtio: DMA allocation of %d bytes failed", size)
	}
	return uint64(addr), b, nil
}

// Phys returns the physical address of b[0]; under TamaGo's identity
// mapping every Go slice is physically contiguous and device-accessible.
// The buffer must stay in place during the I/O: heap memory does (Go's
// collector does not move objects), and slices passed through Phys escape
// to the heap.
func Phys(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), true
}
