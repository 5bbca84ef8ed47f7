package lapic

import (
	"encoding/binary"
	"testing"

	"tamavisor/kernel/devices/devicetest"
	"tamavisor/kernel/event"
)

// FuzzLAPIC runs a random sequence of operations on a LAPIC. The input is
// read as records: an opcode byte, then its operands.
//
//	op%8 == 0: Read     offset byte (x16, +1 if op bit 7), size byte
//	op%8 == 1: Write    offset byte (x16, +1 if op bit 7), size byte, 4 value bytes
//	op%8 == 2: Deliver  vector byte (level if op bit 7)
//	op%8 == 3: Pending, then Ack of what it returned
//	op%8 == 4: advance the clock by byte*byte ns and run the queue
//	op%8 == 5: SetBaseMSR of a value built from a byte
//	op%8 == 6: UnmarshalState version byte, length byte, that many bytes
//	op%8 == 7: MarshalState into a fresh LAPIC (must round-trip)
//
// The APIC must never panic, its timer must be armed exactly at its
// deadline, Pending must only offer a vector above PPR, and its own state
// must always restore.
func FuzzLAPIC(f *testing.F) {
	f.Add([]byte{1, 0x0F, 4, 0xFF, 1, 0, 0, 2, 0x41, 3, 1, 0x0B, 4, 0, 0, 0, 0})                         // enable, deliver, take, EOI
	f.Add([]byte{1, 0x0F, 4, 0xFF, 1, 0, 0, 1, 0x32, 4, 0xEC, 0, 2, 0, 1, 0x38, 4, 9, 0, 0, 0, 4, 9, 9}) // periodic timer
	f.Add([]byte{1, 0x38, 4, 0x10, 0, 0, 0, 4, 200, 200, 0, 0x39, 4})                                    // one-shot, current count
	f.Add([]byte{1, 0x30, 4, 0x41, 0, 4, 0, 0x82, 0x20, 5, 0, 5, 8, 7})                                  // self-IPI, disable, enable
	f.Add([]byte{0x81, 0x0F, 4, 1, 2, 3, 4, 0, 0x0F, 1, 6, 1, 0})                                        // unaligned, bad sizes
	st := New(event.NewQueue(func() int64 { return 0 }), 0).MarshalState()
	f.Add(append([]byte{6, 1, byte(len(st))}, st...))

	f.Fuzz(func(t *testing.T, data []byte) {
		c := &clock{}
		q := event.NewQueue(c.read)
		a := New(q, 0)
		a.OnEOI = func(v uint8) { a.Deliver(v, true) }
		next := devicetest.Reader(&data)
		offset := func(op byte) uint64 {
			off := uint64(next()) * regStride
			if op&0x80 != 0 {
				off++
			}
			return off
		}
		for steps := 0; len(data) > 0 && steps < 1000; steps++ {
			op := next()
			switch op % 8 {
			case 0:
				off := offset(op)
				a.Read(off, next()%9)
			case 1:
				off := offset(op)
				size := next() % 9
				v := binary.LittleEndian.Uint32([]byte{next(), next(), next(), next()})
				a.Write(off, size, uint64(v))
			case 2:
				a.Deliver(next(), op&0x80 != 0)
			case 3:
				if v, ok := a.Pending(); ok {
					a.mu.Lock()
					bad := !testBit(&a.r.irr, v) || v>>classShift <= a.ppr()>>classShift || !a.enabled()
					a.mu.Unlock()
					if bad {
						t.Fatalf("Pending offered %#x", v)
					}
					a.Ack(v)
				}
			case 4:
				c.now += int64(next()) * int64(next())
				q.Run()
			case 5:
				b := next()
				v := uint64(DefaultBase) | uint64(b&0x0F)<<8
				if b&0x10 != 0 {
					v ^= 1 << (b >> 5 * 8)
				}
				_ = a.SetBaseMSR(v)
			case 6:
				version := uint16(next() % 3)
				n := min(int(next()), len(data))
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, a, version, st)
			case 7:
				devicetest.CheckRoundTrip(t, a, New(event.NewQueue(c.read), 0), StateVersion)
			}
			a.mu.Lock()
			deadline, initial, icr := a.r.deadline, a.r.initial, a.r.icrLo
			a.mu.Unlock()
			if q.Next() != deadline {
				t.Fatalf("timer armed at %d, deadline %d", q.Next(), deadline)
			}
			if cur := uint32(a.Read(TIMER_CCR, 4)); cur > initial {
				t.Fatalf("current count %d above initial %d", cur, initial)
			}
			if icr&ICR_DS != 0 {
				t.Fatal("ICR delivery status busy")
			}
		}
	})
}
