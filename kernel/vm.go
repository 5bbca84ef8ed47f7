package kernel

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"
	"unsafe"

	"tamavisor/kernel/devices"
	"tamavisor/kernel/event"
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// Runner is the world switch: it enters the guest of a VMCB and returns at
// its next #VMEXIT. svm.Host implements it on hardware; tests script exits.
type Runner interface {
	// Run enters the guest: fx is its XSAVE area (its FXSAVE image when
	// Platform.HostXCR0 is 0), *xcr0 the guest's XCR0, updated at the exit.
	Run(vmcb uint64, regs *svm.Regs, fx *svm.FXArea, xcr0 *uint64)
}

// Platform is what the kernel needs from the machine.
type Platform struct {
	Mem      HostMemory
	Pool     *PhysPool
	Runner   Runner
	Features svm.Features
	ASIDs    *svm.ASIDs
	CPUID    svm.CPUIDFunc // the host's CPUID, filtered into each VM's model
	TSC      func() uint64 // the host's TSC
	Console  io.Writer     // hypervisor console: guest UART output and reports
	// GuestOutput, when set, takes the guests' console output instead of
	// Console (io.Discard for the random guests of the hostile runs).
	GuestOutput io.Writer
	Input       func() (byte, bool) // console input for the guest UART, if any

	// Idle is called while the monitor waits for console input; it
	// returns false when no input can come (tests).
	Idle func() bool
	// ControlIn and ControlOut are the control channel (a second serial
	// port): command lines in, answers out. Optional.
	ControlIn  func() (byte, bool)
	ControlOut io.Writer
	// ServiceInterval is how often, in TSC cycles, the run loop polls
	// input and the control channel between exits.
	ServiceInterval uint64
	// ServiceEvery is how many exits pass between looks at that clock
	// (reading the TSC is not free under emulation); 0 means 32.
	ServiceEvery uint64
	TSCHz        uint64

	// Store is the snapshot store on the snapshot disk, or nil.
	Store *snapshot.Store
	// SnapshotKey, if set, authenticates snapshots (HMAC-SHA256).
	SnapshotKey []byte
	// Now returns the wall time in Unix nanoseconds, for snapshot headers.
	Now func() int64
	// IBPB issues an indirect branch prediction barrier on the host, or
	// is nil where the CPU has none. It runs before the CPU switches to
	// another VM than the last one (speculation hygiene: a guest cannot
	// steer another's indirect branches), and for a guest's PRED_CMD.
	IBPB   func()
	lastVM *VM

	// MXCSRMask is the host CPU's MXCSR_MASK: a restored MXCSR with other
	// bits set would fault in FXRSTOR/XRSTOR. 0 means the architectural
	// default 0xFFBF.
	MXCSRMask uint32

	// operatorGen is the generation of the newest snapshot the operator
	// took or restored from in this boot, which guests may not overwrite.
	operatorGen uint64

	// HostXCR0 is the host's XCR0 when the world switch moves guests'
	// XSAVE state (svm.Host.XCR0), else 0: guests then have no XSAVE/AVX.
	HostXCR0 uint64
	// Timer is the host preemption timer, or nil (tests): without it a
	// guest that never exits is not interrupted, and a halted guest
	// resumes at once.
	Timer HostTimer
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
	// StopQuit: quit from the monitor or the control channel.
	StopQuit
	// StopSuspended: saved to disk by a SNAPSHOT hypercall asking to
	// power off.
	StopSuspended
	// StopBudget: the VM used up its time or exit budget (SetBudget).
	StopBudget
)

// Stop classes: how a VM ended, as one word for reports and the hostile
// guest suite (docs/security.md). ClassCrash is a hypervisor bug: a panic
// while handling an exit, recovered so that the hypervisor stays up.
const (
	ClassExited          = "exited"           // EXIT hypercall
	ClassPowerOff        = "poweroff"         // ACPI S5
	ClassReset           = "reset"            // RST_CNT, i8042, triple fault with reboot
	ClassQuit            = "quit"             // monitor or control channel
	ClassSuspended       = "suspended"        // SNAPSHOT hypercall with power-off
	ClassBudget          = "budget"           // time or exit budget used up
	ClassTripleFault     = "triple-fault"     // shutdown
	ClassOutsideRAM      = "outside-ram"      // nested page fault outside RAM and devices
	ClassNotEmulated     = "not-emulated"     // MMIO or port access form not emulated
	ClassUndecodable     = "undecodable"      // instruction bytes unreadable or invalid
	ClassDeadHalt        = "dead-halt"        // HLT with interrupts disabled
	ClassMachineCheck    = "machine-check"    // #MC in the guest
	ClassInvalidState    = "invalid-state"    // VMRUN refused the state
	ClassUnexpectedExit  = "unexpected-exit"  // an exit no handler exists for
	ClassCrash           = "hypervisor-error" // recovered panic: a bug
	ClassSnapshotCorrupt = "snapshot-corrupt" // page data of a lazy restore failed its check (lazy.go)
)

