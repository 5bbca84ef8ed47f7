package pic

import (
	"testing"

	"tamavisor/kernel/devices/pit"
	"tamavisor/kernel/devices/rtc"
	"tamavisor/kernel/event"
)

// TestWiring connects the PIT's counter 0 to IRQ 0 and the RTC to IRQ 8
// as a VM does, and takes their interrupts through Pending and Ack.
func TestWiring(t *testing.T) {
	now := int64(0)
	q := event.NewQueue(func() int64 { return now })
	p := New()
	linuxInit(p)
	timer := pit.New(q, p.Line(0))
	clock := rtc.New(q, func() int64 { return 1_800_000_000_000_000_000 + now }, p.Line(8), 1<<30, 0)

	timer.Out(pit.CONTROL_WORD, 1, 0x34) // counter 0, mode 2, 1 kHz
	timer.Out(pit.COUNTER0, 1, 1193&0xFF)
	timer.Out(pit.COUNTER0, 1, 1193>>8)
	clock.Out(rtc.ADDRESS_PORT, 1, rtc.REG_B)
	clock.Out(rtc.DATA_PORT, 1, rtc.B_PIE|rtc.B_24_12) // 1024 Hz

	ticks, rtcs := 0, 0
	for now < 100_000_000 {
		now = q.Next()
		q.Run()
		for {
			v, ok := p.Ack()
			if !ok {
				break
			}
			switch v {
			case 0x30:
				ticks++
				out(p, MASTER_CMD, OCW2_EOI)
			case 0x38:
				rtcs++
				clock.Out(rtc.ADDRESS_PORT, 1, rtc.REG_C)
				clock.In(rtc.DATA_PORT, 1) // lowers IRQ 8
				out(p, SLAVE_CMD, OCW2_EOI)
				out(p, MASTER_CMD, OCW2_EOI)
			default:
				t.Fatalf("vector %#x", v)
			}
		}
	}
	// 100 ms: 100 PIT periods of 1193 ticks, 102 or 103 RTC periods.
	if ticks != 100 || rtcs < 102 || rtcs > 103 {
		t.Fatalf("%d PIT and %d RTC interrupts in 100 ms", ticks, rtcs)
	}
}
