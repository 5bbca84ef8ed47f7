package kernel

// MMIO emulation through scripted nested page faults: the fault's GPA
// (EXITINFO2) picks the device, the instruction at RIP says what the
// access does; the instruction's own address operand is never looked at.

import (
	"strings"
	"testing"

	"tamavisor/kernel/devices/ioapic"
	"tamavisor/kernel/devices/lapic"
	"tamavisor/svm"
)

// Instructions with a memory operand, as a guest driver uses them.
var (
	encStoreECX  = []byte{0x89, 0x0a}                         // mov [rdx], ecx
	encLoadEAX   = []byte{0x8b, 0x87, 0x20, 0x00, 0x00, 0x00} // mov eax, [rdi+0x20]
	encLoadR8D   = []byte{0x44, 0x8b, 0x07}                   // mov r8d, [rdi]
	encLoadAX    = []byte{0x66, 0x8b, 0x07}                   // mov ax, [rdi]
	encXchgECX   = []byte{0x87, 0x0a}                         // xchg [rdx], ecx
	encStoreZero = []byte{0xc7, 0x02, 0x00, 0x00, 0x00, 0x00} // mov dword [rdx], 0
	encRepMovsd  = []byte{0xf3, 0xa5}                         // rep movsd
)

const (
	junkRIP       = 0xbad // NextRIP of an NPF: not to be used
	regJunkHigh   = 0xdeadbeef_00000000
	npfWriteInfo1 = svm.NPFWrite | svm.NPFFinalAddr
)

// mmioStep is a nested page fault on gpa by the instruction enc at RIP;
// setup prepares registers. NextRIP is junk: the emulator must advance RIP
// by the decoded length. An interrupt shadow is set, which the emulated
// instruction ends.
func (e *env) mmioStep(gpa uint64, enc []byte, setup func(v *svm.VMCB, r *svm.Regs)) step {
	return func(v *svm.VMCB, r *svm.Regs) {
		e.code(v.State.RIP, enc...)
		if setup != nil {
			setup(v, r)
		}
		v.Control.ExitCode = uint64(svm.ExitNPF)
		v.Control.ExitInfo1 = npfWriteInfo1
		v.Control.ExitInfo2 = gpa
		v.Control.NextRIP = junkRIP
		v.Control.InterruptShadow = 1
	}
}

// mmioWrite is a 32-bit store of val to gpa (mov [rdx], ecx), with junk in
// RCX's upper half and an RDX that is not gpa.
func (e *env) mmioWrite(gpa uint64, val uint32) step {
	return e.mmioStep(gpa, encStoreECX, func(v *svm.VMCB, r *svm.Regs) {
		r.RCX = regJunkHigh | uint64(val)
		r.RDX = 0x1234
	})
}

func TestMMIOStoreReachesLAPIC(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		es := e.resume(
			e.mmioWrite(lapic.DefaultBase+lapic.SVR, 0x1ff),
			e.mmioWrite(lapic.DefaultBase+lapic.TPR, 0x20),
			e.mmioWrite(ioapic.DefaultBase+ioapic.IOREGSEL, 0x18),
		)
		if got := vm.PC.LAPIC.Read(lapic.SVR, 4); got != 0x1ff {
			t.Errorf("LAPIC SVR %#x after the store, want 0x1ff", got)
		}
		if got := vm.PC.LAPIC.Read(lapic.TPR, 4); got != 0x20 {
			t.Errorf("LAPIC TPR %#x after the store, want 0x20", got)
		}
		if got := vm.PC.IOAPIC.Read(ioapic.IOREGSEL, 4); got != 0x18 {
			t.Errorf("IOAPIC IOREGSEL %#x after the store, want 0x18", got)
		}
		for i := 1; i < len(es); i++ {
			in, out := &es[i-1], &es[i]
			if got, want := out.vmcb.State.RIP, in.vmcb.State.RIP+2; got != want {
				t.Errorf("store %d: RIP %#x, want %#x (2-byte instruction)", i, got, want)
			}
			if out.vmcb.Control.InterruptShadow != 0 {
				t.Errorf("store %d: interrupt shadow kept", i)
			}
			if out.regs.RDX != 0x1234 || out.regs.RCX>>32 != regJunkHigh>>32 {
				t.Errorf("store %d: source registers changed: RCX %#x RDX %#x", i, out.regs.RCX, out.regs.RDX)
			}
		}
		if vm.MMIOExits != 3 {
			t.Errorf("MMIOExits = %d, want 3", vm.MMIOExits)
		}
	})
}

