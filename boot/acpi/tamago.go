//go:build tamago

package acpi

import (
	"fmt"
	"unsafe"
)

// PhysMem reads firmware memory through TamaGo's identity map, which
// covers [Start, End): reads elsewhere (the unmapped zero page, or beyond
// the map) are refused rather than faulted on.
type PhysMem struct{ Start, End uint64 }

func (m PhysMem) Read(pa uint64, n int) ([]byte, error) {
	if n < 0 || pa < m.Start || pa >= m.End || uint64(n) > m.End-pa {
		return nil, fmt.Errorf("[%#x, +%d) is outside the identity map [%#x, %#x)", pa, n, m.Start, m.End)
	}
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(uintptr(pa))), n)...), nil
}
