package rtc

import (
	"bytes"
	"testing"

	"tamavisor/kernel/devices/devicetest"
	"tamavisor/kernel/event"
)

var fuzzPorts = [...]uint16{0x6F, ADDRESS_PORT, DATA_PORT, 0x72}

// probe reads all 128 registers through the ports, the same way each time.
func probe(r *RTC) []byte {
	out := make([]byte, 0, Size)
	for reg := range Size {
		r.Out(ADDRESS_PORT, 1, uint32(reg))
		out = append(out, uint8(r.In(DATA_PORT, 1)))
	}
	return out
}

// FuzzRTC runs a random sequence of operations on an RTC. The input is
// read as records: an opcode byte, then its operands.
//
//	op%7 == 0: In     port index, size
//	op%7 == 1: Out    port index, size, value
//	op%7 == 2: advance VM time and the wall clock by value << (shift % 40) ns
//	op%7 == 3: move the wall clock alone by a signed value << (shift % 48) ns
//	op%7 == 4: run the event queue
//	op%7 == 5: UnmarshalState version, length, that many bytes
//	op%7 == 6: restore MarshalState into a fresh RTC: both must read the same
//
// The RTC must never panic, its timer must never be due after the queue
// ran, and its own state must always restore, re-arming the same timer.
func FuzzRTC(f *testing.F) {
	f.Add([]byte{1, 1, 1, REG_B, 1, 2, 1, B_SET | B_24_12, 1, 1, 1, SECONDS, 1, 2, 1, 0x59, 6})
	f.Add([]byte{1, 1, 1, REG_B, 1, 2, 1, B_PIE | B_AIE | B_UIE, 2, 0xFF, 24, 4, 2, 0xFF, 26, 4, 6})
	f.Add([]byte{1, 1, 1, REG_A, 1, 2, 1, 0x73, 3, 0x80, 40, 1, 2, 1, 0x23, 0, 2, 1, 6})
	f.Add([]byte{1, 1, 2, 0x04, 1, 1, 1, REG_B, 1, 2, 1, B_DM, 0, 2, 1, 6})
	f.Add([]byte{5, 1, 158, 0x0C})

	f.Fuzz(func(t *testing.T, data []byte) {
		vm, wall := int64(1_000), int64(1_780_000_000_000_000_000)
		q := event.NewQueue(func() int64 { return vm })
		clock := func() int64 { return wall }
		r := New(q, clock, nil, 1<<30, 0)
		next := devicetest.Reader(&data)
		// wallMoved: the wall clock moved alone since r last armed its
		// timer, so its deadline (wall second boundaries mapped onto VM
		// time) may be stale until the next access or firing.
		wallMoved := false
		for steps := 0; len(data) > 0 && steps < 300; steps++ {
			op := next() % 7
			if op <= 1 { // In and Out re-arm the timer
				wallMoved = false
			}
			switch op {
			case 0:
				r.In(fuzzPorts[int(next())%len(fuzzPorts)], next()%6)
			case 1:
				port := fuzzPorts[int(next())%len(fuzzPorts)]
				size := next() % 6
				r.Out(port, size, uint32(next())*0x01010101)
			case 2:
				d := int64(next()) << (next() % 40)
				if vm < 1<<50 {
					vm += d
					wall += d
				}
			case 3:
				d := int64(int8(next())) << (next() % 48)
				if wall > -1<<61 && wall < 1<<61 {
					wall += d
					wallMoved = true
				}
			case 4:
				q.Run()
				if q.Next() <= vm {
					t.Fatalf("timer due at %d after running at %d", q.Next(), vm)
				}
			case 5:
				version := uint16(next() % 3)
				n := min(int(next()), len(data))
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, r, version, st)
			case 6:
				c := New(q, clock, nil, 0, 0)
				devicetest.CheckRoundTrip(t, r, c, StateVersion)
				d0, ok0 := r.timer.Armed()
				d1, ok1 := c.timer.Armed()
				// A deadline already passed fires at the next run,
				// whatever it is.
				d0, d1 = max(d0, vm), max(d1, vm)
				if !wallMoved && (d0 != d1 || ok0 != ok1) {
					t.Fatalf("restored timer %d %v, original %d %v", d1, ok1, d0, ok0)
				}
				c.timer.Stop()
				if a, b := probe(r), probe(c); !bytes.Equal(a, b) {
					t.Fatalf("restored RTC reads %x, original %x", b, a)
				}
			}
		}
	})
}
