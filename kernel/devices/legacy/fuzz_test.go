package legacy

import (
	"bytes"
	"testing"

	"tamavisor/kernel/devices/devicetest"
)

var fuzzPorts = [...]uint16{0x5F, I8042_DATA, 0x61, 0x63, I8042_STATUS, 0x65, 0x7F, POST_PORT, 0x81,
	0xCF7, CONFIG_ADDRESS, RST_CNT, 0xCFA, 0xCFB, CONFIG_DATA, 0xCFD, 0xCFE, 0xCFF, 0xD00}

type stub interface {
	In(port uint16, size uint8) uint32
	Out(port uint16, size uint8, v uint32)
	MarshalState() []byte
	UnmarshalState(version uint16, b []byte) error
}

// probe reads every port of fuzzPorts at every size.
func probe(d stub) []byte {
	var out []byte
	for _, port := range fuzzPorts {
		for _, size := range []uint8{1, 2, 4} {
			v := d.In(port, size)
			out = append(out, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
		}
	}
	return out
}

// FuzzLegacy runs a random sequence of operations on the three stubs. The
// input is read as records: an opcode byte, then its operands; the
// opcode's bits 7:6 pick the stub (POST, PCIHost, I8042).
//
//	op%4 == 0: In     port index, size
//	op%4 == 1: Out    port index, size, value (4 bytes)
//	op%4 == 2: UnmarshalState version, length, that many bytes
//	op%4 == 3: restore MarshalState into a fresh stub: both must read the same
//
// A reset may only come from a write to 0xCF9 or 0x64.
func FuzzLegacy(f *testing.F) {
	f.Add([]byte{0x41, 10, 4, 0, 0, 0, 0x80, 0x40, 10, 4, 0x43})
	f.Add([]byte{0x41, 11, 1, 6, 0, 0, 0, 0x43, 0x81, 4, 1, 0xFE, 0, 0, 0})
	f.Add([]byte{0x01, 7, 1, 0x55, 0, 0, 0, 0x03, 0x02, 1, 1, 0x77})
	f.Add([]byte{0x42, 1, 5, 0, 0, 0, 0x80, 0x08, 0x43})

	f.Fuzz(func(t *testing.T, data []byte) {
		resets := 0
		reset := func() { resets++ }
		post, host, kbd := NewPOST(), NewPCIHost(reset), NewI8042(reset)
		pick := func(op byte) stub {
			switch op >> 6 {
			case 0:
				return post
			case 1:
				return host
			default:
				return kbd
			}
		}
		next := devicetest.Reader(&data)
		for steps := 0; len(data) > 0 && steps < 500; steps++ {
			op := next()
			d := pick(op)
			switch op % 4 {
			case 0:
				d.In(fuzzPorts[int(next())%len(fuzzPorts)], next()%6)
			case 1:
				port := fuzzPorts[int(next())%len(fuzzPorts)]
				size := next() % 6
				v := uint32(next()) | uint32(next())<<8 | uint32(next())<<16 | uint32(next())<<24
				before := resets
				d.Out(port, size, v)
				// A multi-byte write reaches the ports after its first
				// (the ISA bus splits it): it may reset when it covers
				// the reset control register or the i8042 command port.
				covers := func(p uint16) bool {
					return validSize(size) && port <= p && uint32(p) < uint32(port)+uint32(size)
				}
				if resets != before && !covers(RST_CNT) && !covers(I8042_COMMAND) {
					t.Fatalf("reset from a %d-byte write of %#x to %#x", size, v, port)
				}
			case 2:
				version := uint16(next() % 3)
				n := min(int(next()), len(data))
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, d, version, st)
			case 3:
				st := d.MarshalState()
				var c stub
				switch d.(type) {
				case *POST:
					c = NewPOST()
				case *PCIHost:
					c = NewPCIHost(nil)
				default:
					c = NewI8042(nil)
				}
				if err := c.UnmarshalState(StateVersion, st); err != nil {
					t.Fatalf("own state %x rejected: %v", st, err)
				}
				if a, b := probe(d), probe(c); !bytes.Equal(a, b) {
					t.Fatalf("restored stub reads %x, original %x", b, a)
				}
			}
		}
	})
}
