// Command bench boots tamavisor in bench mode under each CPU model and
// prints its exit-path table, then the snapshot table, then boots the
// cached Linux guest (LINUX_DIR) to its shell under tamavisor and directly
// in QEMU and prints the times and the exit profile (run by `make bench`).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"tamavisor/qemu"
)

func main() {
	only := flag.String("only", "", "run one part: exits, snapshot or linux (default: all)")
	flag.Parse()
	run := func(part string) bool { return *only == "" || *only == part }
	switch *only {
	case "", "exits", "snapshot", "linux":
	default:
		fmt.Fprintf(os.Stderr, "bench: -only %q: want exits, snapshot or linux\n", *only)
		os.Exit(2)
	}
	elf, guests := os.Getenv("TAMAVISOR_ELF"), os.Getenv("GUESTS_DIR")
	if elf == "" || guests == "" {
		fmt.Fprintln(os.Stderr, "bench: set TAMAVISOR_ELF and GUESTS_DIR (make bench does)")
		os.Exit(2)
	}
	failed := false
	for _, cpu := range []string{"EPYC,+svm", "max"} {
		if !run("exits") {
			break
		}
		r, err := qemu.Run(qemu.Config{QEMU: os.Getenv("QEMU"), ELF: elf, CPU: cpu, Mode: "bench",
			Guest: filepath.Join(guests, "bench.bin")})
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Printf("== -cpu %s (accel %s)\n", cpu, qemu.Accel())
		if !table(r, "tamavisor bench:") {
			failed = true
		}
	}
	if run("snapshot") && !snapBench(elf, guests) {
		failed = true
	}
	if run("snapshot") && !snapBenchUEFI(elf, guests) {
		failed = true
	}
	if run("linux") && !linuxBench(os.Getenv("QEMU"), elf) {
		failed = true
	}
	if failed {
		os.Exit(1)
	}
}

// snapBench boots tamavisor in snapbench mode with a fresh disk and the
// fill guest (256 MiB of non-zero RAM).
func snapBench(elf, guests string) bool {
	dir, err := os.MkdirTemp("", "tamavisor-bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return false
	}
	defer os.RemoveAll(dir)
	disk := filepath.Join(dir, "disk.img")
	if err := writeZeros(disk, 800<<20); err != nil {
		fmt.Fprintln(os.Stderr, "bench: cannot make the disk image:", err)
		return false
	}
	r, err := qemu.Run(qemu.Config{QEMU: os.Getenv("QEMU"), ELF: elf, CPU: "EPYC,+svm", Mode: "snapbench",
		Guest: filepath.Join(guests, "fill.bin"), Disk: disk, Timeout: 10 * time.Minute})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return false
	}
	fmt.Printf("== snapshot save/restore, microvm, virtio-blk disk, -cpu EPYC,+svm (accel %s)\n", qemu.Accel())
	return table(r, "tamavisor snapshot bench:")
}

// OVMF's files (Debian's ovmf package); OVMF_CODE and OVMF_VARS override.
var (
	ovmfCode = envOr("OVMF_CODE", "/usr/share/OVMF/OVMF_CODE_4M.fd")
	ovmfVars = envOr("OVMF_VARS", "/usr/share/OVMF/OVMF_VARS_4M.fd")
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// snapBenchUEFI runs the snapshot bench once more as a real board would:
// q35 and OVMF boot make usb-image's image, and the disk is an NVMe drive.
// Without OVMF or GRUB's tools it says so and skips (not a failure).
func snapBenchUEFI(elf, guests string) bool {
	const title = "== snapshot save/restore, q35 + OVMF (UEFI boot), NVMe disk"
	for _, f := range []string{ovmfCode, ovmfVars, "/usr/lib/grub/x86_64-efi/multiboot2.mod"} {
		if _, err := os.Stat(f); err != nil {
			fmt.Printf("%s: skipped, %s missing (apt-get install ovmf grub-efi-amd64-bin)\n", title, f)
			return true
		}
	}
	dir, err := os.MkdirTemp("", "tamavisor-bench-uefi")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return false
	}
	defer os.RemoveAll(dir)
	mk := exec.Command("make", "--no-print-directory", "usb-image", "USB_DIR="+dir, "USB_KERNEL="+elf)
	if out, err := mk.CombinedOutput(); err != nil {
		fmt.Printf("%s: make usb-image failed: %v\n%s", title, err, out)
		return false
	}
	vars, err := os.ReadFile(ovmfVars)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "OVMF_VARS.fd"), vars, 0o644)
	}
	disk := filepath.Join(dir, "disk.img")
	if err == nil {
		err = writeZeros(disk, 800<<20)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return false
	}
	u := &qemu.UEFI{Image: filepath.Join(dir, "tamavisor-usb.img"), Code: ovmfCode, Vars: filepath.Join(dir, "OVMF_VARS.fd")}
	r, err := qemu.Run(qemu.Config{QEMU: os.Getenv("QEMU"), CPU: "EPYC,+svm", Mode: "snapbench", UEFI: u,
		Guest: filepath.Join(guests, "fill.bin"), Disk: disk, Timeout: 10 * time.Minute})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return false
	}
	fmt.Printf("%s, -cpu EPYC,+svm (accel %s)\n", title, qemu.Accel())
	return table(r, "tamavisor snapshot bench:")
}

// writeZeros makes a disk image of size bytes written with zeros, not
// sparse, and on the host's disk (synced): every write of the bench then
// lands on allocated blocks, as on a real disk, instead of some paying for
// the host file system's block allocation and others not, and the bench's
// first flush does not write these zeros out.
func writeZeros(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 8<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// table prints the console lines from the one starting with title on, and
// reports whether the run printed it and powered off with status 0.
func table(r *qemu.Result, title string) bool {
	printing := false
	for _, l := range r.Lines {
		if strings.HasPrefix(l.Text, title) {
			printing = true
		}
		if printing {
			fmt.Println(l.Text)
		}
	}
	if s, ok := r.Status(); !printing || !ok || s != 0 {
		fmt.Printf("bench run failed (QEMU exit %d):\n%s", r.ExitCode, r.Output())
		return false
	}
	return true
}
