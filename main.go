//go:build tamago && amd64

// tamavisor is a bare-metal AMD SVM hypervisor. This is its entry point on
// the machine: bring up the board (package boot), enable SVM (package svm),
// load the guest named by QEMU's fw_cfg or the built-in demo, and run it
// (package kernel). See README.md and docs/guest-abi.md.
package main

import (
	_ "embed"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"tamavisor/boot"
	"tamavisor/boot/fwcfg"
	"tamavisor/internal/x86"
	"tamavisor/kernel"
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// Built-in guests, assembled from guests/*.asm by the Makefile.
var (
	//go:embed guests/build/demo.bin
	demoGuest []byte
	//go:embed guests/build/alive.bin
	aliveGuest []byte
)

// fw_cfg files tamavisor reads (docs/guest-abi.md).
const (
	cfgGuest = "opt/tamavisor/guest"
	cfgMode  = "opt/tamavisor/mode"
	cfgGen   = "opt/tamavisor/restore-generation"
	cfgKey   = "opt/tamavisor/snapshot-key"
	// maxImage bounds a guest image file: it is read into the runtime's
	// heap (RuntimeSize) before it is copied to guest RAM.
	maxImage   = 128 << 20
	maxModeLen = 64
	maxKeyLen  = 256
	minKeyLen  = 16 // 128 bits
)

// Indirect branch prediction barrier (AMD CPUID Fn8000_0008 EBX bit 12;
// MSR PRED_CMD bit 0).
const (
	cpuidExtSize = 0x80000008
	cpuidIBPB    = 1 << 12
	msrPredCmd   = 0x49
	predCmdIBPB  = 1
)

// Status when a restore was refused (docs/guest-abi.md, "Exit status").
const statusRestoreRefused = 102

// physMem is host memory: TamaGo identity-maps it, so a physical address is
// a pointer.
type physMem struct{}

func (physMem) Bytes(pa, n uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(pa))), n)
}

func logf(f string, a ...any) { fmt.Printf("tamavisor: "+f+"\n", a...) }