func TestMMIOLoadWidths(t *testing.T) {
	bothNRIP(t, func(t *testing.T, e *env) {
		vm := e.boot(Mode64)
		vm.PC.LAPIC.Write(lapic.TPR, 4, 0x30)
		const junk = 0x11223344_55667788
		verValue := uint64(0x14 | 5<<16) // version 0x14, six LVT entries
		es := e.resume(
			// mov eax, [rdi+0x20] on VER: a 32-bit result clears RAX's upper half.
			e.mmioStep(lapic.DefaultBase+lapic.VER, encLoadEAX, func(v *svm.VMCB, r *svm.Regs) {
				v.State.RAX = junk
				r.RDI = 0x99
			}),
			// mov r8d, [rdi] on TPR: REX.R picks R8.
			e.mmioStep(lapic.DefaultBase+lapic.TPR, encLoadR8D, func(v *svm.VMCB, r *svm.Regs) {
				r.R8 = junk
				v.State.RAX = junk
			}),
			// mov ax, [rdi]: a 16-bit load keeps RAX's bits 63:16 (the LAPIC
			// reads 0 for an access that is not 32 bits).
			e.mmioStep(lapic.DefaultBase+lapic.TPR, encLoadAX, func(v *svm.VMCB, r *svm.Regs) {
				v.State.RAX = junk
			}),
			// xchg [rdx], ecx on TPR: the old value to ECX, the new one to TPR.
			e.mmioStep(lapic.DefaultBase+lapic.TPR, encXchgECX, func(v *svm.VMCB, r *svm.Regs) {
				r.RCX = regJunkHigh | 0x40
			}),
		)
		if got := es[1].vmcb.State.RAX; got != verValue {
			t.Errorf("mov eax, [VER]: RAX %#x, want %#x (upper half cleared)", got, verValue)
		}
		if got, want := es[1].vmcb.State.RIP, es[0].vmcb.State.RIP+6; got != want {
			t.Errorf("mov eax, [rdi+0x20]: RIP %#x, want %#x", got, want)
		}
		if got := es[2].regs.R8; got != 0x30 {
			t.Errorf("mov r8d, [TPR]: R8 %#x, want 0x30", got)
		}
		if got := es[2].vmcb.State.RAX; got != junk {
			t.Errorf("mov r8d, [TPR]: RAX changed to %#x", got)
		}
		if got, want := es[2].vmcb.State.RIP, es[1].vmcb.State.RIP+3; got != want {
			t.Errorf("mov r8d, [rdi]: RIP %#x, want %#x", got, want)
		}
		if got, want := es[3].vmcb.State.RAX, uint64(junk&^0xffff); got != want {
			t.Errorf("mov ax, [TPR]: RAX %#x, want %#x (bits 63:16 kept)", got, want)
		}
		if got := es[4].regs.RCX; got != 0x30 {
			t.Errorf("xchg [TPR], ecx: RCX %#x, want the old TPR 0x30", got)
		}
		if got := vm.PC.LAPIC.Read(lapic.TPR, 4); got != 0x40 {
			t.Errorf("xchg [TPR], ecx: TPR %#x, want 0x40", got)
		}
		if got, want := es[4].vmcb.State.RIP, es[3].vmcb.State.RIP+2; got != want {
			t.Errorf("xchg: RIP %#x, want %#x", got, want)
		}
	})
}

