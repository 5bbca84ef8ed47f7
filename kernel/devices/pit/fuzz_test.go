package pit

import (
	"bytes"
	"testing"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/devices/devicetest"
	"tamavisor/kernel/event"
)

var fuzzPorts = [...]uint16{0x3F, COUNTER0, COUNTER1, COUNTER2, CONTROL_WORD, 0x44, 0x60, NMI_SC, 0x62}

// probe reads every register of p through the ports, the same way each
// time: two bytes of each counter, a read-back of status and count of
// all three, and NMI_SC.
func probe(p *PIT) []byte {
	var out []byte
	for _, port := range []uint16{COUNTER0, COUNTER0, COUNTER1, COUNTER1, COUNTER2, COUNTER2} {
		out = append(out, uint8(p.In(port, 1)))
	}
	p.Out(CONTROL_WORD, 1, 0xC0|RB_CNT0|RB_CNT1|RB_CNT2)
	for _, port := range []uint16{COUNTER0, COUNTER0, COUNTER0, COUNTER1, COUNTER1, COUNTER1, COUNTER2, COUNTER2, COUNTER2} {
		out = append(out, uint8(p.In(port, 1)))
	}
	return append(out, uint8(p.In(NMI_SC, 1)))
}

// FuzzPIT runs a random sequence of operations on a PIT. The input is
// read as records: an opcode byte, then its operands.
//
//	op%6 == 0: In     port index, size
//	op%6 == 1: Out    port index, size, value
//	op%6 == 2: advance VM time by value << (shift % 40) ns
//	op%6 == 3: run the event queue
//	op%6 == 4: UnmarshalState version, length, that many bytes
//	op%6 == 5: restore MarshalState into a fresh PIT: both must read the same
//
// The PIT must never panic, its timer must never be due after the queue
// ran, and its own state must always restore.
func FuzzPIT(f *testing.F) {
	f.Add([]byte{1, 7, 1, 1, 1, 4, 1, 0xB0, 1, 3, 1, 0xFF, 1, 3, 1, 0xFF, 2, 0x80, 10, 0, 3, 1, 0, 3, 1, 5})
	f.Add([]byte{1, 4, 1, 0x34, 1, 1, 1, 0x02, 1, 1, 1, 0, 2, 1, 20, 3, 5, 2, 7, 18, 3, 0, 1, 1})
	f.Add([]byte{1, 4, 1, 0x36, 1, 1, 2, 0x05, 2, 0xFF, 30, 3, 1, 4, 1, 0xC2, 0, 1, 4, 5})
	f.Add([]byte{1, 4, 1, 0xB2, 1, 3, 1, 9, 1, 3, 1, 0, 1, 7, 1, 1, 2, 9, 9, 1, 7, 1, 0, 5})
	f.Add([]byte{4, 1, 117, 0, 0x30, 0x50})

	f.Fuzz(func(t *testing.T, data []byte) {
		now := int64(1_000)
		q := event.NewQueue(func() int64 { return now })
		edges := 0
		p := New(q, devices.IRQFunc(func(l bool) {
			if l {
				edges++
			}
		}))
		next := devicetest.Reader(&data)
		for steps := 0; len(data) > 0 && steps < 500; steps++ {
			switch next() % 6 {
			case 0:
				p.In(fuzzPorts[int(next())%len(fuzzPorts)], next()%6)
			case 1:
				port := fuzzPorts[int(next())%len(fuzzPorts)]
				size := next() % 6
				p.Out(port, size, uint32(next())*0x01010101)
			case 2:
				v := int64(next())
				if d := v << (next() % 40); now < 1<<50 {
					now += d
				}
			case 3:
				q.Run()
				if q.Next() <= now {
					t.Fatalf("timer due at %d after running at %d", q.Next(), now)
				}
			case 4:
				version := uint16(next() % 3)
				n := min(int(next()), len(data))
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, p, version, st)
			case 5:
				c := New(q, nil)
				devicetest.CheckRoundTrip(t, p, c, StateVersion)
				d0, ok0 := p.timer.Armed()
				d1, ok1 := c.timer.Armed()
				if d0 != d1 || ok0 != ok1 {
					t.Fatalf("restored timer %d %v, original %d %v", d1, ok1, d0, ok0)
				}
				c.timer.Stop()
				if a, b := probe(p), probe(c); !bytes.Equal(a, b) {
					t.Fatalf("restored PIT reads %x, original %x", b, a)
				}
			}
		}
	})
}
