//go:build tamago

package virtio

import (
	"sync/atomic"
	"unsafe"
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