// TestMMIODecodeAssists: with decode assists, the instruction comes from
// the VMCB's instruction bytes, not from guest memory (which the guest may
// have changed since, or which may not be readable).
func TestMMIODecodeAssists(t *testing.T) {
	f := featNRIP
	f.EDX |= svm.FeatDecodeAssists
	e := newEnv(t, f)
	vm := e.boot(Mode64)
	es := e.resume(e.mmioStep(lapic.DefaultBase+lapic.SVR, encRepMovsd, func(v *svm.VMCB, r *svm.Regs) {
		// The CPU fetched 15 bytes: the store, then whatever follows.
		v.Control.InsnBytes = [15]byte{0x89, 0x0a, 0xf3, 0xa5, 0x0f, 0x0b}
		v.Control.InsnLen = 15
		r.RCX = 0x1ff
	}))
	if got := vm.PC.LAPIC.Read(lapic.SVR, 4); got != 0x1ff {
		t.Errorf("SVR %#x: the instruction bytes of the VMCB were not used", got)
	}
	if got, want := es[1].vmcb.State.RIP, es[0].vmcb.State.RIP+2; got != want {
		t.Errorf("RIP %#x, want %#x", got, want)
	}
}

func TestMMIOStops(t *testing.T) {
	for _, c := range []struct {
		name string
		gpa  uint64
		enc  []byte
		want []string
	}{
		{"rep movsd", lapic.DefaultBase + lapic.SVR, encRepMovsd, []string{"not emulated", "movs", "0xfee000f0"}},
		{"vmmcall", lapic.DefaultBase + lapic.TPR, encVMMCALL, []string{"not emulated", "0f 01 d9"}},
		{"crossing the LAPIC page end", lapic.DefaultBase + lapic.Size - 2, encStoreECX, []string{"crosses", "0xfee00ffe"}},
		{"crossing the IOAPIC page end", ioapic.DefaultBase + ioapic.Size - 1, encStoreECX, []string{"crosses", "0xfec00fff"}},
		{"after the LAPIC", lapic.DefaultBase + lapic.Size, encStoreECX, []string{"nested page fault", "0xfee01000", "write"}},
		{"before the IOAPIC", ioapic.DefaultBase - 4, encStoreECX, []string{"nested page fault", "0xfebffffc"}},
		{"above 4 GiB", 0x1_0000_0000, encStoreECX, []string{"nested page fault", "0x100000000"}},
	} {
		for _, f := range []svm.Features{featNoNRIP, featNRIP} {
			e := newEnv(t, f)
			vm := e.boot(Mode64)
			stop := e.stopped(e.mmioStep(c.gpa, c.enc, func(v *svm.VMCB, r *svm.Regs) { r.RCX = 0x1ff }))
			if stop.Kind != StopFault {
				t.Errorf("%s (NRIP %v): %v", c.name, f.NRIP(), stop)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(strings.ToLower(stop.Reason), w) {
					t.Errorf("%s (NRIP %v): report %q lacks %q", c.name, f.NRIP(), stop.Reason, w)
				}
			}
			if got := vm.PC.LAPIC.Read(lapic.SVR, 4); got != 0xff {
				t.Errorf("%s: SVR %#x, the refused access reached the LAPIC", c.name, got)
			}
			if vm.MMIOExits != 0 {
				t.Errorf("%s: MMIOExits = %d", c.name, vm.MMIOExits)
			}
		}
	}
}

// TestMMIOFetchFails: without decode assists, an instruction that cannot
// be read through the guest's page tables stops the VM with a report.
func TestMMIOFetchFails(t *testing.T) {
	e := newEnv(t, featNoNRIP)
	e.boot(Mode64)
	stop := e.stopped(func(v *svm.VMCB, r *svm.Regs) {
		v.State.RIP = 0x80_0000_0000 // beyond the 1 GiB identity map
		v.Control.ExitCode = uint64(svm.ExitNPF)
		v.Control.ExitInfo1 = npfWriteInfo1
		v.Control.ExitInfo2 = lapic.DefaultBase + lapic.TPR
	})
	if stop.Kind != StopFault || !strings.Contains(stop.Reason, "cannot fetch") || !strings.Contains(stop.Reason, "0xfee00080") {
		t.Errorf("MMIO with an unreadable RIP: %v", stop)
	}
}
