//go:build tamago && amd64

package main

import (
	"fmt"
	"time"

	"tamavisor/boot"
	"tamavisor/internal/x86"
	"tamavisor/kernel"
	"tamavisor/svm"
)

// clockCheck prints two markers 2 s apart by time.Sleep, each with the
// hypervisor's monotonic time; the host test compares the gap with its
// own clock (qemu/clock_test.go).
func clockCheck() {
	t0 := time.Now()
	logf("clock: mark 0 at %d ns", t0.UnixNano())
	time.Sleep(2 * time.Second)
	logf("clock: mark 1 after %d ns", time.Since(t0).Nanoseconds())
}

// floorGuest is a 64 KiB real-mode guest parked on a CPUID instruction, the
// subject of the bare VMRUN/#VMEXIT loop.
func floorGuest() *kernel.Image {
	return &kernel.Image{Mode: kernel.Mode16, LoadGPA: 0x1000, Entry: 0x1000,
		MemSize: 0x10000, Name: "floor", Payload: []byte{0x0f, 0xa2}}
}

// Bench report ids (guests/bench.asm).
const (
	benchN       = 0
	benchCPUID   = 1
	benchPortIO  = 2
	benchVMMCALL = 3
	benchEntry   = 4
)

// bench measures the bare world-switch floor, then runs the bench guest and
// prints the table of `make bench`. All numbers come from this one boot.
func bench(plat *kernel.Platform, host *svm.Host, image []byte) int {
	const floorN = 2000
	fvm, err := kernel.NewVM(plat, floorGuest())
	if err != nil {
		logf("error: floor VM: %v", err)
		return boot.StatusInternal
	}
	host.BareLoop(fvm.VCPU.VMCBPA(), 10) // warm up
	t0 := x86.RDTSC()
	host.BareLoop(fvm.VCPU.VMCBPA(), floorN)
	floor := float64(x86.RDTSC()-t0) / floorN
	if code := svm.ExitCode(fvm.VCPU.VMCB().Control.ExitCode); code != svm.ExitCPUID {
		logf("error: floor loop exited with %v, not CPUID", code)
		return boot.StatusInternal
	}
	fvm.Destroy()

	img, err := kernel.ParseImage(image)
	if err != nil {
		logf("error: %v", err)
		return boot.StatusBadImage
	}
	start := x86.RDTSC()
	vm, err := kernel.NewVM(plat, img)
	if err != nil {
		logf("error: %v", err)
		return boot.StatusInternal
	}
	stop := vm.Run()
	r := vm.BenchReports
	if stop.Kind != kernel.StopExited || stop.Status != 0 || r[benchN] == 0 {
		logf("error: bench guest: %v, reports %v", stop, r)
		return boot.StatusInternal
	}
	n := float64(r[benchN])
	us := func(cycles float64) float64 { return cycles * 1e6 / float64(boot.TSCHz) }
	row := func(name string, cycles float64) {
		fmt.Printf("  %-40s %9.2f us  %6.2fx\n", name, us(cycles), cycles/floor)
	}
	fmt.Printf("tamavisor bench: %d iterations each, TSC %d MHz, NRIP %v\n", r[benchN], boot.TSCHz/1e6, plat.Features.NRIP())
	fmt.Printf("  %-40s %12s  %7s\n", "measure", "time", "/floor")
	row("bare VMRUN/#VMEXIT floor (asm loop)", floor)
	row("CPUID exit, full Go exit path", float64(r[benchCPUID])/n)
	row("port I/O exit to UART model (IN 0x3ff)", float64(r[benchPortIO])/n)
	row("VMMCALL hypercall (VERSION)", float64(r[benchVMMCALL])/n)
	fmt.Printf("  %-40s %9.2f us\n", "VM creation to guest first instruction", us(float64(r[benchEntry]-start)))
	vm.Destroy()
	return 0
}