func main() {
	logf("starting on %s, TSC %d MHz", cpuName(), boot.TSCHz/1e6)
	poolStart, poolEnd := poolRange()
	discoverBoard()
	boot.InitHostInterrupts()
	if boot.APICTimerHz == 0 {
		logf("warning: local APIC timer not calibrated: guests that never exit cannot be preempted")
	}
	pool := kernel.NewPhysPool(physMem{}, poolStart, poolEnd)

	reportCPU()
	host, err := svm.Enable(kernel.PoolPages{Pool: pool})
	if err != nil {
		logf("error: %v%s", err, svmHint(err))
		boot.PowerOff(boot.StatusNoSVM)
	}
	logf("SVM enabled: %v", host.Features)
	if host.Features.NRIP() {
		logf("instruction length: from NextRIP (NRIP save)")
	} else {
		logf("instruction length: decoded from guest bytes (no NRIP save)")
	}

	plat := &kernel.Platform{
		Mem:             physMem{},
		Pool:            pool,
		Runner:          host,
		Features:        host.Features,
		ASIDs:           svm.NewASIDs(host.Features.NASID),
		CPUID:           x86.CPUID,
		TSC:             x86.RDTSC,
		TSCHz:           boot.TSCHz,
		ServiceInterval: boot.TSCHz / serviceHz,
		Console:         boot.UARTWriter{U: boot.UART0},
		Input:           boot.ConsoleRead,
		Idle:            func() bool { time.Sleep(time.Millisecond); return true },
		Now:             boot.WallNow,
		Timer:           boot.HostTimer{},
		HostXCR0:        host.XCR0,
		MXCSRMask:       x86.MXCSRMask(),
	}
	if _, b, _, _ := x86.CPUID(cpuidExtSize, 0); b&cpuidIBPB != 0 {
		plat.IBPB = func() { x86.WRMSR(msrPredCmd, predCmdIBPB) }
		logf("IBPB between VMs")
	}
	if host.XCR0 != 0 {
		logf("XSAVE enabled: guests get x87/SSE/AVX state components %#x", host.XCR0)
	}
	if u := boot.ControlPort(); u != nil {
		plat.ControlIn, plat.ControlOut = u.Rx, boot.UARTWriter{U: u.UART}
		logf("control channel on COM2")
	}
	plat.Store = openDisk()

	image, mode := demoGuest, ""
	var restoreGen uint64 // 0: the newest snapshot
	if cfg, err := fwcfg.Open(boot.FWCfgPort{}); err == nil {
		if b, err := cfg.ReadFile(cfgMode, maxModeLen); err == nil {
			mode = strings.TrimSpace(string(b))
		}
		if mode, restoreGen, err = readRestoreGen(cfg, mode); err != nil {
			logf("error: %v", err)
			boot.PowerOff(boot.StatusBadImage)
		}
		if guestBudget, err = readBudget(cfg); err != nil {
			logf("error: %v", err)
			boot.PowerOff(boot.StatusBadImage)
		}
		switch mode {
		case "hostile":
			boot.PowerOff(runHostile(plat, cfg))
		case "fuzz-guests":
			boot.PowerOff(runFuzzGuests(plat, cfg))
		}
		if _, there := cfg.Lookup(cfgKey); there {
			// A key that cannot be used must not leave snapshots
			// unauthenticated without a word: refuse to run.
			b, err := cfg.ReadFile(cfgKey, maxKeyLen)
			if err == nil && len(b) < minKeyLen {
				err = fmt.Errorf("%d bytes, want %d to %d", len(b), minKeyLen, maxKeyLen)
			}
			if err != nil {
				logf("error: snapshot key %s unusable: %v", cfgKey, err)
				boot.PowerOff(boot.StatusBadImage)
			}
			plat.SnapshotKey = b
			logf("snapshots are authenticated (HMAC-SHA256 key from %s)", cfgKey)
		}
		if lc, ok, err := linuxFromFWCfg(cfg); ok && mode == "" {
			if err != nil {
				logf("error: %v", err)
				boot.PowerOff(boot.StatusBadImage)
			}
			boot.PowerOff(runLinux(plat, lc))
		}
		if _, ok := cfg.Lookup(cfgGuest); ok {
			if image, err = cfg.ReadFile(cfgGuest, maxImage); err != nil {
				logf("error: %v", err)
				boot.PowerOff(boot.StatusBadImage)
			}
		} else if mode == "" {
			logf("no %s given: running the built-in demo guest", cfgGuest)
		}
	}

	switch mode {
	case "":
	case "clock":
		clockCheck()
	case "bench":
		os.Exit(bench(plat, host, image))
	case "restore":
		boot.PowerOff(restore(plat, restoreGen))
	case "snapbench":
		os.Exit(snapBench(plat, image))
	default:
		logf("error: unknown mode %q in %s (clock, bench, restore, snapbench, hostile, fuzz-guests)", mode, cfgMode)
		boot.PowerOff(boot.StatusBadImage)
	}
	boot.PowerOff(runGuest(plat, image))
}

// runGuest runs one guest image and returns the power-off status. After a
// VM the hypervisor had to stop, it runs the built-in health-check guest to
// show it is still able to create and run VMs.
func runGuest(plat *kernel.Platform, image []byte) int {
	img, err := kernel.ParseImage(image)
	if err != nil {
		logf("error: %v", err)
		return boot.StatusBadImage
	}
	vm, err := startVM(plat, img)
	if err != nil {
		logf("error: vm %s: %v", img.Name, err)
		return boot.StatusInternal
	}
	if guestBudget > 0 {
		if err := vm.SetBudget(guestBudget, 0); err != nil {
			logf("error: vm %s: %v", vm.Name, err)
			vm.Destroy()
			return boot.StatusBadImage
		}
		logf("vm %s: time budget %v", img.Name, guestBudget)
	}
	return finish(plat, vm)
}

// startVM makes the VM of img.
func startVM(plat *kernel.Platform, img *kernel.Image) (*kernel.VM, error) {
	vm, err := kernel.NewVM(plat, img)
	if err == nil {
		logf("vm %s: starting (%d-bit, %d KiB RAM, entry %#x)", img.Name, img.Mode, img.MemSize>>10, img.Entry)
	}
	return vm, err
}

