package main

import (
	"slices"
	"testing"
	"time"

	"tamavisor/qemu"
)

// TestMeasure: the init marker after SeaBIOS's terminal controls, the
// kernel's first line and its messages without timestamps, the uptime.
func TestMeasure(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	lines := []qemu.Line{
		{Text: "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)", At: at(0.1)},
		{Text: "[    0.000000] Linux version 6.1.0", At: at(0.8)},
		{Text: "[    1.5] x86/cpu: SRSO: microcode missing", At: at(1.2)},
		{Text: "Booting from ROM..\x1bc\x1b[?7l\x1b[2Jtamavisor-linux: init (1.63 s since boot, 6.1.0)", At: at(2.5)},
		{Text: "[    9.000000] after", At: at(3)},
	}
	b := measure(lines, t0)
	if !b.ok || b.first != 800*time.Millisecond || b.shell != 2500*time.Millisecond || b.uptime != 1.63 {
		t.Errorf("measure = %+v", b)
	}
	if want := []string{"Linux version 6.1.0", "x86/cpu: SRSO: microcode missing"}; !slices.Equal(b.kmsgs, want) {
		t.Errorf("kernel messages %q, want %q", b.kmsgs, want)
	}
	if b := measure(lines[:3], t0); b.ok || len(b.lastLines) != 3 {
		t.Errorf("without the marker: %+v", b)
	}
}

func TestProfileLines(t *testing.T) {
	m := stopLine.FindStringSubmatch("tamavisor: vm linux: the guest powered off by ACPI S5 (exit status 0) (39955 exits, 859 interrupts injected, 2186 MMIO accesses)")
	if m == nil || m[1] != "the guest powered off by ACPI S5 (exit status 0)" || m[2] != "39955" || m[3] != "859" || m[4] != "2186" {
		t.Errorf("stop line: %q", m)
	}
	got := parseReasons("IOIO 35303, NPF 2186, VINTR 375")
	want := []reasonCount{{"IOIO", 35303}, {"NPF", 2186}, {"VINTR", 375}}
	if !slices.Equal(got, want) {
		t.Errorf("reasons %v, want %v", got, want)
	}
}

func TestStats(t *testing.T) {
	bs := []bootTimes{{ok: true, shell: 3 * time.Second}, {ok: true, shell: time.Second}, {}, {ok: true, shell: 2 * time.Second}}
	s, ok := stats(bs, func(b bootTimes) (float64, bool) { return b.shell.Seconds(), b.ok })
	if !ok || s != (span{2, 1, 3}) {
		t.Errorf("stats = %+v %v", s, ok)
	}
}
