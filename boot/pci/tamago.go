//go:build tamago

package pci

import (
	"sync/atomic"
	"unsafe"
)

// ECAMConfig is configuration space through an MCFG allocation mapped at
// its physical address (TamaGo's identity map). Accesses are 32-bit
// volatile loads and stores (sync/atomic keeps the compiler from caching,
// merging or eliding them). A function outside the allocation reads as
// absent (all ones) and ignores writes.
type ECAMConfig struct{ ECAM }

func (e ECAMConfig) Read32(a Addr, off uint16) uint32 {
	pa, ok := e.Address(a, off&^3)
	if !ok {
		return allOnes32
	}
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(uintptr(pa))))
}

func (e ECAMConfig) Write32(a Addr, off uint16, v uint32) {
	if pa, ok := e.Address(a, off&^3); ok {
		atomic.StoreUint32((*uint32)(unsafe.Pointer(uintptr(pa))), v)
	}
}
