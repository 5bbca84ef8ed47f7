// Package qemu is tamavisor's host side: it launches the hypervisor in
// QEMU's microvm machine, feeds it guests through fw_cfg, and captures what
// it prints (with arrival times) and how QEMU exits. The end-to-end tests
// (build tag e2e) and `make bench` use it.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Config describes one boot of tamavisor.
type Config struct {
	QEMU    string        // qemu-system-x86_64 binary
	ELF     string        // tamavisor.elf
	CPU     string        // -cpu model, e.g. "EPYC,+svm" or "max"
	RAM     string        // -m, the machine's RAM; "" for "2G"
	Guest   string        // guest image file for opt/tamavisor/guest, or ""
	Mode    string        // opt/tamavisor/mode ("", "bench", "clock")
	Timeout time.Duration // QEMU is killed after this
	Extra   []string      // more QEMU arguments
	Input   string        // typed on the console (serial) after start
	Disk    string        // raw disk image for the snapshot disk (virtio-blk; NVMe with UEFI)
	// DiskWriteBPS, if set, throttles writes to the disk (bytes per
	// second, QEMU's throttling.bps-write): a save then lasts long enough
	// for a test to cut the power in its middle.
	DiskWriteBPS int
	Control      string // unix socket path of the control channel (COM2)
	// A Linux guest (fw_cfg opt/tamavisor/kernel, initrd, cmdline, mem):
	// bzImage and initramfs files, the kernel command line and the guest
	// RAM size ("256M"); empty fields are not passed.
	Kernel, Initrd, Cmdline, Mem string
	// OnLine sees each console line as it arrives; returning true kills
	// QEMU at once (SIGKILL), as a power cut would.
	OnLine func(Line) bool
	// Respond sees each console line as it arrives and returns what to
	// type on the console in answer ("" for nothing). Not with Input.
	Respond func(Line) string
	// UEFI, if set, boots like a real board instead of QEMU -kernel:
	// q35, OVMF, GRUB from the USB image (ELF is then unused). Disk is
	// then an NVMe drive with serial number NVMeSerial.
	UEFI *UEFI
}

// UEFI is a boot through firmware: QEMU's q35 machine with OVMF boots
// make usb-image's disk image from an emulated USB stick (xHCI), and GRUB
// on it loads tamavisor.elf through multiboot2.
type UEFI struct {
	Image string // the USB image (opened read-only)
	Code  string // OVMF code (read-only)
	Vars  string // OVMF's variable store: a copy the firmware may write
}

// NVMeSerial is the serial number of the NVMe snapshot disk of UEFI boots
// (as make qemu-uefi's NVME_SERIAL).
const NVMeSerial = "tamavisor-snap"

// Line is one line of console output and when the host received it.
type Line struct {
	Text string
	At   time.Time
}

// Result is what a boot produced.
type Result struct {
	Lines    []Line
	Stderr   string
	ExitCode int // QEMU's exit status
	TimedOut bool
	Killed   bool // OnLine asked for a kill
}