// runVM runs a VM to its end, reports how it ended and frees it.
func runVM(vm *kernel.VM) *kernel.Stop {
	stop := vm.Run()
	logf("vm %s: %v (%d exits, %d interrupts injected, %d MMIO accesses)", vm.Name, stop, vm.VCPU.Exits, vm.IRQsInjected, vm.MMIOExits)
	var prof []string
	for _, e := range vm.VCPU.ExitProfile() {
		prof = append(prof, fmt.Sprintf("%s %d", e.Reason, e.N))
	}
	logf("vm %s: exits by reason: %s", vm.Name, strings.Join(prof, ", "))
	vm.Destroy()
	return stop
}

// finish runs a VM to its end and returns the power-off status.
func finish(plat *kernel.Platform, vm *kernel.VM) int {
	warnSmallDisk(plat, vm)
	stop := runVM(vm)
	switch stop.Kind {
	case kernel.StopExited:
		return min(stop.Status, boot.StatusGuestMax)
	case kernel.StopQuit, kernel.StopSuspended:
		return 0
	}
	return healthCheck(plat, boot.StatusVMStopped)
}

// healthCheck runs the built-in health-check guest after a failure, to
// show the hypervisor can still create and run VMs, and returns status.
func healthCheck(plat *kernel.Platform, status int) int {
	alive, _ := kernel.ParseImage(aliveGuest)
	logf("hypervisor still running: starting health-check guest")
	vm, err := startVM(plat, alive)
	if err != nil {
		logf("error: health-check guest: %v", err)
		return boot.StatusInternal
	}
	if s := runVM(vm); s.Kind != kernel.StopExited || s.Status != 0 {
		logf("error: health-check guest failed: %v", s)
		return boot.StatusInternal
	}
	return status
}

// serviceHz is how often per second the run loop polls the console and
// the control channel between exits.
const serviceHz = 100

// readRestoreGen reads the generation to restore (fw_cfg cfgGen, decimal),
// 0 when not given. It implies mode restore, and is refused with another
// mode.
func readRestoreGen(cfg *fwcfg.Device, mode string) (string, uint64, error) {
	if _, there := cfg.Lookup(cfgGen); !there {
		return mode, 0, nil
	}
	b, err := cfg.ReadFile(cfgGen, maxModeLen)
	if err != nil {
		return mode, 0, fmt.Errorf("%s: %v", cfgGen, err)
	}
	gen, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || gen == 0 {
		return mode, 0, fmt.Errorf("%s: %q is not a snapshot generation (1, 2, ...)", cfgGen, b)
	}
	if mode != "" && mode != "restore" {
		return mode, 0, fmt.Errorf("%s given with mode %q: it is for mode restore", cfgGen, mode)
	}
	return "restore", gen, nil
}

// restore resumes the VM of snapshot generation gen on the disk, or of the
// newest snapshot when gen is 0.
func restore(plat *kernel.Platform, gen uint64) int {
	if plat.Store == nil {
		logf("restore refused: no snapshot disk")
		return statusRestoreRefused
	}
	store := plat.Store
	if gen != 0 {
		var ok bool
		if store, ok = generationView(plat.Store, gen); !ok {
			return statusRestoreRefused
		}
	}
	t0 := x86.RDTSC()
	// Lazily: the guest runs once everything but its page data is read
	// and checked; RAM arrives as it is touched and in the background
	// (docs/snapshot-format.md, 3.3).
	vm, c, err := kernel.RestoreLazy(plat, store, plat.SnapshotKey)
	if err != nil {
		msg := err.Error() // kernel.RefusedError says "restore refused" itself
		if !strings.HasPrefix(msg, "restore refused") {
			msg = "restore refused: " + msg
		}
		logf("%s", msg)
		return healthCheck(plat, statusRestoreRefused)
	}
	secs := float64(x86.RDTSC()-t0) / float64(boot.TSCHz)
	how := "all RAM read"
	if lz, ok := vm.Lazy(); ok {
		how = fmt.Sprintf("lazily, %d of %d blocks of RAM to fill beside the guest", lz.Remaining, lz.Blocks)
	}
	logf("vm %s: restored from generation %d (slot %d, %s) in %.3f s (%s), resuming: time to the guest's first instruction %.1f ms",
		vm.Name, c.Generation, c.Slot, kernel.FormatSize(uint64(c.Length)), secs, how, secs*1e3)
	return finish(plat, vm)
}

