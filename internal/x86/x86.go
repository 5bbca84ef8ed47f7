//go:build tamago && amd64

// Package x86 wraps the privileged x86-64 instructions that tamavisor's
// board and SVM code need and that have no Go equivalent: port I/O, MSR
// access, control registers, RDTSC, CPUID and FXSAVE-area handling.
//
// Instruction semantics are those of the AMD64 Architecture Programmer's
// Manual, volume 3 (general-purpose and system instructions). Each function
// is a few instructions of assembly in x86_amd64.s.
package x86

import "unsafe"

// In8 reads a byte from an I/O port (IN AL, DX).
func In8(port uint16) uint8

// Out8 writes a byte to an I/O port (OUT DX, AL).
func Out8(port uint16, val uint8)

// In16 reads a word from an I/O port.
func In16(port uint16) uint16

// Out16 writes a word to an I/O port.
func Out16(port uint16, val uint16)

// In32 reads a doubleword from an I/O port.
func In32(port uint16) uint32

// Out32 writes a doubleword to an I/O port.
func Out32(port uint16, val uint32)

// InsB reads len(buf) bytes from one I/O port (REP INSB).
func InsB(port uint16, buf []byte) {
	if len(buf) > 0 {
		insb(port, &buf[0], uint64(len(buf)))
	}
}

func insb(port uint16, dst *byte, n uint64)

// RDMSR reads a model-specific register.
func RDMSR(msr uint32) uint64

// WRMSR writes a model-specific register.
func WRMSR(msr uint32, val uint64)

// CPUID executes CPUID with EAX=leaf, ECX=subleaf.
func CPUID(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// RDTSC reads the time-stamp counter.
func RDTSC() uint64

// ReadCR0 returns CR0.
func ReadCR0() uint64

// ReadCR3 returns CR3.
func ReadCR3() uint64

// WriteCR3 sets CR3, which also flushes the non-global TLB entries.
func WriteCR3(val uint64)

// ReadCR4 returns CR4.
func ReadCR4() uint64

// WriteCR4 sets CR4.
func WriteCR4(val uint64)

// Pause executes PAUSE (a spin-loop hint).
func Pause()

// XGETBV reads extended control register index (XCR0 is 0).
func XGETBV(index uint32) uint64

// XSETBV writes extended control register index.
func XSETBV(index uint32, val uint64)

func fxsave(area *[512]byte)

// MXCSRMask returns the CPU's MXCSR_MASK: the MXCSR bits FXRSTOR and
// LDMXCSR accept (APM vol. 2, 11.5.4; the FXSAVE image at byte 28, where 0
// means the default 0xFFBF).
func MXCSRMask() uint32 {
	var buf [512 + 16]byte
	off := (16 - uintptr(unsafe.Pointer(&buf[0]))%16) % 16
	area := (*[512]byte)(buf[off : off+512])
	fxsave(area)
	m := uint32(area[28]) | uint32(area[29])<<8 | uint32(area[30])<<16 | uint32(area[31])<<24
	if m == 0 {
		m = mxcsrDefaultMask
	}
	return m
}

// mxcsrDefaultMask is MXCSR_MASK's meaning when FXSAVE stores 0.
const mxcsrDefaultMask = 0xffbf
