//go:build tamago

package nvme

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/usbarmory/tamago/dma"
)

// PhysRegs is a controller's register window (BAR0) at a physical (=
// virtual, identity-mapped) address. Accesses are 32-bit volatile loads
// and stores through sync/atomic; a 64-bit register is two 32-bit
// accesses, low half first, as Base 2.0 section 3.1.3 allows.
type PhysRegs uintptr

func (r PhysRegs) reg(off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(uintptr(r) + uintptr(off)))
}

func (r PhysRegs) Read32(off uint32) uint32     { return atomic.LoadUint32(r.reg(off)) }
func (r PhysRegs) Write32(off uint32, v uint32) { atomic.StoreUint32(r.reg(off), v) }

func (r PhysRegs) Read64(off uint32) uint64 {
	lo := r.Read32(off)
	return uint64(r.Read32(off+4))<<32 | uint64(lo)
}

func (r PhysRegs) Write64(off uint32, v uint64) {
	r.Write32(off, uint32(v))
	r.Write32(off+4, uint32(v>>32))
}

// TamagoDMA allocates from tamago's global DMA region (dma.Init must have
// been called by the board). Allocations are never freed.
type TamagoDMA struct{}

func (TamagoDMA) Alloc(size, align int) (pa uint64, buf []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("nvme: DMA allocation of %d bytes failed: %v", size, r)
		}
	}()
	addr, b := dma.Reserve(size, align)
	if b == nil {
		return 0, nil, fmt.Errorf("nvme: DMA allocation of %d bytes failed", size)
	}
	return uint64(addr), b, nil
}

// Phys returns the physical address of b[0]: under TamaGo's identity map
// every Go slice is physically contiguous and reachable by the
// controller. The buffer stays in place during the I/O (Go's collector
// does not move heap objects).
func Phys(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), true
}
