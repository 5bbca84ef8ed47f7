//go:build linux && amd64

package guests

// A stand-in for tamavisor that runs the guest images under Linux KVM, so
// the guests themselves can be checked on a development host. It follows
// docs/guest-abi.md for the initial state, devices (using the real device
// models from kernel/devices) and hypercalls, with two differences:
//
//   - KVM handles VMMCALL itself, so every VMMCALL (0F 01 D9) in the loaded
//     image is patched to OUT 0xF0, eAX; NOP (E7 F0 90) and the port write
//     is treated as the hypercall. This patches data that happens to hold
//     those bytes too; the test guests have none.
//   - the CPU model is KVM's supported CPUID with tamavisor's changes
//     (SVM hidden, hypervisor bit, signature leaf), and the MSRs are KVM's,
//     with the SVM host-save MSR denied by an MSR filter.
//
// The test skips when /dev/kvm cannot be opened or the images are not built.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"tamavisor/kernel/devices"
)

// KVM ioctls and constants (linux/kvm.h).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmGetSupportedCPUID   = 0xC008AE05
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84
	kvmSetCPUID2           = 0x4008AE90
	kvmSetMSRFilter        = 0x4188AEC6

	kvmExitIO       = 2
	kvmExitHLT      = 5
	kvmExitMMIO     = 6
	kvmExitShutdown = 8

	hypercallPort = 0xF0
)

type kvmRegs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

type kvmSegment struct {
	Base                            uint64
	Limit                           uint32
	Selector                        uint16
	Type, Present, DPL, DB, S, L, G uint8
	AVL, Unusable, Padding          uint8
}

type kvmDtable struct {
	Base    uint64
	Limit   uint16
	Padding [3]uint16
}

type kvmSregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT kvmSegment
	GDT, IDT                        kvmDtable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER, APICBase                  uint64
	InterruptBitmap                 [4]uint64
}

type kvmCPUIDEntry struct {
	Function, Index, Flags, EAX, EBX, ECX, EDX uint32
	Padding                                    [3]uint32
}

type kvmCPUID struct {
	Nent, Padding uint32
	Entries       [128]kvmCPUIDEntry
}

type kvmMemoryRegion struct {
	Slot, Flags               uint32
	GuestPhysAddr, MemorySize uint64
	UserspaceAddr             uint64
}

type kvmMSRFilterRange struct {
	Flags, Nmsrs, Base uint32
	_                  uint32
	Bitmap             *byte
}

type kvmMSRFilter struct {
	Flags  uint32
	_      uint32
	Ranges [16]kvmMSRFilterRange
}

