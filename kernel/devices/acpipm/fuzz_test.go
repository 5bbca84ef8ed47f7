package acpipm

import (
	"bytes"
	"testing"

	"tamavisor/kernel/devices/devicetest"
)

// fuzzPorts are the blocks' ports and their neighbours.
var fuzzPorts = [...]uint16{evt - 1, evt, evt + 1, evt + 2, evt + 3, cnt, cnt + 1, cnt + 2, tmr, tmr + 1, tmr + 3, tmr + 4}

// probe reads every register the same way each time.
func probe(p *PM) []byte {
	var out []byte
	for _, r := range []struct {
		port uint16
		size uint8
	}{{evt, 2}, {evt + 2, 2}, {evt, 4}, {cnt, 2}} {
		v := p.In(r.port, r.size)
		out = append(out, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	return out
}

// FuzzACPIPM runs a random sequence of operations on the PM blocks, with
// VM time moving forward. The input is read as records: an opcode byte,
// then its operands.
//
//	op%5 == 0: In     port index, size; the timer must not run backwards
//	op%5 == 1: Out    port index, size, value (4 bytes); power-off only
//	                  from a word write of SLP_EN with the S5 type to PM1_CNT
//	op%5 == 2: time moves on by a byte's worth of microseconds
//	op%5 == 3: UnmarshalState version, length, that many bytes
//	op%5 == 4: restore MarshalState into fresh blocks: both must read the same
func FuzzACPIPM(f *testing.F) {
	f.Add([]byte{0x01, 5, 2, 0x00, 0x34, 0, 0, 0x00, 8, 4, 0x02, 0xff, 0x00, 8, 4})
	f.Add([]byte{0x01, 1, 2, 0xff, 0xff, 0, 0, 0x04, 0x03, 1, 6, 1, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		now := int64(0)
		p, _ := newPM(&now)
		offs := 0
		p.PowerOff = func() { offs++ }
		next := devicetest.Reader(&data)
		lastTimer := uint32(0)
		for steps := 0; len(data) > 0 && steps < 500; steps++ {
			switch next() % 5 {
			case 0:
				port, size := fuzzPorts[int(next())%len(fuzzPorts)], next()%6
				v := p.In(port, size)
				if port == tmr && size == 4 {
					// 24-bit counter: backwards only by wrapping.
					if v < lastTimer && lastTimer-v < 1<<23 {
						t.Fatalf("PM timer went back from %#x to %#x", lastTimer, v)
					}
					lastTimer = v
				}
			case 1:
				port, size := fuzzPorts[int(next())%len(fuzzPorts)], next()%6
				v := uint32(next()) | uint32(next())<<8 | uint32(next())<<16 | uint32(next())<<24
				before := offs
				p.Out(port, size, v)
				typ := uint8((v & SLP_TYP_MASK) >> SLP_TYP_SHIFT)
				if offs != before && (port != cnt || size != 2 || v&SLP_EN == 0 || typ != 5) {
					t.Fatalf("power-off from a %d-byte write of %#x to %#x", size, v, port)
				}
			case 2:
				now += int64(next()) * 1000
			case 3:
				version := uint16(next() % 3)
				n := min(int(next()), len(data))
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, p, version, st)
			case 4:
				c, _ := newPM(&now)
				if err := c.UnmarshalState(StateVersion, p.MarshalState()); err != nil {
					t.Fatalf("own state rejected: %v", err)
				}
				if a, b := probe(p), probe(c); !bytes.Equal(a, b) {
					t.Fatalf("restored blocks read %x, original %x", b, a)
				}
			}
		}
	})
}
