package qemu

import (
	"slices"
	"strings"
	"testing"
)

func TestStatus(t *testing.T) {
	for code, want := range map[int]int{1: 0, 3: 1, 201: 100, 221: 110} {
		r := &Result{ExitCode: code}
		if s, ok := r.Status(); !ok || s != want {
			t.Errorf("exit %d: status %d %v, want %d", code, s, ok, want)
		}
	}
	for _, r := range []*Result{{ExitCode: 0}, {ExitCode: 1, TimedOut: true}} {
		if _, ok := r.Status(); ok {
			t.Errorf("%+v has no tamavisor status", r)
		}
	}
}

func TestArgs(t *testing.T) {
	a := Args(Config{ELF: "k.elf", CPU: "max", Guest: "g.bin", Mode: "bench"})
	j := strings.Join(a, " ")
	for _, want := range []string{"-cpu max", "-kernel k.elf", "name=opt/tamavisor/guest,file=g.bin",
		"name=opt/tamavisor/mode,string=bench", "isa-debug-exit,iobase=0xf4", "pit=on"} {
		if !strings.Contains(j, want) {
			t.Errorf("args lack %q: %s", want, j)
		}
	}
	if slices.Contains(Args(Config{ELF: "k", CPU: "max"}), "-fw_cfg") {
		t.Error("fw_cfg given without a guest or mode")
	}
}
