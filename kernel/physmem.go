package kernel

import (
	"errors"
	"fmt"
	"sort"

	"tamavisor/svm"
)

// HostMemory gives the hypervisor access to host-physical memory.
type HostMemory interface {
	// Bytes returns the n bytes at host-physical address pa.
	Bytes(pa, n uint64) []byte
}

// PhysPool hands out host-physical memory from one region (boot.PoolStart
// to the end of RAM) in page units: guest RAM, VMCBs, permission maps and
// nested page tables. Freed ranges are merged back.
type PhysPool struct {
	mem  HostMemory
	free []span // sorted, non-adjacent
}

type span struct{ start, end uint64 }

// ErrNoMemory is returned when the pool cannot satisfy an allocation.
var ErrNoMemory = errors.New("out of host memory for guests")

// NewPhysPool manages [start, end) of mem.
func NewPhysPool(mem HostMemory, start, end uint64) *PhysPool {
	start = alignUp(start, svm.PageSize)
	end &^= svm.PageSize - 1
	p := &PhysPool{mem: mem}
	if end > start {
		p.free = []span{{start, end}}
	}
	return p
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// Alloc returns size bytes (rounded up to pages) aligned to align (a power
// of two, at least a page), zeroed.
func (p *PhysPool) Alloc(size, align uint64) (uint64, error) {
	pa, err := p.AllocUncleared(size, align)
	if err == nil {
		clear(p.mem.Bytes(pa, alignUp(size, svm.PageSize)))
	}
	return pa, err
}

// AllocUncleared is Alloc without the clearing: the memory holds what its
// last user left. The caller clears every byte before a guest or anyone
// else can read it (a lazy restore: clearing 256 MiB takes longer under
// emulation than the rest of the restore).
func (p *PhysPool) AllocUncleared(size, align uint64) (uint64, error) {
	if align < svm.PageSize {
		align = svm.PageSize
	}
	if size == 0 || size > p.FreeBytes() {
		return 0, fmt.Errorf("%w: %d KiB requested, %d KiB free", ErrNoMemory, size>>10, p.FreeBytes()>>10)
	}
	size = alignUp(size, svm.PageSize)
	for i, s := range p.free {
		a := alignUp(s.start, align)
		if a < s.start || a+size > s.end || a+size < a {
			continue
		}
		// Split the span around [a, a+size).
		var repl []span
		if a > s.start {
			repl = append(repl, span{s.start, a})
		}
		if a+size < s.end {
			repl = append(repl, span{a + size, s.end})
		}
		p.free = append(p.free[:i], append(repl, p.free[i+1:]...)...)
		return a, nil
	}
	return 0, fmt.Errorf("%w: %d KiB requested, %d KiB free", ErrNoMemory, size>>10, p.FreeBytes()>>10)
}

// Free returns [pa, pa+size) to the pool.
func (p *PhysPool) Free(pa, size uint64) {
	size = alignUp(size, svm.PageSize)
	p.free = append(p.free, span{pa, pa + size})
	sort.Slice(p.free, func(i, j int) bool { return p.free[i].start < p.free[j].start })
	merged := p.free[:1]
	for _, s := range p.free[1:] {
		last := &merged[len(merged)-1]
		if s.start <= last.end {
			if s.end > last.end {
				last.end = s.end
			}
			continue
		}
		merged = append(merged, s)
	}
	p.free = merged
}

// FreeBytes is the memory left in the pool.
func (p *PhysPool) FreeBytes() uint64 {
	var n uint64
	for _, s := range p.free {
		n += s.end - s.start
	}
	return n
}

// pageTracker is the svm.PageAllocator of one VM: it takes pages from the
// pool and remembers them so the VM can give them all back.
type pageTracker struct {
	pool  *PhysPool
	pages []uint64
}

func (t *pageTracker) AllocPage() (uint64, error) {
	pa, err := t.pool.Alloc(svm.PageSize, svm.PageSize)
	if err == nil {
		t.pages = append(t.pages, pa)
	}
	return pa, err
}

func (t *pageTracker) Page(pa uint64) *[svm.PageSize]byte {
	return (*[svm.PageSize]byte)(t.pool.mem.Bytes(pa, svm.PageSize))
}

func (t *pageTracker) release() {
	for _, pa := range t.pages {
		t.pool.Free(pa, svm.PageSize)
	}
	t.pages = nil
}

// PoolPages adapts a pool to svm.PageAllocator for pages that live as long
// as the hypervisor (the host save area).
type PoolPages struct{ Pool *PhysPool }

func (a PoolPages) AllocPage() (uint64, error) { return a.Pool.Alloc(svm.PageSize, svm.PageSize) }

func (a PoolPages) Page(pa uint64) *[svm.PageSize]byte {
	return (*[svm.PageSize]byte)(a.Pool.mem.Bytes(pa, svm.PageSize))
}
