package svm

import "errors"

// ASIDs tags guest TLB entries (APM vol. 2, 15.16). ASID 0 is the host's and
// VMRUN refuses it.
type ASIDs struct {
	n    uint32
	used []bool
}

// ErrNoASID is returned when every ASID is in use.
var ErrNoASID = errors.New("svm: no free ASID")

// NewASIDs manages ASIDs 1..n-1 (n from CPUID 8000_000A EBX).
func NewASIDs(n uint32) *ASIDs {
	if n < 2 {
		n = 2
	}
	return &ASIDs{n: n, used: make([]bool, n)}
}

// Alloc returns a free ASID.
func (a *ASIDs) Alloc() (uint32, error) {
	for i := uint32(1); i < a.n; i++ {
		if !a.used[i] {
			a.used[i] = true
			return i, nil
		}
	}
	return 0, ErrNoASID
}

// Free releases an ASID. A reused ASID may hold stale translations: the
// next VMRUN with it must flush (TLBControlFlushAll or FlushASID).
func (a *ASIDs) Free(id uint32) {
	if id > 0 && id < a.n {
		a.used[id] = false
	}
}
