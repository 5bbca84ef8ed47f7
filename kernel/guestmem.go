package kernel

import "fmt"

// GuestMemory is a guest's RAM: guest-physical [0, Size) backed by the
// contiguous host-physical range [HostBase, HostBase+Size).
type GuestMemory struct {
	HostBase uint64
	Size     uint64
	ram      []byte
	// fill, while a lazy restore is filling RAM (lazy.go), makes the
	// pages of [gpa, gpa+n) present before the hypervisor touches them.
	fill func(gpa, n uint64) error
}

// GPAError is returned for an access outside guest RAM.
type GPAError struct {
	GPA, Len uint64
}

func (e *GPAError) Error() string {
	return fmt.Sprintf("guest-physical range %#x+%d is outside guest RAM", e.GPA, e.Len)
}

func (m *GuestMemory) check(gpa, n uint64) error {
	if gpa >= m.Size || n > m.Size-gpa {
		return &GPAError{gpa, n}
	}
	return nil
}

// present checks the range and, during a lazy restore, fills it first:
// every access of the hypervisor to guest RAM goes through it.
func (m *GuestMemory) present(gpa, n uint64) error {
	if err := m.check(gpa, n); err != nil {
		return err
	}
	if m.fill != nil {
		return m.fill(gpa, n)
	}
	return nil
}

// Slice returns the guest RAM bytes [gpa, gpa+n) without copying.
func (m *GuestMemory) Slice(gpa, n uint64) ([]byte, error) {
	if err := m.present(gpa, n); err != nil {
		return nil, err
	}
	return m.ram[gpa : gpa+n : gpa+n], nil
}

// raw is Slice without the lazy restore's fill: for placing the pages it
// fills.
func (m *GuestMemory) raw(gpa, n uint64) ([]byte, error) {
	if err := m.check(gpa, n); err != nil {
		return nil, err
	}
	return m.ram[gpa : gpa+n : gpa+n], nil
}

// ReadGPA copies guest RAM at gpa into b (insn.GuestMemory).
func (m *GuestMemory) ReadGPA(gpa uint64, b []byte) error {
	if err := m.present(gpa, uint64(len(b))); err != nil {
		return err
	}
	copy(b, m.ram[gpa:])
	return nil
}

// WriteGPA copies b into guest RAM at gpa.
func (m *GuestMemory) WriteGPA(gpa uint64, b []byte) error {
	if err := m.present(gpa, uint64(len(b))); err != nil {
		return err
	}
	copy(m.ram[gpa:], b)
	return nil
}
