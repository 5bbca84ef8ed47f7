// Package devicetest holds checks shared by the device packages' tests
// (kernel/devices and its subpackages), mainly their fuzz targets: the
// snapshot rules every device model's MarshalState and UnmarshalState
// must keep.
//
// It imports no device package, so kernel/devices' own tests can use it.
package devicetest

import (
	"bytes"
	"testing"
)

// Stateful is a device model with a versioned snapshot encoding.
type Stateful interface {
	MarshalState() []byte
	UnmarshalState(version uint16, b []byte) error
}

// CheckUnmarshal restores st, at version, into m: if m rejects it, m's
// state must be unchanged; if m accepts it, m's state must read back as
// st exactly.
func CheckUnmarshal(t testing.TB, m Stateful, version uint16, st []byte) {
	t.Helper()
	before := m.MarshalState()
	if err := m.UnmarshalState(version, st); err != nil {
		if !bytes.Equal(m.MarshalState(), before) {
			t.Fatalf("failed UnmarshalState changed the state: %v", err)
		}
	} else if got := m.MarshalState(); !bytes.Equal(got, st) {
		t.Fatalf("accepted state %x reads back as %x", st, got)
	}
}

// CheckRoundTrip restores from's own state, at version (the model's
// current one), into fresh: fresh must accept it and read it back
// exactly.
func CheckRoundTrip(t testing.TB, from, fresh Stateful, version uint16) {
	t.Helper()
	st := from.MarshalState()
	if err := fresh.UnmarshalState(version, st); err != nil {
		t.Fatalf("own state %x rejected: %v", st, err)
	}
	if !bytes.Equal(fresh.MarshalState(), st) {
		t.Fatal("state round trip differs")
	}
}

// Reader returns a function that takes the fuzz input *data one byte at a
// time, 0 once it is used up.
func Reader(data *[]byte) func() byte {
	return func() byte {
		if len(*data) == 0 {
			return 0
		}
		b := (*data)[0]
		*data = (*data)[1:]
		return b
	}
}
