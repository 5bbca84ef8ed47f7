package kernel

import (
	"fmt"
	"io"
	"unsafe"

	"tamavisor/kernel/devices"
	"tamavisor/svm"
)

// Runner is the world switch: it enters the guest of a VMCB and returns at
// its next #VMEXIT. svm.Host implements it on hardware; tests script exits.
type Runner interface {
	Run(vmcb uint64, regs *svm.Regs, fx *svm.FXArea)
}

// Platform is what the kernel needs from the machine.
type Platform struct {
	Mem      HostMemory
	Pool     *PhysPool
	Runner   Runner
	Features svm.Features
	ASIDs    *svm.ASIDs
	CPUID    svm.CPUIDFunc       // the host's CPUID, filtered into each VM's model
	TSC      func() uint64       // the host's TSC
	Console  io.Writer           // hypervisor console: guest UART output and reports
	Input    func() (byte, bool) // console input for the guest UART, if any
}

// Fixed guest devices (docs/guest-abi.md, "Devices").
const (
	COM1Base  = 0x3f8
	COM1Ports = 8
	DebugPort = 0xe9
)

// StopKind says why a VM stopped.
type StopKind int

const (
	// StopExited: the guest called the EXIT hypercall.
	StopExited StopKind = iota
	// StopFault: the hypervisor stopped a misbehaving guest.
	StopFault
)

// Stop is how a VM ended.
type Stop struct {
	Kind   StopKind
	Status int    // EXIT status, for StopExited
	Reason string // what happened, for StopFault
}

func (s *Stop) String() string {
	if s.Kind == StopExited {
		return fmt.Sprintf("exited with status %d", s.Status)
	}
	return "stopped: " + s.Reason
}

// VM is one virtual machine with one vCPU.
type VM struct {
	Name  string
	plat  *Platform
	Mem   GuestMemory
	NPT   *svm.NPT
	CPUID *CPUIDModel
	Bus   devices.Bus
	UART  *devices.UART16550
	VCPU  *VCPU
	ASID  uint32

	// BenchReports holds BENCH_REPORT hypercall values by id.
	BenchReports map[uint64]uint64

	pages  pageTracker
	ranges []span // pool ranges to free (RAM, permission maps)
	stop   *Stop
}

// NewVM builds a VM for img: RAM from the pool mapped at GPA 0 through a
// fresh NPT, the image loaded, a VMCB with tamavisor's intercepts, and the
// fixed devices on the port bus.
func NewVM(p *Platform, img *Image) (vm *VM, err error) {
	vm = &VM{Name: img.Name, plat: p, pages: pageTracker{pool: p.Pool}, BenchReports: map[uint64]uint64{}}
	defer func() {
		if err != nil {
			vm.Destroy()
			vm = nil
		}
	}()
	// Every error return below hands vm to the deferred cleanup, which
	// gives back what was allocated so far.
	if vm.ASID, err = p.ASIDs.Alloc(); err != nil {
		return vm, err
	}
	ram, err := vm.alloc(img.MemSize, svm.Size2M)
	if err != nil {
		return vm, fmt.Errorf("guest RAM (%d KiB): %w", img.MemSize>>10, err)
	}
	vm.Mem = GuestMemory{HostBase: ram, Size: img.MemSize, ram: p.Mem.Bytes(ram, img.MemSize)}
	if vm.NPT, err = svm.NewNPT(&vm.pages); err != nil {
		return vm, err
	}
	if err = vm.NPT.Map(0, ram, img.MemSize, svm.PermRWX); err != nil {
		return vm, err
	}
	vm.CPUID = NewCPUIDModel(p.CPUID)
	vm.UART = devices.NewUART16550(COM1Base, p.Console)
	if err = vm.Bus.Register(COM1Base, COM1Ports, vm.UART); err != nil {
		return vm, err
	}
	if err = vm.Bus.Register(DebugPort, 1, devices.NewDebugPort(p.Console)); err != nil {
		return vm, err
	}
	if vm.VCPU, err = newVCPU(vm); err != nil {
		return vm, err
	}
	if err = img.load(&vm.Mem, &vm.VCPU.vmcb.State); err != nil {
		return vm, err
	}
	return vm, nil
}

func (vm *VM) alloc(size, align uint64) (uint64, error) {
	pa, err := vm.plat.Pool.Alloc(size, align)
	if err == nil {
		vm.ranges = append(vm.ranges, span{pa, pa + size})
	}
	return pa, err
}

// Destroy returns the VM's memory and ASID.
func (vm *VM) Destroy() {
	for _, r := range vm.ranges {
		vm.plat.Pool.Free(r.start, r.end-r.start)
	}
	vm.ranges = nil
	vm.pages.release()
	if vm.ASID != 0 {
		vm.plat.ASIDs.Free(vm.ASID)
		vm.ASID = 0
	}
}

// Run runs the VM until it stops. A bug that panics in an exit handler
// stops this VM with a report instead of taking the hypervisor down.
func (vm *VM) Run() (stop *Stop) {
	defer func() {
		if r := recover(); r != nil {
			vm.stop = &Stop{Kind: StopFault, Reason: fmt.Sprintf("hypervisor error handling exit: %v", r)}
			stop = vm.stop
		}
	}()
	v := vm.VCPU
	for vm.stop == nil {
		vm.plat.Runner.Run(v.vmcbPA, &v.Regs, v.fx)
		v.Exits++
		v.handleExit()
	}
	return vm.stop
}

// Stopped reports how the VM ended, or nil while it can run.
func (vm *VM) Stopped() *Stop { return vm.stop }

func (vm *VM) stopFault(f string, a ...any) {
	if vm.stop == nil {
		vm.stop = &Stop{Kind: StopFault, Reason: fmt.Sprintf(f, a...)}
	}
}

// vmcbAt views host memory at pa as a VMCB.
func vmcbAt(m HostMemory, pa uint64) *svm.VMCB {
	return (*svm.VMCB)(unsafe.Pointer(&m.Bytes(pa, svm.PageSize)[0]))
}