// Output is the console output as one string.
func (r *Result) Output() string {
	var b strings.Builder
	for _, l := range r.Lines {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// Status is tamavisor's power-off status: isa-debug-exit makes QEMU exit
// with status*2+1. ok is false when QEMU exited another way.
func (r *Result) Status() (status int, ok bool) {
	if r.TimedOut || r.Killed || r.ExitCode%2 == 0 {
		return 0, false
	}
	return (r.ExitCode - 1) / 2, true
}

// Find returns the first line containing s.
func (r *Result) Find(s string) (Line, bool) {
	for _, l := range r.Lines {
		if strings.Contains(l.Text, s) {
			return l, true
		}
	}
	return Line{}, false
}

// Accel returns "kvm" when the host CPU has SVM and /dev/kvm is usable
// (nested SVM), else "tcg".
func Accel() string {
	info, err := os.ReadFile("/proc/cpuinfo")
	if err == nil && bytes.Contains(info, []byte(" svm")) {
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
			f.Close()
			return "kvm"
		}
	}
	return "tcg"
}

// optPath quotes a path for a QEMU option value, where a comma separates
// options: commas are doubled.
func optPath(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// Args returns QEMU's command line for cfg.
func Args(cfg Config) []string {
	ram := cfg.RAM
	if ram == "" {
		ram = "2G"
	}
	args := []string{
		"-machine", "microvm,x-option-roms=on,pit=on,pic=off,rtc=on",
		"-accel", Accel(), "-cpu", cfg.CPU, "-m", ram,
		"-nographic", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-kernel", cfg.ELF,
	}
	if u := cfg.UEFI; u != nil {
		args = append([]string{"-machine", "q35"}, args[2:len(args)-2]...)
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+optPath(u.Code),
			"-drive", "if=pflash,format=raw,unit=1,file="+optPath(u.Vars),
			"-drive", "if=none,id=stick,format=raw,readonly=on,file="+optPath(u.Image),
			"-device", "qemu-xhci,id=xhci", "-device", "usb-storage,bus=xhci.0,drive=stick")
	}
	if cfg.Guest != "" {
		args = append(args, "-fw_cfg", "name=opt/tamavisor/guest,file="+optPath(cfg.Guest))
	}
	if cfg.Mode != "" {
		args = append(args, "-fw_cfg", "name=opt/tamavisor/mode,string="+cfg.Mode)
	}
	for _, f := range []struct{ name, kind, val string }{
		{"kernel", "file", cfg.Kernel}, {"initrd", "file", cfg.Initrd},
		{"cmdline", "string", cfg.Cmdline}, {"mem", "string", cfg.Mem},
	} {
		if f.val != "" {
			args = append(args, "-fw_cfg", "name=opt/tamavisor/"+f.name+","+f.kind+"="+optPath(f.val))
		}
	}
	if cfg.Disk != "" && cfg.UEFI != nil {
		args = append(args, "-drive", "if=none,id=snapdisk,format=raw,file="+optPath(cfg.Disk)+throttle(cfg.DiskWriteBPS),
			"-device", "nvme,serial="+NVMeSerial+",drive=snapdisk")
	} else if cfg.Disk != "" {
		args = append(args, "-global", "virtio-mmio.force-legacy=false",
			"-drive", "if=none,id=snapdisk,format=raw,file="+optPath(cfg.Disk)+throttle(cfg.DiskWriteBPS),
			"-device", "virtio-blk-device,drive=snapdisk")
	}
	if cfg.Control != "" {
		// microvm wires one serial port only: add COM2 as an ISA device.
		args = append(args, "-chardev", "socket,id=ctl,server=on,wait=off,path="+optPath(cfg.Control),
			"-device", "isa-serial,chardev=ctl,iobase=0x2f8,irq=3")
	}
	return append(args, cfg.Extra...)
}

// Run boots tamavisor and waits for QEMU to exit or the timeout.
func Run(cfg Config) (*Result, error) {
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.UEFI != nil {
		if _, err := os.Stat(cfg.UEFI.Image); err != nil {
			return nil, fmt.Errorf("qemu: USB image: %w (run make usb-image)", err)
		}
	} else if _, err := os.Stat(cfg.ELF); err != nil {
		return nil, fmt.Errorf("qemu: kernel image: %w (run make tamavisor.elf)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.QEMU, Args(cfg)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var stdin io.WriteCloser
	if cfg.Input != "" {
		cmd.Stdin = strings.NewReader(cfg.Input)
	} else if cfg.Respond != nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
		defer stdin.Close()
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	res := &Result{}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := Line{Text: strings.TrimRight(sc.Text(), "\r"), At: time.Now()}
		res.Lines = append(res.Lines, l)
		if stdin != nil {
			if in := cfg.Respond(l); in != "" {
				stdin.Write([]byte(in))
			}
		}
		if cfg.OnLine != nil && !res.Killed && cfg.OnLine(l) {
			cmd.Process.Kill()
			res.Killed = true
		}
	}
	err = cmd.Wait()
	res.Stderr = stderr.String()
	res.TimedOut = ctx.Err() != nil
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitCode()
	case res.TimedOut, res.Killed:
	default:
		return nil, fmt.Errorf("qemu: %w", err)
	}
	return res, nil
}

// throttle is the -drive option that limits writes to bps bytes a second.
func throttle(bps int) string {
	if bps <= 0 {
		return ""
	}
	return fmt.Sprintf(",throttling.bps-write=%d", bps)
}
