package ioapic

import (
	"encoding/binary"
	"testing"

	"tamavisor/kernel/devices/devicetest"
)

// FuzzIOAPIC runs a random sequence of operations on an I/O APIC. The
// input is read as records: an opcode byte, then its operands.
//
//	op%6 == 0: Read       offset byte (x16), size byte
//	op%6 == 1: Write      offset byte (x16), size byte, 4 value bytes
//	op%6 == 2: SetIRQ     pin byte (%32 - 2), level = op bit 7
//	op%6 == 3: EOI        vector byte
//	op%6 == 4: UnmarshalState version byte, length byte, that many bytes
//	op%6 == 5: MarshalState into a fresh IOAPIC (must round-trip)
//
// The I/O APIC must never panic, only deliver from unmasked, active fixed
// and lowest-priority entries, never hold remote IRR on an edge entry,
// and always restore its own state.
func FuzzIOAPIC(f *testing.F) {
	f.Add([]byte{1, 0, 4, 0x10, 0, 0, 0, 1, 1, 4, 0x30, 0x80, 0, 0, 0x80, 2, 3, 0x30}) // level entry 0, assert, EOI
	f.Add([]byte{1, 0, 4, 0x12, 0, 0, 0, 1, 1, 4, 0x31, 0x20, 0, 0, 0x80, 3, 2, 3})    // active-low edge on pin 1
	f.Add([]byte{1, 0, 4, 0x01, 0, 0, 0, 0, 1, 4, 1, 4, 4, 0x30, 0, 0, 0})             // version, EOI register
	st := New(nil).MarshalState()
	f.Add(append([]byte{4, 1, byte(len(st))}, st...))

	f.Fuzz(func(t *testing.T, data []byte) {
		io := New(nil)
		// Every delivery must come from an unmasked, active, fixed or
		// lowest-priority entry with that vector; a level one has just
		// set its remote IRR. (The callback runs under io's lock.)
		io.target = targetFunc(func(v uint8, level bool) {
			for pin, e := range io.redtbl {
				mode := e & DELMOD
				if uint8(e&INTVEC) == v && e&MASK == 0 && io.asserted(pin) &&
					(mode == DELMOD_FIXED || mode == DELMOD_LOPRI) &&
					(e&TRIGGER != 0) == level && (!level || e&REMOTE_IRR != 0) {
					return
				}
			}
			t.Fatalf("delivery of %#x (level %v) from no entry: %#x", v, level, io.redtbl)
		})
		next := devicetest.Reader(&data)
		for steps := 0; len(data) > 0 && steps < 1000; steps++ {
			op := next()
			switch op % 6 {
			case 0:
				off := uint64(next()) * 16
				io.Read(off, next()%9)
			case 1:
				off := uint64(next()) * 16
				size := next() % 9
				v := binary.LittleEndian.Uint32([]byte{next(), next(), next(), next()})
				io.Write(off, size, uint64(v))
			case 2:
				io.SetIRQ(int(next()%32)-2, op&0x80 != 0)
			case 3:
				io.EOI(next())
			case 4:
				version := uint16(next() % 3)
				n := min(int(next()), len(data))
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, io, version, st)
			case 5:
				devicetest.CheckRoundTrip(t, io, New(nil), StateVersion)
			}
			for pin, e := range io.redtbl {
				if e&REMOTE_IRR != 0 && e&TRIGGER == 0 {
					t.Fatalf("entry %d = %#x: remote IRR on an edge entry", pin, e)
				}
				if e&DELIVS != 0 {
					t.Fatalf("entry %d = %#x: delivery status busy", pin, e)
				}
			}
		}
	})
}

type targetFunc func(vector uint8, level bool)

func (f targetFunc) Deliver(vector uint8, level bool) { f(vector, level) }
