package devices

import (
	"bytes"
	"testing"

	"tamavisor/kernel/devices/devicetest"
)

// FuzzUART16550 runs a random sequence of operations on a UART. The input
// is read as records: an opcode byte, then its operands.
//
//	op%6 == 0: In     port offset byte, size byte
//	op%6 == 1: Out    port offset byte, size byte, value byte
//	op%6 == 2: Receive value byte
//	op%6 == 3: UnmarshalState version byte, length byte, that many bytes
//	op%6 == 4: MarshalState into a fresh UART (must round-trip)
//	op%6 == 5: IRQ
//
// Port offsets are taken relative to base-2 so accesses below, inside and
// above the UART all occur. The UART must never panic, THR must always
// read empty, and its own state must always restore.
func FuzzUART16550(f *testing.F) {
	f.Add([]byte{1, 9, 1, 0x5A, 0, 9, 1})                    // SCR write, read
	f.Add([]byte{1, 4, 1, 0x80, 1, 2, 1, 0x0C, 0, 2, 1})     // DLAB, DLL
	f.Add([]byte{1, 4, 1, 0x01, 2, 'a', 2, 'b', 0, 2, 1, 4}) // FIFO on, receive, read
	f.Add([]byte{1, 3, 1, 0x0F, 0, 4, 1, 5})                 // IER all, IIR, IRQ
	f.Add([]byte{1, 6, 1, 0x10, 1, 2, 2, 0x41, 0, 2, 4})     // loopback, wide access
	f.Add([]byte{3, 1, 27, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 'x'})
	f.Add([]byte{3, 7, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		u := NewUART16550(com1, &out)
		next := devicetest.Reader(&data)
		for steps := 0; len(data) > 0 && steps < 1000; steps++ {
			switch next() % 6 {
			case 0:
				port := com1 - 2 + uint16(next()%12)
				u.In(port, next()%6)
			case 1:
				port := com1 - 2 + uint16(next()%12)
				size := next() % 6
				u.Out(port, size, uint32(next())*0x01010101)
			case 2:
				u.Receive(next())
			case 3:
				version := uint16(next() % 3)
				n := int(next())
				if n > len(data) {
					n = len(data)
				}
				st := append([]byte(nil), data[:n]...)
				data = data[n:]
				devicetest.CheckUnmarshal(t, u, version, st)
			case 4:
				devicetest.CheckRoundTrip(t, u, NewUART16550(com1, nil), UART16550StateVersion)
			case 5:
				u.IRQ()
			}
			// Peek LSR without side effects on the sticky bits.
			u.mu.Lock()
			lsr := u.lsr()
			u.mu.Unlock()
			if lsr&(LSR_THRE|LSR_TEMT) != LSR_THRE|LSR_TEMT {
				t.Fatalf("LSR %#x: transmitter not empty", lsr)
			}
		}
	})
}