func ioctl(fd uintptr, req uintptr, arg uintptr) (uintptr, error) {
	r, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

// guestResult is what happened to a guest run under KVM.
type guestResult struct {
	output  string // UART, debug port and CONSOLE_WRITE output
	exited  bool
	status  uint64
	stopped string // reason, when the "hypervisor" stopped the VM
	reports map[uint64]uint64
}

func runUnderKVM(t *testing.T, kvm *os.File, img []byte) guestResult {
	t.Helper()
	le := binary.LittleEndian
	mode := le.Uint32(img[16:])
	load := le.Uint64(img[24:])
	entry := le.Uint64(img[32:])
	memSize := le.Uint64(img[40:])
	payload := img[le.Uint32(img[12:]):]

	vmfd, err := ioctl(kvm.Fd(), kvmCreateVM, 0)
	if err != nil {
		t.Fatalf("KVM_CREATE_VM: %v", err)
	}
	defer syscall.Close(int(vmfd))

	mem, err := syscall.Mmap(-1, 0, int(memSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	copy(mem[load:], payload)
	for i := load; i+3 <= load+uint64(len(payload)); i++ {
		if bytes.Equal(mem[i:i+3], []byte{0x0F, 0x01, 0xD9}) {
			copy(mem[i:], []byte{0xE7, hypercallPort, 0x90})
		}
	}
	region := kvmMemoryRegion{MemorySize: memSize, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vmfd, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		t.Fatalf("KVM_SET_USER_MEMORY_REGION: %v", err)
	}

	// Deny VM_HSAVE_PA (reads and writes) so it #GPs like on tamavisor.
	var deny byte
	filter := kvmMSRFilter{}
	filter.Ranges[0] = kvmMSRFilterRange{Flags: 3, Nmsrs: 1, Base: 0xC0010117, Bitmap: &deny}
	if _, err := ioctl(vmfd, kvmSetMSRFilter, uintptr(unsafe.Pointer(&filter))); err != nil {
		t.Logf("KVM_X86_SET_MSR_FILTER: %v (hsave-rdmsr may fail)", err)
	}

	cpufd, err := ioctl(vmfd, kvmCreateVCPU, 0)
	if err != nil {
		t.Fatalf("KVM_CREATE_VCPU: %v", err)
	}
	defer syscall.Close(int(cpufd))
	runSize, err := ioctl(kvm.Fd(), kvmGetVCPUMmapSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	run, err := syscall.Mmap(int(cpufd), 0, int(runSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(run)

	setCPUID(t, kvm, cpufd)
	setInitialState(t, cpufd, mode, entry, mem)

	var res guestResult
	res.reports = map[uint64]uint64{}
	var out strings.Builder
	bus := &devices.Bus{}
	bus.Register(0x3F8, devices.UARTPorts, devices.NewUART16550(0x3F8, &out))
	bus.Register(devices.DebugPortAddr, 1, devices.NewDebugPort(&out))

	for exits := 0; exits < 200000; exits++ {
		if _, err := ioctl(cpufd, kvmRun, 0); err != nil && err != syscall.EINTR {
			t.Fatalf("KVM_RUN: %v", err)
		}
		switch reason := le.Uint32(run[8:]); reason {
		case kvmExitIO:
			dir, size := run[32], run[33]
			port := le.Uint16(run[34:])
			count := le.Uint32(run[36:])
			off := le.Uint64(run[40:])
			if port == hypercallPort && dir == 1 {
				if done := hypercall(t, cpufd, mem, &res, &out); done {
					res.output = out.String()
					return res
				}
				continue
			}
			for i := uint32(0); i < count; i++ {
				data := run[off+uint64(i)*uint64(size):]
				if dir == 1 {
					var v uint32
					for j := uint8(0); j < size; j++ {
						v |= uint32(data[j]) << (8 * j)
					}
					bus.Out(port, size, v)
				} else {
					v := bus.In(port, size)
					for j := uint8(0); j < size; j++ {
						data[j] = byte(v >> (8 * j))
					}
				}
			}
		case kvmExitHLT:
			// HLT returns (no interrupt source in this stand-in).
		case kvmExitMMIO:
			res.stopped = fmt.Sprintf("nested page fault at %#x", le.Uint64(run[32:]))
			res.output = out.String()
			return res
		case kvmExitShutdown:
			res.stopped = "triple fault"
			res.output = out.String()
			return res
		default:
			var regs kvmRegs
			ioctl(cpufd, kvmGetRegs, uintptr(unsafe.Pointer(&regs)))
			res.stopped = fmt.Sprintf("exit reason %d at rip %#x", reason, regs.RIP)
			res.output = out.String()
			return res
		}
	}
	res.stopped = "too many exits"
	res.output = out.String()
	return res
}

func hypercall(t *testing.T, cpufd uintptr, mem []byte, res *guestResult, out *strings.Builder) (done bool) {
	var regs kvmRegs
	if _, err := ioctl(cpufd, kvmGetRegs, uintptr(unsafe.Pointer(&regs))); err != nil {
		t.Fatal(err)
	}
	var ret int64
	switch regs.RAX {
	case 0:
		ret = 1
	case 1:
		gpa, n := regs.RBX, regs.RCX
		if n > 4096 || gpa > uint64(len(mem)) || n > uint64(len(mem))-gpa {
			ret = -2
		} else {
			out.Write(mem[gpa : gpa+n])
			ret = int64(n)
		}
	case 2:
		res.exited, res.status = true, regs.RBX
		if regs.RBX != 0 && regs.RSP+64 <= uint64(len(mem)) {
			t.Logf("EXIT %d: regs %+v, stack % x", regs.RBX, regs, mem[regs.RSP:regs.RSP+64])
		}
		return true
	case 3:
		res.reports[regs.RBX] = regs.RCX
	default:
		ret = -1
	}
	regs.RAX = uint64(ret)
	if _, err := ioctl(cpufd, kvmSetRegs, uintptr(unsafe.Pointer(&regs))); err != nil {
		t.Fatal(err)
	}
	return false
}

func setCPUID(t *testing.T, kvm *os.File, cpufd uintptr) {
	var c kvmCPUID
	c.Nent = uint32(len(c.Entries))
	if _, err := ioctl(kvm.Fd(), kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&c))); err != nil {
		t.Fatalf("KVM_GET_SUPPORTED_CPUID: %v", err)
	}
	var n uint32
	for _, e := range c.Entries[:c.Nent] {
		switch {
		case e.Function&0xFFFF0000 == 0x40000000, e.Function == 0x8000000A:
			continue
		case e.Function == 1:
			e.ECX |= 1 << 31
		case e.Function == 0x80000001:
			e.ECX &^= 1 << 2
		}
		c.Entries[n] = e
		n++
	}
	if int(n) >= len(c.Entries) {
		t.Fatal("no room for the signature leaf")
	}
	sig := []byte("TamaVisorHV\x00")
	le := binary.LittleEndian
	c.Entries[n] = kvmCPUIDEntry{Function: 0x40000000, EAX: 0x40000000,
		EBX: le.Uint32(sig[0:]), ECX: le.Uint32(sig[4:]), EDX: le.Uint32(sig[8:])}
	c.Nent = n + 1
	if _, err := ioctl(cpufd, kvmSetCPUID2, uintptr(unsafe.Pointer(&c))); err != nil {
		t.Fatalf("KVM_SET_CPUID2: %v", err)
	}
}

func setInitialState(t *testing.T, cpufd uintptr, mode uint32, entry uint64, mem []byte) {
	var s kvmSregs
	if _, err := ioctl(cpufd, kvmGetSregs, uintptr(unsafe.Pointer(&s))); err != nil {
		t.Fatal(err)
	}
	seg := func(sel uint16, typ uint8, limit uint32, db, l, g uint8) kvmSegment {
		return kvmSegment{Limit: limit, Selector: sel, Type: typ, Present: 1, S: 1, DB: db, L: l, G: g}
	}
	const cr0PE, cr0ET, cr0PG = 1, 0x10, 0x80000000
	s.CR0 = cr0ET
	s.CR4, s.EFER = 0, 0
	s.TR = kvmSegment{Limit: 0xFFFF, Type: 11, Present: 1}
	s.LDT = kvmSegment{Type: 2, Present: 1, Limit: 0xFFFF}
	s.IDT = kvmDtable{Limit: 0x3FF}
	switch mode {
	case 16:
		code := seg(0, 0xB, 0xFFFF, 0, 0, 0)
		data := seg(0, 0x3, 0xFFFF, 0, 0, 0)
		s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = code, data, data, data, data, data
	case 32:
		code := seg(0x08, 0xB, 0xFFFFFFFF, 1, 0, 1)
		data := seg(0x10, 0x3, 0xFFFFFFFF, 1, 0, 1)
		s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = code, data, data, data, data, data
		s.CR0 |= cr0PE
		s.IDT = kvmDtable{}
	case 64:
		le := binary.LittleEndian
		le.PutUint64(mem[0x500:], 0)
		le.PutUint64(mem[0x508:], 0x00AF9A000000FFFF)
		le.PutUint64(mem[0x510:], 0x00CF92000000FFFF)
		le.PutUint64(mem[0x1000:], 0x2000|3) // PML4 -> PDPT
		le.PutUint64(mem[0x2000:], 0x3000|3) // PDPT -> PD
		for i := uint64(0); i < 512; i++ {
			le.PutUint64(mem[0x3000+8*i:], i<<21|0x83)
		}
		code := seg(0x08, 0xB, 0xFFFFFFFF, 0, 1, 1)
		data := seg(0x10, 0x3, 0xFFFFFFFF, 1, 0, 1)
		s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = code, data, data, data, data, data
		s.GDT = kvmDtable{Base: 0x500, Limit: 23}
		s.IDT = kvmDtable{}
		s.CR3, s.CR4 = 0x1000, 0x20
		s.CR0 |= cr0PE | cr0PG
		s.EFER = 0x500
	}
	if _, err := ioctl(cpufd, kvmSetSregs, uintptr(unsafe.Pointer(&s))); err != nil {
		t.Fatalf("KVM_SET_SREGS: %v", err)
	}
	regs := kvmRegs{RIP: entry, RFLAGS: 2}
	if _, err := ioctl(cpufd, kvmSetRegs, uintptr(unsafe.Pointer(&regs))); err != nil {
		t.Fatal(err)
	}
}

func TestGuestsUnderKVM(t *testing.T) {
	kvm, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no KVM: %v", err)
	}
	defer kvm.Close()
	if v, err := ioctl(kvm.Fd(), kvmGetAPIVersion, 0); err != nil || v != 12 {
		t.Skipf("KVM API version %d, %v", v, err)
	}

	type want struct {
		status  uint64
		stopped string // prefix of the stop reason, "" for an EXIT
		output  []string
	}
	cases := map[string]want{
		"real16": {0, "", []string{"real16: start\n", "real16: hello via CONSOLE_WRITE\n", "real16: PASS\n"}},
		"prot32": {0, "", []string{"prot32: start\n", "prot32: hello via CONSOLE_WRITE\n", "prot32: PASS\n"}},
		"long64": {0, "", []string{"long64: start\n", "long64: hello via CONSOLE_WRITE\n", "long64: PASS\n"}},
		"demo":   {0, "", []string{"demo: hello from a guest running under tamavisor\n", "demo: hypervisor: TamaVisorHV\n", "demo: hypercall ABI version 1\n"}},
		"alive":  {0, "", []string{"alive: ok\n"}},
		"npf":    {0, "nested page fault at 0x200000", []string{"npf: touching unbacked memory\n"}},
		"triple": {0, "triple fault", []string{"triple: faulting\n"}},
		"bench":  {0, "", []string{"bench: done\n"}},
	}
	ran := 0
	for name, w := range cases {
		img, err := os.ReadFile(filepath.Join("build", name+".bin"))
		if err != nil {
			continue
		}
		ran++
		t.Run(name, func(t *testing.T) {
			res := runUnderKVM(t, kvm, img)
			t.Logf("output:\n%s", res.output)
			if w.stopped != "" {
				if !strings.HasPrefix(res.stopped, w.stopped) {
					t.Errorf("stopped %q (exited %v status %d), want %q", res.stopped, res.exited, res.status, w.stopped)
				}
			} else if !res.exited || res.status != w.status {
				t.Errorf("exited %v status %d stopped %q, want EXIT %d", res.exited, res.status, res.stopped, w.status)
			}
			for _, s := range w.output {
				if !strings.Contains(res.output, s) {
					t.Errorf("output lacks %q", s)
				}
			}
			if name == "bench" {
				t.Logf("reports: %v", res.reports)
				for id := uint64(0); id <= 4; id++ {
					if _, ok := res.reports[id]; !ok {
						t.Errorf("no BENCH_REPORT id %d", id)
					}
				}
				if res.reports[0] != 2000 {
					t.Errorf("N = %d, want 2000", res.reports[0])
				}
			}
		})
	}
	if ran == 0 {
		t.Skip("no guests/build/*.bin: build them with the guests.mk rules (GUESTS_BIN) first")
	}
}