// generationView returns a view of store in which generation gen is the
// only committed snapshot, for kernel.Restore, which resumes the newest one:
// every other commit record reads as blank (never written). gen may be a
// slot's newest snapshot or the one before it in its chain. The view is
// read-only and serves that one restore; saves go to store itself. When
// gen is not on the disk it says what the disk holds and returns false.
func generationView(store *snapshot.Store, gen uint64) (*snapshot.Store, bool) {
	recs, err := store.Records()
	if err != nil {
		logf("restore refused: %v", err)
		return nil, false
	}
	var found *snapshot.Commit
	var holds []string
	for _, r := range recs {
		var gens []string
		for _, c := range []*snapshot.Commit{r.Commit, r.Previous} {
			if c == nil {
				continue
			}
			if c.Generation == gen {
				found = c
			}
			gens = append(gens, fmt.Sprintf("generation %d", c.Generation))
		}
		switch {
		case len(gens) > 0:
			holds = append(holds, fmt.Sprintf("slot %d: %s", r.Slot, strings.Join(gens, ", ")))
		case r.Blank:
			holds = append(holds, fmt.Sprintf("slot %d: empty", r.Slot))
		default:
			holds = append(holds, fmt.Sprintf("slot %d: unreadable (%v)", r.Slot, r.Err))
		}
	}
	if found == nil {
		logf("restore refused: generation %d is not on the snapshot disk, which holds %s", gen, strings.Join(holds, "; "))
		return nil, false
	}
	view, err := store.CommitView(found)
	if err != nil {
		logf("restore refused: generation %d: %v", gen, err)
		return nil, false
	}
	return view, true
}

// cpuName returns the CPU's brand string (CPUID 0x8000_0002-4) with
// anything but printable ASCII replaced, or its vendor when the CPU has
// no brand string (maximum extended leaf below 0x8000_0004).
func cpuName() string {
	if maxExt, _, _, _ := x86.CPUID(0x80000000, 0); maxExt < 0x80000004 || maxExt > 0x8000ffff {
		_, b, c, d := x86.CPUID(0, 0)
		return printable(string(le32(b, d, c))) + " (no brand string)"
	}
	var b []byte
	for leaf := uint32(0x80000002); leaf <= 0x80000004; leaf++ {
		a, bb, c, d := x86.CPUID(leaf, 0)
		b = append(b, le32(a, bb, c, d)...)
	}
	return printable(strings.TrimRight(string(b), "\x00"))
}

// le32 returns the bytes of registers as CPUID strings are stored.
func le32(regs ...uint32) []byte {
	var b []byte
	for _, r := range regs {
		b = append(b, byte(r), byte(r>>8), byte(r>>16), byte(r>>24))
	}
	return b
}

// printable trims s and replaces bytes other than printable ASCII by '?'.
func printable(s string) string {
	b := []byte(strings.TrimSpace(s))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) == 0 {
		return "unnamed CPU"
	}
	return string(b)
}

// snapshotOverhead bounds what a snapshot holds besides guest RAM
// (manifest, vm, vcpu and device chunks, the RAM chunk's page bitmap).
const snapshotOverhead = 1 << 20

// warnSmallDisk says at the start, not at the middle of the first save,
// that a snapshot of this VM may not fit a slot of the snapshot disk
// (a guest whose RAM is mostly zero may still fit: zero pages are left
// out).
func warnSmallDisk(plat *kernel.Platform, vm *kernel.VM) {
	if plat.Store == nil {
		return
	}
	slot := uint64(plat.Store.SlotSize())
	if need := vm.Mem.Size + snapshotOverhead; need > slot {
		logf("warning: the snapshot disk's slots hold %d MiB; a snapshot of vm %s (%d MiB of RAM) can need %d MiB: saves fail unless most of its RAM is zero (use a disk of at least %d MiB)",
			slot>>20, vm.Name, vm.Mem.Size>>20, need>>20, 2*(need>>20)+1)
	}
}