// Stop is how a VM ended.
type Stop struct {
	Kind   StopKind
	Class  string // one of the Class constants
	Status int    // EXIT status, for StopExited
	Reason string // what happened, for StopFault
}

func (s *Stop) String() string {
	switch s.Kind {
	case StopExited:
		if s.Reason != "" {
			return fmt.Sprintf("%s (exit status %d)", s.Reason, s.Status)
		}
		return fmt.Sprintf("exited with status %d", s.Status)
	case StopQuit, StopSuspended:
		return s.Reason
	}
	return "stopped: " + s.Reason
}

// VM is one virtual machine with one vCPU.
type VM struct {
	Name string
	// ID is the VM's identity, a random (version 4) UUID made when it is
	// created and kept across save and restore (the snapshot header's
	// vm_id).
	ID    [16]byte
	plat  *Platform
	Mem   GuestMemory
	NPT   *svm.NPT
	CPUID *CPUIDModel
	Bus   devices.Bus     // port I/O
	MMIO  devices.MMIOBus // memory-mapped devices (never mapped in the NPT)
	PC    *PC             // interrupt controllers, timers, RTC, legacy ports
	UART  *devices.UART16550
	Debug *devices.DebugPort
	VCPU  *VCPU
	ASID  uint32

	// console filters guest output to Platform.Console (console.go).
	console *GuestConsole

	// BenchReports holds BENCH_REPORT hypercall values by id.
	BenchReports map[uint64]uint64

	// LastSave describes the last snapshot saved, Saves the saves of this
	// VM in order (the first maxSaveLog).
	LastSave SaveStats
	Saves    []SaveStats

	// IRQsInjected counts interrupts injected; MMIOExits emulated MMIO
	// accesses.
	IRQsInjected, MMIOExits uint64

	// clock holds the VM's timers (device timers), in VM time.
	clock *event.Queue
	// exitBudget, when not 0, is the exit count at which the VM stops
	// (SetBudget); budgetTimer stops it at the end of its time budget.
	exitBudget  uint64
	budgetTimer *event.Timer

	// track follows guest writes to RAM; live is the save running beside
	// the guest, or nil (livesave.go).
	track ramTracker
	live  *liveSave
	// lazyFill is the lazy restore the VM came from (lazy.go), or nil.
	lazyFill *lazyRAM
	// liveResult is the outcome of the guest's last live save, for
	// SNAPSHOT_WAIT (nil: none finished since the last wait).
	liveResult *error

	pages  pageTracker
	ranges []span // pool ranges to free (RAM, permission maps)
	stop   *Stop

	pause        pauseReason
	nextService  uint64 // TSC of the next service() between exits
	input        []byte // console input waiting for the guest UART
	inputDropped uint64
	ctlLine      []byte // control-channel line being received
}

// NewVM builds a VM for img: RAM from the pool mapped at GPA 0 through a
// fresh NPT, the image loaded, a VMCB with tamavisor's intercepts, and the
// fixed devices on the port bus.
func NewVM(p *Platform, img *Image) (*VM, error) {
	vm, err := newVM(p, img.Name, img.MemSize, p.cpuidModel())
	if err != nil {
		return nil, err
	}
	if err = img.load(&vm.Mem, &vm.VCPU.vmcb.State); err != nil {
		vm.Destroy()
		return nil, err
	}
	return vm, nil
}

// newVM builds an empty VM: zeroed RAM of memSize bytes at GPA 0, devices
// in their reset state, a vCPU with a zero state save area. On error it
// gives back everything it took.
func newVM(p *Platform, name string, memSize uint64, model *CPUIDModel) (vm *VM, err error) {
	return buildVM(p, name, memSize, model, false)
}

