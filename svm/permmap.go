package svm

import "fmt"

// Permission map sizes (APM vol. 2, 15.10.1 and 15.11).
const (
	IOPMSize  = 3 * PageSize // one bit per port 0-0xFFFF, plus a page for accesses that wrap
	MSRPMSize = 2 * PageSize // two bits (read, write) per MSR in three ranges
)

// IOPM is the I/O permission map: a set bit intercepts the port.
type IOPM []byte

// NewIOPM returns a map over buf (IOPMSize bytes) that intercepts every port.
func NewIOPM(buf []byte) IOPM {
	m := IOPM(buf[:IOPMSize])
	for i := range m {
		m[i] = 0xff
	}
	return m
}

// Set intercepts (true) or passes through (false) ports [port, port+n).
func (m IOPM) Set(port uint16, n int, intercept bool) {
	for p := int(port); p < int(port)+n && p <= 0xffff; p++ {
		if intercept {
			m[p/8] |= 1 << (p % 8)
		} else {
			m[p/8] &^= 1 << (p % 8)
		}
	}
}

// Intercepted reports whether an access of size bytes at port exits: any
// byte of the access covered by a set bit intercepts it.
func (m IOPM) Intercepted(port uint16, size int) bool {
	for p := int(port); p < int(port)+size; p++ {
		if m[p/8]&(1<<(p%8)) != 0 {
			return true
		}
	}
	return false
}

// MSRPM is the MSR permission map. Each of three MSR ranges has 2 KiB:
// two bits per MSR, the low one intercepts RDMSR, the high one WRMSR.
type MSRPM []byte

// MSR ranges covered by the map (APM vol. 2, table 15-7).
var msrpmRanges = [...]struct{ first, offset uint32 }{
	{0x00000000, 0x0000},
	{0xc0000000, 0x0800},
	{0xc0010000, 0x1000},
}

const msrsPerRange = 0x2000

// NewMSRPM returns a map over buf (MSRPMSize bytes) that intercepts every MSR.
func NewMSRPM(buf []byte) MSRPM {
	m := MSRPM(buf[:MSRPMSize])
	for i := range m {
		m[i] = 0xff
	}
	return m
}

// bit returns the byte index and bit of the read-intercept bit of msr.
func (m MSRPM) bit(msr uint32) (idx int, shift uint, err error) {
	for _, r := range msrpmRanges {
		if msr >= r.first && msr < r.first+msrsPerRange {
			n := msr - r.first
			return int(r.offset + n/4), uint(n%4) * 2, nil
		}
	}
	return 0, 0, fmt.Errorf("svm: MSR %#x is outside the permission map (always intercepted)", msr)
}

// Set chooses whether RDMSR and WRMSR of msr exit.
func (m MSRPM) Set(msr uint32, read, write bool) error {
	i, s, err := m.bit(msr)
	if err != nil {
		return err
	}
	m[i] &^= 3 << s
	if read {
		m[i] |= 1 << s
	}
	if write {
		m[i] |= 2 << s
	}
	return nil
}

// Intercepted reports whether a read or write of msr exits. MSRs outside
// the map's ranges always exit.
func (m MSRPM) Intercepted(msr uint32, write bool) bool {
	i, s, err := m.bit(msr)
	if err != nil {
		return true
	}
	if write {
		s++
	}
	return m[i]&(1<<s) != 0
}
