//go:build e2e

package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	layout "tamavisor/boot" // renamed: boot is the test helper that boots QEMU
)

// UEFI boots go through firmware: OVMF under TCG takes seconds before GRUB
// runs, so the backstop is longer than for -kernel boots.
const (
	uefiTimeout      = 3 * time.Minute
	uefiImageTimeout = 2 * time.Minute
)

// OVMF's files, as Debian's ovmf package installs them; OVMF_CODE and
// OVMF_VARS override.
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

// haveTool says whether a command is on PATH or in /usr/sbin or /sbin
// (mkfs.fat and sgdisk, which boot/usb.mk finds there too).
func haveTool(name string) bool {
	if _, err := exec.LookPath(name); err == nil {
		return true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// uefiImage builds the USB image (make usb-image) around the kernel under
// test into a temporary directory, and a fresh copy of OVMF's variable
// store, or skips the test, naming what is missing.
func uefiImage(t *testing.T) *UEFI {
	t.Helper()
	var missing []string
	for _, f := range []string{ovmfCode, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f+" (apt-get install ovmf)")
		}
	}
	for tool, pkg := range map[string]string{"grub-mkstandalone": "grub-efi-amd64-bin grub-common",
		"mkfs.fat": "dosfstools", "mcopy": "mtools", "sgdisk": "gdisk"} {
		if !haveTool(tool) {
			missing = append(missing, tool+" (apt-get install "+pkg+")")
		}
	}
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi/multiboot2.mod"); err != nil {
		missing = append(missing, "GRUB's x86_64-efi modules (apt-get install grub-efi-amd64-bin)")
	}
	if len(missing) > 0 {
		t.Skipf("UEFI boot not testable here: missing %s (.ci/run installs them)", strings.Join(missing, ", "))
	}
	elf := os.Getenv("TAMAVISOR_ELF")
	if elf == "" {
		t.Fatal("TAMAVISOR_ELF not set: run through make test-e2e")
	}
	dir := t.TempDir()
	r := runMake(t, uefiImageTimeout, nil, "usb-image", "USB_DIR="+dir, "USB_KERNEL="+elf)
	expectMake(t, r, true, "make usb-image: "+dir)
	if t.Failed() {
		t.FailNow()
	}
	vars, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	u := &UEFI{Image: filepath.Join(dir, "tamavisor-usb.img"), Code: ovmfCode, Vars: filepath.Join(dir, "OVMF_VARS.fd")}
	if err := os.WriteFile(u.Vars, vars, 0o644); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUEFIBoot boots the USB image like a real board (q35, OVMF, GRUB from
// a USB stick, multiboot2): tamavisor must say it came up through
// multiboot2, take the memory map from it, enable SVM and run a guest
// passed through fw_cfg to its exit status. Without an NVMe drive it must
// say it found no snapshot disk, and why.
func TestUEFIBoot(t *testing.T) {
	u := uefiImage(t)
	t0 := time.Now()
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "long64"), UEFI: u, Timeout: uefiTimeout})
	expect(t, r, 0, "GRUB: loading tamavisor.elf (multiboot2)",
		"tamavisor: boot protocol: multiboot2 from \"GRUB", "(multiboot2); guest pool 0x34000000-",
		"SVM enabled", "snapshot disk: none: no NVMe controller (PCI class 01h/08h/02h)",
		"long64: PASS", "vm long64: exited with status 0")
	if _, pvh := r.Find("boot protocol: PVH"); pvh {
		t.Error("a firmware boot reported QEMU's PVH entry")
	}
	if banner, ok := r.Find("tamavisor: starting"); ok {
		grub, _ := r.Find("GRUB: loading")
		t.Logf("QEMU start to GRUB %v, to tamavisor's first line %v, to the guest's exit %v",
			grub.At.Sub(t0).Round(time.Millisecond), banner.At.Sub(t0).Round(time.Millisecond),
			r.Lines[len(r.Lines)-1].At.Sub(t0).Round(time.Millisecond))
	}
}

// TestUEFIMemoryMapRefused: with too little RAM the runtime's or the DMA
// region's range is not usable RAM in GRUB's map: tamavisor must name it,
// print the multiboot2 map and power off before enabling SVM.
func TestUEFIMemoryMapRefused(t *testing.T) {
	u := uefiImage(t)
	r := boot(t, Config{CPU: "EPYC,+svm", RAM: "800M", UEFI: u, Timeout: uefiTimeout})
	expect(t, r, layout.StatusInternal, "tamavisor: boot protocol: multiboot2",
		fmt.Sprintf("DMA region [%#x, %#x) is not usable RAM", layout.DMAStart, layout.DMAStart+layout.DMASize),
		"memory map (multiboot2):", "] usable")
	if _, bad := r.Find("SVM enabled"); bad {
		t.Error("SVM enabled on a refused memory map")
	}
}

// TestUEFINVMeSnapshot: on q35 under OVMF the snapshot disk is an NVMe
// drive, found through ACPI (RSDP from GRUB, XSDT, MCFG) and PCI. The
// counter guest saves itself at 5 and QEMU is killed; a second boot from
// the same drive restores it, and the guest counts on without a gap to
// its end (saving at 10 and 15 on the restored store) with its memory
// pattern intact.
func TestUEFINVMeSnapshot(t *testing.T) {
	u := uefiImage(t)
	disk := newDisk(t, 256<<20)
	disk1 := "snapshot disk: NVMe QEMU NVMe Ctrl " + NVMeSerial + ", 256 MiB"
	r1 := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "counter"), UEFI: u, Disk: disk, Timeout: uefiTimeout,
		OnLine: killOn("counter: saved at 5")})
	if !r1.Killed {
		t.Fatalf("first boot was not killed after its save:\n%s", r1.Output())
	}
	expect(t, r1, -1, "boot protocol: multiboot2", "ACPI 2.0+ RSDP", "NVMe controller 00:", disk1,
		"snapshot saved: generation 1", "counter: saved at 5")

	r2 := boot(t, Config{CPU: "EPYC,+svm", Mode: "restore", UEFI: u, Disk: disk, Timeout: uefiTimeout})
	expect(t, r2, 0, disk1, "restored from generation 1", "counter: resumed at 5", "counter: saved at 10",
		"counter: saved at 15", "counter: done, memory intact", "vm counter: exited with status 0")
	stream := guestStream(upTo(t, r1, "snapshot saved: generation 1")) +
		guestStream(after(t, r2, "restored from generation 1"))
	expectSequence(t, counts(stream), 1, 15)
	for _, r := range []*Result{r1, r2} {
		noFailures(t, r)
	}
	for _, p := range []struct {
		r    *Result
		line string
	}{{r1, "tamavisor: snapshot 100%"}, {r2, "tamavisor: restore 100%"}} {
		if l, ok := p.r.Find(p.line); ok {
			t.Logf("NVMe: %s", l.Text)
		}
	}
}
