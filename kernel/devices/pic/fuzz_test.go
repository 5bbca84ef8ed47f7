package pic

import (
	"bytes"
	"testing"

	"tamavisor/kernel/devices/devicetest"
)

var fuzzPorts = [...]uint16{0x1F, MASTER_CMD, MASTER_DATA, 0x22, 0x9F, SLAVE_CMD, SLAVE_DATA, 0xA2, 0x4CF, ELCR1, ELCR2, 0x4D2}

// probe reads every register through the ports, the same way each time,
// and ends with Pending.
func probe(p *PIC) []byte {
	var out []byte
	for _, cmd := range []uint16{MASTER_CMD, SLAVE_CMD} {
		out = append(out, in(p, cmd)) // IRR, ISR, or a poll
		out = append(out, in(p, cmd+1))
		p.Out(cmd, 1, OCW3_SEL|OCW3_RR)
		out = append(out, in(p, cmd))
		p.Out(cmd, 1, OCW3_SEL|OCW3_RR|OCW3_RIS)
		out = append(out, in(p, cmd))
	}
	out = append(out, in(p, ELCR1), in(p, ELCR2))
	v, ok := p.Pending()
	if ok {
		out = append(out, v)
	}
	return out
}

// FuzzPIC runs a random sequence of operations on a PIC pair. The input
// is read as records: an opcode byte, then its operands.
//
//	op%7 == 0: In     port index, size
//	op%7 == 1: Out    port index, size, value
//	op%7 == 2: SetIRQ irq byte (-1..16), level byte
//	op%7 == 3: Pending, then Ack: they must agree
//	op%7 == 4: UnmarshalState version, length, that many bytes
//	op%7 == 5: restore MarshalState into a fresh PIC: both must read the same
//	op%7 == 6: the Linux initialization sequence
//
// The PIC must never panic, a delivered vector must be what Pending said,
// and its own state must always restore.
func FuzzPIC(f *testing.F) {
	f.Add([]byte{6, 2, 0, 1, 3, 2, 0, 0, 3})
	f.Add([]byte{6, 2, 11, 1, 2, 10, 1, 3, 3, 1, 5, 1, 0x20, 3, 5})
	f.Add([]byte{1, 1, 1, 0x13, 1, 2, 1, 0x20, 1, 2, 1, 0x03, 2, 5, 1, 3, 1, 1, 1, 0x0C, 0, 1, 1, 5})
	f.Add([]byte{6, 1, 9, 1, 0xFF, 2, 9, 1, 3, 1, 1, 1, 0x6B, 1, 1, 1, 0xC0, 5})
	f.Add([]byte{4, 1, 24, 0, 0, 0xFF, 0, 0, 0x11, 0x08, 4, 1, 0, 0, 7})

	f.Fuzz(func(t *testing.T, data []byte) {
		p := New()
		next := devicetest.Reader(&data)
		for steps := 0; len(data) > 0 && steps < 500; steps++ {
			switch next() % 7 {
			case 0:
				p.In(fuzzPorts[int(next())%len(fuzzPorts)], next()%6)
			case 1:
				port := fuzzPorts[int(next())%len(fuzzPorts)]
				size := next() % 6
				p.Out(port, size, uint32(next())*0x01010101)
			case 2:
				p.SetIRQ(int(next()%18)-1, next()&1 != 0)
			case 3:
				v0, ok0 := p.Pending()
				v1, ok1 := p.Ack()
				if v0 != v1 || ok0 != ok1 {
					t.Fatalf("Pending %#x %v, Ack %#x %v", v0, ok0, v1, ok1)
				}
			case 4:
				version := uint16(next() % 3)
				n := min(int(next()), len(data))
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, p, version, st)
			case 5:
				c := New()
				devicetest.CheckRoundTrip(t, p, c, StateVersion)
				if a, b := probe(p), probe(c); !bytes.Equal(a, b) {
					t.Fatalf("restored PIC reads %x, original %x", b, a)
				}
			case 6:
				linuxInit(p)
			}
		}
	})
}
