//go:build e2e

package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	expectBoardLog(t, r, "calibrated against the PIT; the ACPI PM timer (I/O 0x608) agrees")
	expect(t, r, 0, "console: COM1 (I/O 0x3f8), 115200 8N1 as the firmware set it: no SPCR table")
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
	expectBoardLog(t, r1, "calibrated against the PIT; the ACPI PM timer (I/O 0x608) agrees")

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

// expectBoardLog checks what tamavisor says about a q35 board found
// through ACPI, in order: the tables (at least FACP, APIC and MCFG), the
// MADT, the timers, which reference the TSC was calibrated against (tsc),
// the CPU and its SVM state before SVM is enabled.
func expectBoardLog(t *testing.T, r *Result, tsc string) {
	t.Helper()
	tables, ok := r.Find("tamavisor: ACPI tables: XSDT from OEM \"BOCHS\": ")
	if !ok {
		t.Fatalf("no ACPI table list:\n%s", r.Output())
	}
	list := strings.Fields(tables.Text[strings.LastIndex(tables.Text, ": ")+2:])
	for _, sig := range []string{"FACP", "APIC", "MCFG", "HPET"} {
		if !slices.Contains(list, sig) {
			t.Errorf("ACPI tables %q lack %s", list, sig)
		}
	}
	inOrder(t, r, "ACPI tables:",
		"ACPI MADT: local APIC 0xfee00000, 1 processors, I/O APIC 0 at 0xfec00000 GSI 0+, overrides IRQ0->GSI2",
		"8259 PICs present (PCAT_COMPAT)",
		"ACPI FADT: PM timer I/O 0x608, ", "ACPI HPET: registers at memory 0xfed00000",
		"tamavisor: TSC: ", tsc, "tamavisor: console: ",
		"tamavisor: CPU: AuthenticAMD family 0x", "CPUID has SVM, VM_CR 0x0 (SVMDIS clear, LOCK clear)",
		"SVM enabled")
	if _, bad := r.Find("ACPI: table "); bad {
		t.Error("a table of OVMF's was reported unusable")
	}
}

// inOrder checks that the output holds each string, each after the one
// before.
func inOrder(t *testing.T, r *Result, want ...string) {
	t.Helper()
	out := r.Output()
	for _, w := range want {
		i := strings.Index(out, w)
		if i < 0 {
			t.Errorf("output lacks %q (or it is not after the lines before it)", w)
			continue
		}
		out = out[i+len(w):]
	}
}

// TestUEFINoPIT: a board without an i8254 PIT (q35 with pit=off): the PIT
// does not count, and tamavisor must calibrate the TSC against the ACPI PM
// timer the FADT names, say so, and run a guest whose clock is right.
func TestUEFINoPIT(t *testing.T) {
	u := uefiImage(t)
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "long64"), UEFI: u, Timeout: uefiTimeout,
		Extra: []string{"-machine", "pit=off"}})
	expect(t, r, 0, "tamavisor: starting on", "long64: PASS", "vm long64: exited with status 0")
	expectBoardLog(t, r, "calibrated against the ACPI PM timer (I/O 0x608): the PIT does not count")
	if _, bad := r.Find("calibrated against the PIT"); bad {
		t.Error("the TSC was calibrated against an absent PIT")
	}
}

// spcrCOM2 is the body (after the header QEMU's -acpitable writes) of an
// SPCR table, revision 2, naming a 16550 at I/O 0x2f8 (COM2), IRQ 3, 115200
// baud 8N1 (Microsoft's SPCR specification: interface type, reserved, base
// address GAS, interrupt type, IRQ, GSI, baud code 7, parity, stop bits,
// flow control, terminal type, reserved, PCI device and vendor 0xffff,
// bus, device, function, flags, segment, reserved).
func spcrCOM2() []byte {
	b := []byte{0, 0, 0, 0, // 16550, reserved
		1, 8, 0, 1, 0xf8, 0x02, 0, 0, 0, 0, 0, 0, // GAS: system I/O, 8 bits, byte access, 0x2f8
		1, 3, 0, 0, 0, 0, // interrupt type: PC-AT 8259, IRQ 3, GSI 0
		7, 0, 1, 0, 0, 0, // 115200, no parity, 1 stop bit, no flow control, VT100, reserved
		0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	return b
}

// TestUEFISPCRConsole: when the SPCR table names another 16550 in I/O
// space (here COM2, given to QEMU with -acpitable), tamavisor says so on
// COM1, moves its console there, and the rest of the log and the guest's
// output come out of COM2.
func TestUEFISPCRConsole(t *testing.T) {
	u := uefiImage(t)
	dir := t.TempDir()
	table := filepath.Join(dir, "spcr.bin")
	com2 := filepath.Join(dir, "com2.log")
	if err := os.WriteFile(table, spcrCOM2(), 0o644); err != nil {
		t.Fatal(err)
	}
	r := boot(t, Config{CPU: "EPYC,+svm", Guest: guest(t, "long64"), UEFI: u, Timeout: uefiTimeout,
		Extra: []string{"-acpitable", "sig=SPCR,rev=2,oem_id=TAMAVI,data=" + table, "-serial", "file:" + com2}})
	if s, ok := r.Status(); !ok || s != 0 {
		t.Errorf("QEMU exit %d (status %d, %v), want tamavisor status 0", r.ExitCode, s, ok)
	}
	inOrder(t, r, "ACPI tables: XSDT from OEM", " SPCR",
		"console: the SPCR table names 16550-compatible UART at I/O 0x2f8, 115200 baud: moving the console there")
	if _, bad := r.Find("vm long64: exited"); bad {
		t.Error("the guest's end was logged on COM1 after the console moved to COM2")
	}
	b, err := os.ReadFile(com2)
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	for _, w := range []string{"tamavisor: console: on the SPCR UART at I/O 0x2f8", "tamavisor: SVM enabled",
		"long64: PASS", "vm long64: exited with status 0"} {
		if !strings.Contains(out, w) {
			t.Errorf("COM2 lacks %q", w)
		}
	}
	if strings.Contains(out, "control channel on COM2") {
		t.Error("COM2 was taken as the control channel while it is the console")
	}
	if t.Failed() {
		t.Logf("COM1:\n%s\nCOM2:\n%s", r.Output(), out)
	}
}
