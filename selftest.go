//go:build tamago && amd64

package main

import (
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/crypto/poly1305"

	"tamavisor/boot"
	"tamavisor/internal/x86"
	"tamavisor/kernel"
	"tamavisor/snapshot"
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
	benchIRQOn   = 5 // cycles of the loop with timer interrupts
	benchIRQOff  = 6 // cycles of the same loop without
	benchIRQs    = 7 // interrupts taken
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
	if k := r[benchIRQs]; k > 0 && r[benchIRQOn] > r[benchIRQOff] {
		row(fmt.Sprintf("timer interrupt to the guest (%d taken)", k), float64(r[benchIRQOn]-r[benchIRQOff])/float64(k))
	} else {
		fmt.Printf("  %-40s %12s\n", "timer interrupt to the guest", "not measured")
	}
	fmt.Printf("  %-40s %9.2f us\n", "VM creation to guest first instruction", us(float64(r[benchEntry]-start)))
	vm.Destroy()
	return 0
}

// fillSaves is the number of saves the fill guest makes (guests/fill.asm):
// the boot's first (full), full, live, after 1% written, after 10% written.
const fillSaves = 5

// snapBench measures, in one boot, the snapshot disk's raw sequential
// write and read rates through the driver, then a save of the fill guest
// (256 MiB of non-zero RAM) and its restore, and prints the table of
// `make bench`.
func snapBench(plat *kernel.Platform, image []byte) int {
	if plat.Store == nil {
		logf("error: snapbench needs a snapshot disk")
		return boot.StatusInternal
	}
	img, err := kernel.ParseImage(image)
	if err != nil {
		logf("error: %v", err)
		return boot.StatusBadImage
	}
	dev := plat.Store.Device()
	const block = 1 << 20
	total := int64(img.MemSize) &^ (block - 1)
	buf := make([]byte, block)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	mibs := func(bytes int64, cycles uint64) float64 {
		return float64(bytes) / (1 << 20) / (float64(cycles) / float64(boot.TSCHz))
	}
	// The raw write goes the way the store writes: two buffers, one in
	// flight while the other is ready (snapshot.AsyncWriter), when the
	// device can (virtio-blk and NVMe both can); then a flush, timed
	// apart (a save ends with one too).
	spare := make([]byte, block)
	copy(spare, buf)
	async, _ := dev.(snapshot.AsyncWriter)
	t0 := x86.RDTSC()
	for off := int64(0); off < total; off += block {
		var err error
		if async != nil {
			if err = async.Sync(); err == nil {
				err = async.WriteAsync(buf, off)
			}
			buf, spare = spare, buf
		} else {
			_, err = dev.WriteAt(buf, off)
		}
		if err != nil {
			logf("error: raw write: %v", err)
			return boot.StatusInternal
		}
	}
	if async != nil {
		if err := async.Sync(); err != nil {
			logf("error: raw write: %v", err)
			return boot.StatusInternal
		}
	}
	t1 := x86.RDTSC()
	if err := dev.Flush(); err != nil {
		logf("error: raw flush: %v", err)
		return boot.StatusInternal
	}
	rawWrite, rawFlushed := mibs(total, t1-t0), mibs(total, x86.RDTSC()-t0)
	flushCycles := x86.RDTSC() - t1
	// The same, flushing every snapshot.FlushInterval bytes as it goes,
	// as a save does where the device can (snapshot.AsyncFlusher): the
	// device's write-back overlaps the writes.
	rawOverlapped := rawFlushed
	if f, ok := dev.(snapshot.AsyncFlusher); ok && async != nil {
		t0 = x86.RDTSC()
		var since int64
		var err error
		for off := int64(0); off < total && err == nil; off += block {
			if err = async.Sync(); err == nil && since >= snapshot.FlushInterval {
				err, since = f.FlushAsync(), 0
			}
			if err == nil {
				err = async.WriteAsync(buf, off)
			}
			since += block
			buf, spare = spare, buf
		}
		if err == nil {
			if err = async.Sync(); err == nil {
				err = dev.Flush()
			}
		}
		if err != nil {
			logf("error: raw write with flushes: %v", err)
			return boot.StatusInternal
		}
		rawOverlapped = mibs(total, x86.RDTSC()-t0)
	}
	t0 = x86.RDTSC()
	for off := int64(0); off < total; off += block {
		if _, err := dev.ReadAt(buf, off); err != nil {
			logf("error: raw read: %v", err)
			return boot.StatusInternal
		}
	}
	rawRead := mibs(total, x86.RDTSC()-t0)

	vm, err := kernel.NewVM(plat, img)
	if err != nil {
		logf("error: %v", err)
		return boot.StatusInternal
	}
	stop := vm.Run()
	saves := vm.Saves
	ram := int64(vm.Mem.Size)
	vm.Destroy()
	if stop.Kind != kernel.StopExited || stop.Status != 0 || len(saves) != fillSaves {
		logf("error: fill guest: %v, %d saves", stop, len(saves))
		return boot.StatusInternal
	}
	t0 = x86.RDTSC()
	rvm, _, err := kernel.Restore(plat, plat.Store, plat.SnapshotKey)
	if err != nil {
		logf("error: restore: %v", err)
		return boot.StatusInternal
	}
	restoreCycles := x86.RDTSC() - t0
	rvm.Destroy()
	// The lazy restore (docs/snapshot-format.md, 3.3) of the full
	// snapshot and of the chain (the newest is an increment): to the
	// guest's first instruction, then every block filled.
	// Twice: the first lazy restore of the boot also pays for the
	// emulator's translation of code run the first time.
	coldFirst, coldAll, _, err := lazyBench(plat)
	if err != nil {
		logf("error: lazy restore: %v", err)
		return boot.StatusInternal
	}
	firstCycles, allCycles, lazyStats, err := lazyBench(plat)
	if err != nil {
		logf("error: lazy restore: %v", err)
		return boot.StatusInternal
	}
	chainFirst, chainAll, chainStats, err := lazyRestoreTimes(plat, plat.Store)
	if err != nil {
		logf("error: lazy restore of the chain: %v", err)
		return boot.StatusInternal
	}

	// What the snapshot path costs in CPU on this machine, on 64 MiB.
	const probe = 64 << 20
	data := make([]byte, probe)
	for i := range data {
		data[i] = byte(i>>12) | 1
	}
	t0 = x86.RDTSC()
	sha256.Sum256(data)
	shaRate := mibs(probe, x86.RDTSC()-t0)
	t0 = x86.RDTSC()
	crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	crcRate := mibs(probe, x86.RDTSC()-t0)
	t0 = x86.RDTSC()
	copy(data[probe/2:], data[:probe/2])
	copyRate := mibs(probe/2, x86.RDTSC()-t0)
	zero := make([]byte, probe) // all zero: the scan reads every byte
	t0 = x86.RDTSC()
	for p := 0; p < probe; p += snapshot.PageSize {
		snapshot.IsZeroPage(zero[p : p+snapshot.PageSize])
	}
	zeroRate := mibs(probe, x86.RDTSC()-t0)
	// The block sums of RAM chunk version 2 (docs/snapshot-format.md 3.1).
	t0 = x86.RDTSC()
	xxhash.Sum64(data)
	xxhRate := mibs(probe, x86.RDTSC()-t0)
	var polyKey [32]byte
	t0 = x86.RDTSC()
	var tag [16]byte
	poly1305.Sum(&tag, data, &polyKey)
	polyRate := mibs(probe, x86.RDTSC()-t0)

	ms := func(cycles uint64) float64 { return float64(cycles) * 1e3 / float64(boot.TSCHz) }
	first, full, live, inc1, inc10 := saves[0], saves[1], saves[2], saves[3], saves[4]
	saveLimit, readLimit := min(max(rawFlushed, rawOverlapped), xxhRate), min(rawRead, xxhRate)
	fmt.Printf("tamavisor snapshot bench: guest RAM %d MiB (%.1f MiB on disk when full), %s, TSC %d MHz\n",
		ram>>20, float64(full.Bytes)/(1<<20), diskName, boot.TSCHz/1e6)
	row := func(name string, rate, ratio float64, of string) {
		fmt.Printf("  %-52s %9.1f  %6.2f  %s\n", name, rate, ratio, of)
	}
	fmt.Printf("  %-52s %9s  %6s  %s\n", "measure", "MiB/s", "ratio", "of")
	if async != nil {
		row("raw sequential write, 1 MiB, 2 in flight", rawWrite, 1, "")
	} else {
		row("raw sequential write, 1 MiB, one at a time", rawWrite, 1, "")
	}
	row("raw sequential write and a flush", rawFlushed, 1, fmt.Sprintf("(the flush: %.1f ms)", ms(flushCycles)))
	row(fmt.Sprintf("the same, flushing every %d MiB as it goes", snapshot.FlushInterval>>20), rawOverlapped, 1, "")
	row("raw sequential read, 1 MiB requests", rawRead, 1, "")
	row("XXH64, the block sum (CPU)", xxhRate, 1, "")
	row("full save, guest paused (aim 0.9)", mibs(ram, full.Cycles), mibs(ram, full.Cycles)/saveLimit, "min(the faster raw write and flush, XXH64)")
	row("live save, guest running beside it (RAM per s)", mibs(ram, live.Cycles), mibs(ram, live.Cycles)/saveLimit, "the same; the guest has half the CPU")
	fmt.Printf("  %-52s %9.1f ms (aim 50), %d pages copied before the guest wrote them, %d writes waited for the disk\n", "  longest guest pause during the live save", ms(live.PauseCycles), live.Copies, live.Waits)
	fmt.Printf("  %-52s %9.1f MiB in place, %.1f MiB copied\n", "  the live save's page data", float64(live.Phases.InPlace)/(1<<20), float64(live.Phases.Copied)/(1<<20))
	fmt.Printf("  %-52s %9.1f ms\n", "  guest pause of the full save", ms(full.Cycles))
	fmt.Printf("  %-52s %9.1f ms (prepare %.1f): the emulator translates code run the first time\n", "  the same, the boot's first save", ms(first.Cycles), ms(first.Phases.Prepare))
	phases := func(s kernel.SaveStats) {
		ph := s.Phases
		fmt.Printf("  %-52s prepare %.1f (records read %.1f), scan %.1f, page data %.1f, drain %.1f, flush %.1f, commit %.1f, rest %.1f\n", "    its phases, ms",
			ms(ph.Prepare), ms(ph.Records), ms(ph.Scan), ms(ph.Data), ms(ph.Drain), ms(ph.Flush), ms(ph.Commit),
			ms(s.Cycles-min(s.Cycles, ph.Prepare+ph.Scan+ph.Data+ph.Drain+ph.Flush+ph.Commit)))
	}
	phases(full)
	ph := full.Phases
	fmt.Printf("  %-52s %.1f MiB written from guest RAM in place, %.1f MiB copied\n", "    its page data",
		float64(ph.InPlace)/(1<<20), float64(ph.Copied)/(1<<20))
	for _, c := range []struct {
		name string
		s    kernel.SaveStats
	}{{"save after 1% of pages written", inc1}, {"save after 10% of pages written", inc10}} {
		fmt.Printf("  %-52s %9.1f ms, %6.2f of the full save's time, %.1f MiB on disk\n", c.name, ms(c.s.Cycles),
			float64(c.s.Cycles)/float64(full.Cycles), float64(c.s.Bytes)/(1<<20))
		phases(c.s)
	}
	rest := mibs(ram, restoreCycles)
	row("restore of the chain, eager: all RAM read and verified", rest, rest/readLimit, "min(raw read, XXH64)")
	fmt.Printf("  %-52s %9.1f ms: RAM is read before the first instruction\n", "  eager restore to the guest's first instruction", ms(restoreCycles))
	fmt.Printf("  %-52s %9.1f ms (aim 50): lazy, of the full snapshot\n", "restore to the guest's first instruction", ms(firstCycles))
	lazyRate := mibs(ram, allCycles)
	fmt.Printf("  %-52s %9.1f ms (%.1f MiB/s of RAM, %.2f of min(raw read, XXH64), aim 0.9): lazy, every block filled\n",
		"restore to all RAM present", ms(allCycles), lazyRate, lazyRate/readLimit)
	lazyPhases := func(st kernel.LazyStats, all uint64) {
		fmt.Printf("  %-52s reading (or waiting for a read) %.1f, checking %.1f, mapping %.1f, rest %.1f; %d of %d blocks read ahead, %d 2 MiB pages made\n",
			"    its phases, ms", ms(st.Fill.Read), ms(st.Fill.Check), ms(st.Map),
			ms(all-min(all, st.Fill.Read+st.Fill.Check+st.Map)), st.Fill.Ahead, st.Blocks, st.Promoted)
	}
	lazyPhases(lazyStats, allCycles)
	fmt.Printf("  %-52s %9.1f ms to the first instruction, %.1f ms to all RAM: the emulator translates code run the first time\n",
		"  the same, the boot's first lazy restore", ms(coldFirst), ms(coldAll))
	fmt.Printf("  %-52s %9.1f ms (aim 50): lazy, of the chain\n", "restore to the guest's first instruction", ms(chainFirst))
	chainRate := mibs(ram, chainAll)
	fmt.Printf("  %-52s %9.1f ms (%.1f MiB/s of RAM, %.2f of min(raw read, XXH64)): lazy, of the chain\n",
		"restore to all RAM present", ms(chainAll), chainRate, chainRate/readLimit)
	lazyPhases(chainStats, chainAll)
	fmt.Printf("  CPU cost of the snapshot path on this CPU (MiB/s): XXH64 %.1f, Poly1305 %.1f (block sums, unkeyed and keyed), zero-page scan %.1f, memcpy %.1f, SHA-256 %.1f, CRC32C %.1f\n",
		xxhRate, polyRate, zeroRate, copyRate, shaRate, crcRate)
	return 0
}

