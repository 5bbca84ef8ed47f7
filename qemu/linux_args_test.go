package qemu

import (
	"slices"
	"strings"
	"testing"
)

// A Linux guest goes in as fw_cfg files (kernel, initrd) and strings
// (cmdline, mem), with the commas of values doubled for QEMU's option
// parser.
func TestArgsLinux(t *testing.T) {
	a := Args(Config{ELF: "k.elf", CPU: "max", Kernel: "/c/bz,Image", Initrd: "/c/init.cpio.gz",
		Cmdline: "console=ttyS0 earlyprintk=serial,ttyS0", Mem: "256M"})
	var fw []string
	for i, s := range a {
		if s == "-fw_cfg" && i+1 < len(a) {
			fw = append(fw, a[i+1])
		}
	}
	want := []string{
		"name=opt/tamavisor/kernel,file=/c/bz,,Image",
		"name=opt/tamavisor/initrd,file=/c/init.cpio.gz",
		"name=opt/tamavisor/cmdline,string=console=ttyS0 earlyprintk=serial,,ttyS0",
		"name=opt/tamavisor/mem,string=256M",
	}
	if !slices.Equal(fw, want) {
		t.Errorf("fw_cfg arguments\n%s\nwant\n%s", strings.Join(fw, "\n"), strings.Join(want, "\n"))
	}
	// Only what is given is passed.
	a = Args(Config{ELF: "k.elf", CPU: "max", Kernel: "bz"})
	if j := strings.Join(a, " "); !strings.Contains(j, "-fw_cfg name=opt/tamavisor/kernel,file=bz") ||
		strings.Contains(j, "initrd") || strings.Contains(j, "cmdline") || strings.Contains(j, "tamavisor/mem") {
		t.Errorf("kernel only: %s", j)
	}
}
