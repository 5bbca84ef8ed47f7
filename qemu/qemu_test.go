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

func TestArgsUEFI(t *testing.T) {
	a := Args(Config{ELF: "k.elf", CPU: "EPYC,+svm", Guest: "g.bin",
		UEFI: &UEFI{Image: "usb,1.img", Code: "code.fd", Vars: "vars.fd"}})
	j := strings.Join(a, " ")
	for _, want := range []string{"-machine q35", "-cpu EPYC,+svm", "name=opt/tamavisor/guest,file=g.bin",
		"isa-debug-exit,iobase=0xf4", "if=pflash,format=raw,unit=0,readonly=on,file=code.fd",
		"if=pflash,format=raw,unit=1,file=vars.fd", "readonly=on,file=usb,,1.img", "usb-storage,bus=xhci.0,drive=stick"} {
		if !strings.Contains(j, want) {
			t.Errorf("args lack %q: %s", want, j)
		}
	}
	for _, bad := range []string{"-kernel", "microvm"} {
		if strings.Contains(j, bad) {
			t.Errorf("UEFI args have %q: %s", bad, j)
		}
	}
}
