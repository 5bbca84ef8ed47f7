package main

import (
	"fmt"
	"io"

	"tamavisor/kernel"
	"tamavisor/snapshot"
	"tamavisor/svm"
)

// A scratch machine: package kernel's Platform over host memory that is a
// Go byte slice, so that the host tool runs the hypervisor's own code to
// build a VM (demo) and to restore a snapshot (verify) without SVM. Nothing
// runs a guest: Platform.Runner stays nil.

// arenaBase is the made-up host-physical address of the scratch memory.
const arenaBase = 0x1000_0000

// arena is the scratch machine's host memory: [base, base+len(buf)).
type arena struct {
	base uint64
	buf  []byte
}

func (a *arena) Bytes(pa, n uint64) []byte {
	size := uint64(len(a.buf))
	if pa < a.base || n > size || pa-a.base > size-n {
		panic(fmt.Sprintf("scratch machine: host-physical range %#x+%#x outside [%#x, %#x)", pa, n, a.base, a.base+size))
	}
	o := pa - a.base
	return a.buf[o : o+n : o+n]
}

// amdVendor is "AuthenticAMD" as CPUID leaf 0 returns it in EBX, ECX, EDX.
var amdVendor = [3]uint32{0x68747541, 0x444d4163, 0x69746e65}

// newScratchPlatform returns a machine with room for one VM of ramSize
// bytes of RAM, whose CPU has the CPUID cpuid, moves the XSAVE components
// xcr0 for guests (0: none) and has MXCSR_MASK mxcsrMask (0: the default).
func newScratchPlatform(ramSize uint64, cpuid svm.CPUIDFunc, xcr0 uint64, mxcsrMask uint32) *kernel.Platform {
	// RAM is 2 MiB aligned; nested page tables, VMCB and permission maps
	// are small.
	size := ramSize + 2<<20 + 8<<20 + ramSize/128
	size = (size + svm.PageSize - 1) &^ (svm.PageSize - 1)
	mem := &arena{base: arenaBase, buf: make([]byte, size)}
	var tsc uint64 = 1 << 32
	return &kernel.Platform{
		Mem:       mem,
		Pool:      kernel.NewPhysPool(mem, arenaBase, arenaBase+size),
		Features:  svm.Features{Revision: 1, NASID: 16, EDX: svm.FeatNP | svm.FeatNRIPS},
		ASIDs:     svm.NewASIDs(16),
		CPUID:     cpuid,
		TSC:       func() uint64 { return tsc },
		Console:   io.Discard,
		HostXCR0:  xcr0,
		MXCSRMask: mxcsrMask,
	}
}

// demoPlatform is the machine the demo guest is made on: an AMD CPU with
// the x86-64 baseline features only (no XSAVE for guests), so that the
// CPUID table its snapshots record is a subset of any host's and every
// tamavisor host restores them.
func demoPlatform(ramSize uint64) *kernel.Platform {
	const (
		// Leaf 1 EDX: FPU TSC MSR PAE CX8 SEP MTRR PGE CMOV PAT CLFSH MMX
		// FXSR SSE SSE2; leaf 0x8000_0001 EDX: SYSCALL NX LM.
		leaf1EDX = 1<<0 | 1<<4 | 1<<5 | 1<<6 | 1<<8 | 1<<11 | 1<<12 | 1<<13 | 1<<15 | 1<<16 | 1<<19 | 1<<23 | 1<<24 | 1<<25 | 1<<26
		ext1EDX  = 1<<11 | 1<<20 | 1<<29
	)
	cpuid := func(leaf, sub uint32) (a, b, c, d uint32) {
		switch leaf {
		case 0:
			return 0xd, amdVendor[0], amdVendor[1], amdVendor[2]
		case 1:
			return 0x00a20f10, 0, 0, leaf1EDX
		case 0x80000000:
			return 0x80000008, amdVendor[0], amdVendor[1], amdVendor[2]
		case 0x80000001:
			return 0x00a20f10, 0, 0, ext1EDX
		case 0x80000008:
			return 0x3030, 0, 0, 0 // 48-bit physical and virtual addresses
		}
		return 0, 0, 0, 0
	}
	return newScratchPlatform(ramSize, cpuid, 0, 0)
}

// Host-specific parts of a restore, which the restore check answers as the
// most capable host tamavisor supports would: a restore on a given host
// also checks them against that host's CPU.
const (
	// widestMXCSRMask is MXCSR_MASK of a CPU with DAZ.
	widestMXCSRMask = 0xffff
	// widestXCR0 is a host whose world switch moves x87, SSE and AVX.
	widestXCR0 = svm.XCR0Guest
)

// widestCPUID is a host CPUID with every feature bit set and the vendor
// (leaves 0 and 0x8000_0000 EBX, ECX, EDX) of saw (a snapshot's CPUID
// table; AMD if it has no leaf 0): a restore's CPUID check then refuses
// only a guest that saw features no tamavisor host can give it.
func widestCPUID(saw []snapshot.CPUIDLeaf) svm.CPUIDFunc {
	vendor := amdVendor
	for _, l := range saw {
		if l.Leaf == 0 && l.Subleaf == 0 {
			vendor = [3]uint32{l.EBX, l.ECX, l.EDX}
		}
	}
	return func(leaf, sub uint32) (a, b, c, d uint32) {
		switch leaf {
		case 0:
			return 0xd, vendor[0], vendor[1], vendor[2]
		case 0x80000000:
			return 0x80000008, vendor[0], vendor[1], vendor[2]
		}
		return ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0)
	}
}

// checkRestore runs kernel.Restore, the hypervisor's restore, on the newest
// committed snapshot of s on a scratch machine, and throws the VM away.
// ramSize is the guest RAM to make room for (the vm chunk's, as decoded
// before). What the restore checks and the scratch machine cannot know
// (the CPU features, MXCSR_MASK and XSAVE components of the host that will
// restore it) is checked against the most capable host (widestCPUID,
// widestXCR0, widestMXCSRMask).
func checkRestore(s *snapshot.Store, key []byte, ramSize uint64, saw []snapshot.CPUIDLeaf) (*kernel.VM, *snapshot.Commit, error) {
	if ramSize == 0 || ramSize > kernel.MaxGuestRAM {
		ramSize = 2 << 20 // the restore refuses it before placing any RAM
	}
	p := newScratchPlatform(ramSize, widestCPUID(saw), widestXCR0, widestMXCSRMask)
	return kernel.Restore(p, s, key)
}
