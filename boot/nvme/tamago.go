//go:build tamago

package nvme

import (
	"sync/atomic"
	"unsafe"
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