// lazyBench restores the store's newest full snapshot lazily and returns
// the cycles to the guest's first instruction (the VM ready to run) and
// to all RAM present (every block filled, the guest held), and the
// restore's stats.
func lazyBench(plat *kernel.Platform) (first, all uint64, st kernel.LazyStats, err error) {
	recs, err := plat.Store.Records()
	if err != nil {
		return 0, 0, st, err
	}
	slot := -1
	var gen uint64
	for _, r := range recs {
		if c := r.Commit; c != nil && !c.Incremental(plat.Store) && c.Generation > gen {
			slot, gen = r.Slot, c.Generation
		}
	}
	if slot < 0 {
		return 0, 0, st, fmt.Errorf("no full snapshot on the disk")
	}
	view, err := plat.Store.SlotView(slot)
	if err != nil {
		return 0, 0, st, err
	}
	return lazyRestoreTimes(plat, view)
}

// lazyRestoreTimes restores the newest snapshot of store lazily and
// returns the cycles to the guest's first instruction (the VM ready to
// run) and to all RAM present (every block filled, the guest held), and
// the restore's stats.
func lazyRestoreTimes(plat *kernel.Platform, store *snapshot.Store) (first, all uint64, st kernel.LazyStats, err error) {
	t0 := x86.RDTSC()
	vm, c, err := kernel.RestoreLazy(plat, store, plat.SnapshotKey)
	if err != nil {
		return 0, 0, st, err
	}
	defer vm.Destroy()
	first = x86.RDTSC() - t0
	if _, ok := vm.Lazy(); !ok {
		return 0, 0, st, fmt.Errorf("generation %d was not restored lazily", c.Generation)
	}
	if err := vm.FillAll(); err != nil {
		return 0, 0, st, err
	}
	all = x86.RDTSC() - t0
	st, _ = vm.Lazy()
	return first, all, st, nil
}