// buildVM is newVM; uncleared: guest RAM is not cleared and not mapped in
// the nested page table (a lazy restore clears and maps each page before
// it is used, lazy.go).
func buildVM(p *Platform, name string, memSize uint64, model *CPUIDModel, uncleared bool) (vm *VM, err error) {
	vm = &VM{Name: name, plat: p, pages: pageTracker{pool: p.Pool}, BenchReports: map[uint64]uint64{}, CPUID: model}
	vm.clock = event.NewQueue(vm.now)
	if _, err := rand.Read(vm.ID[:]); err != nil {
		return nil, fmt.Errorf("VM identity: %w", err)
	}
	vm.ID[6] = vm.ID[6]&0x0f | 0x40 // RFC 9562: version 4 (random)
	vm.ID[8] = vm.ID[8]&0x3f | 0x80 // variant 10
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
	alloc := p.Pool.Alloc
	if uncleared {
		alloc = p.Pool.AllocUncleared
	}
	ram, err := alloc(memSize, svm.Size2M)
	if err != nil {
		return vm, fmt.Errorf("guest RAM (%d KiB): %w", memSize>>10, err)
	}
	vm.ranges = append(vm.ranges, span{ram, ram + memSize})
	vm.Mem = GuestMemory{HostBase: ram, Size: memSize, ram: p.Mem.Bytes(ram, memSize)}
	if vm.NPT, err = svm.NewNPT(&vm.pages); err != nil {
		return vm, err
	}
	if !uncleared {
		if err = vm.NPT.Map(0, ram, memSize, svm.PermRWX); err != nil {
			return vm, err
		}
	}
	// Guest output reaches the console through one filter (console.go).
	out := p.Console
	if p.GuestOutput != nil {
		out = p.GuestOutput
	}
	vm.console = NewGuestConsole(out)
	vm.UART = devices.NewUART16550(COM1Base, vm.console)
	vm.Debug = devices.NewDebugPort(vm.console)
	if err = vm.Bus.Register(COM1Base, COM1Ports, vm.UART); err != nil {
		return vm, err
	}
	if err = vm.Bus.Register(DebugPort, 1, vm.Debug); err != nil {
		return vm, err
	}
	if vm.VCPU, err = newVCPU(vm); err != nil {
		return vm, err
	}
	// After the vCPU: the devices read VM time, the guest's TSC.
	if err = vm.newPC(); err != nil {
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
	if lz := vm.lazyFill; lz != nil {
		lz.l.Close() // no read into guest RAM in flight
	}
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

// serviceEvery is the default of Platform.ServiceEvery.
const serviceEvery = 32

// Run runs the VM until it stops. A bug that panics in an exit handler
// stops this VM with a report instead of taking the hypervisor down.
func (vm *VM) Run() (stop *Stop) {
	defer func() {
		if r := recover(); r != nil {
			vm.stop = &Stop{Kind: StopFault, Class: ClassCrash, Reason: fmt.Sprintf("hypervisor error handling exit: %v", r)}
			stop = vm.stop
		}
		// A save in progress is of the VM at its request: it completes
		// however the VM ended since.
		vm.live.finish()
	}()
	v := vm.VCPU
	every := vm.plat.ServiceEvery
	if every == 0 {
		every = serviceEvery
	}
	for vm.stop == nil {
		if v.halted {
			vm.idle()
			if vm.stop != nil {
				break
			}
		}
		v.deliverInterrupt()
		if vm.plat.lastVM != vm {
			if vm.plat.IBPB != nil {
				vm.plat.IBPB()
			}
			vm.plat.lastVM = vm
		}
		vm.armPreemption()
		vm.plat.Runner.Run(v.vmcbPA, &v.Regs, v.fx, &v.xcr0)
		v.checkXCR0()
		v.Exits++
		v.handleExit()
		if vm.exitBudget != 0 && v.Exits >= vm.exitBudget {
			vm.stopBudget("exit budget of %d exits used up at RIP %#x", vm.exitBudget, v.vmcb.State.RIP)
		}
		vm.clock.Run()
		// Reading the TSC is not free under emulation: look at the
		// clock every serviceEvery exits only, or when the host timer
		// took the CPU back (it fires for the service, among others).
		if vm.pause != pauseNone || v.preempted || v.Exits%every == 0 && vm.plat.TSC() >= vm.nextService {
			v.preempted = false
			if vm.plat.TSC() >= vm.nextService || vm.pause != pauseNone {
				vm.service()
			}
		}
	}
	return vm.stop
}

// SetBudget limits the VM's run: it stops (StopBudget) once d of VM time
// has passed from now (0: no time limit) or after exits exits in all (0:
// no limit). The time budget is a timer on the VM's event queue, so the
// host timer takes the CPU back for it even from a guest that never exits.
func (vm *VM) SetBudget(d time.Duration, exits uint64) error {
	vm.exitBudget = exits
	if vm.budgetTimer != nil {
		vm.budgetTimer.Stop()
	}
	if d <= 0 {
		return nil
	}
	if vm.plat.TSCHz == 0 {
		return errors.New("a time budget needs the TSC's rate, which is not known (calibration failed)")
	}
	start := vm.now()
	vm.budgetTimer = vm.clock.NewTimer(func(now int64) {
		vm.stopBudget("time budget of %v used up (%d exits) at RIP %#x", d, vm.VCPU.Exits, vm.VCPU.vmcb.State.RIP)
	})
	vm.budgetTimer.Arm(start + min(int64(d), event.Never-1-start)) // no overflow past Never
	return nil
}

func (vm *VM) stopBudget(f string, a ...any) {
	if vm.stop == nil {
		vm.stop = &Stop{Kind: StopBudget, Class: ClassBudget, Reason: fmt.Sprintf(f, a...)}
	}
}

// Stopped reports how the VM ended, or nil while it can run.
func (vm *VM) Stopped() *Stop { return vm.stop }

func (vm *VM) stopFault(class string, f string, a ...any) {
	if vm.stop == nil {
		vm.stop = &Stop{Kind: StopFault, Class: class, Reason: fmt.Sprintf(f, a...)}
	}
}

// vmcbAt views host memory at pa as a VMCB.
func vmcbAt(m HostMemory, pa uint64) *svm.VMCB {
	return (*svm.VMCB)(unsafe.Pointer(&m.Bytes(pa, svm.PageSize)[0]))
}
