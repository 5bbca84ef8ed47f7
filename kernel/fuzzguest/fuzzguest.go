// Package fuzzguest makes random guests for the hostile-guest runs
// (docs/security.md): from a seed, a guest image in 16-, 32- or 64-bit
// mode whose code is random bytes mixed with instructions that exit to the
// hypervisor (hypercalls, port I/O, MSRs, control and debug registers,
// SVM instructions, MMIO to the interrupt controllers, exceptions) with
// random operands. Pure random bytes rarely form an exiting instruction;
// the mix reaches the exit handlers thousands of times per run.
//
// The same seed always gives the same guest, so a seed that breaks the
// hypervisor is a regression guest.
package fuzzguest

import (
	"fmt"
	"math/rand/v2"

	"tamavisor/kernel"
)

// Layout of every random guest: 2 MiB of RAM (above the 64-bit boot page
// tables), code loaded and entered at CodeGPA.
const (
	MemSize  = 2 << 20
	CodeGPA  = 0x8000 // above the 64-bit boot tables, below 64 KiB for real mode
	CodeSize = 4096
	// pcgStream is the second PCG word: fixed, so a seed is one guest.
	pcgStream = 0x7461_6d61_7669_736f // "tamaviso"
)

// Modes are the CPU modes in seed order: seed%3 picks one.
var Modes = [3]uint32{kernel.Mode16, kernel.Mode32, kernel.Mode64}

// Image returns the random guest of seed.
func Image(seed uint64) *kernel.Image {
	mode := Modes[seed%uint64(len(Modes))]
	r := rand.New(rand.NewPCG(seed, pcgStream))
	g := gen{r: r, mode: mode}
	for len(g.b) < CodeSize {
		if r.IntN(2) == 0 {
			n := 1 + r.IntN(8)
			for range n {
				g.b = append(g.b, byte(r.Uint32()))
			}
			continue
		}
		snippets[r.IntN(len(snippets))](&g)
	}
	return &kernel.Image{Mode: mode, LoadGPA: CodeGPA, Entry: CodeGPA, MemSize: MemSize,
		Name: fmt.Sprintf("rand-%d", seed), Payload: g.b[:CodeSize]}
}

// gen emits machine code for one CPU mode.
type gen struct {
	r    *rand.Rand
	mode uint32
	b    []byte
}

func (g *gen) emit(b ...byte) { g.b = append(g.b, b...) }

// opsize emits the operand-size prefix where a 32-bit operand needs one
// (16-bit code).
func (g *gen) opsize() {
	if g.mode == kernel.Mode16 {
		g.emit(0x66)
	}
}

// movImm32 loads reg (0 EAX, 1 ECX, 2 EDX, 3 EBX) with a 32-bit value.
func (g *gen) movImm32(reg byte, v uint32) {
	g.opsize()
	g.emit(0xB8+reg, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// value is a random operand: often small or a boundary, sometimes anything.
func (g *gen) value() uint32 {
	switch g.r.IntN(4) {
	case 0:
		return uint32(g.r.IntN(16))
	case 1:
		return []uint32{0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x1000, 0xFFF, MemSize - 1, MemSize}[g.r.IntN(7)]
	}
	return g.r.Uint32()
}

// Interesting values for the operands that select things.
var (
	msrs = []uint32{0x10, 0x1B, 0x3A, 0x48, 0x49, 0xE7, 0xE8, 0x174, 0x175, 0x176, 0x1D9, 0x277, 0x2FF,
		0x400, 0x401, 0xC0000080, 0xC0000081, 0xC0000082, 0xC0000100, 0xC0000101, 0xC0000102, 0xC0000103,
		0xC0010000, 0xC0010004, 0xC0010010, 0xC0010015, 0xC0010020, 0xC0010112, 0xC0010113,
		0xC0010114, 0xC0010117, 0xC0010131, 0xC0011029, 0x8B, 0x79, 0x6E0, 0x830, 0x80B}
	ports = []uint16{0x20, 0x21, 0x40, 0x42, 0x43, 0x61, 0x64, 0x70, 0x71, 0x80, 0x92, 0xA0, 0xA1,
		0x2F8, 0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x402, 0x4D0, 0x510, 0x511, 0x514,
		0x600, 0x604, 0x608, 0xCF8, 0xCF9, 0xCFC, 0xF4}
	mmio = []uint32{0xFEE00000, 0xFEE00020, 0xFEE000B0, 0xFEE000F0, 0xFEE00300, 0xFEE00320, 0xFEE00380,
		0xFEC00000, 0xFEC00010, 0xFEE00FFC, 0xFEC00FFF, 0xFED00000, 0xFFFFFFF0}
)

// snippets each emit one exiting instruction with its operands set up.
var snippets = []func(g *gen){
	func(g *gen) { // hypercall with random function and arguments
		g.movImm32(0, uint32(g.r.IntN(8))-1)
		g.movImm32(3, g.value())
		g.movImm32(1, g.value())
		g.movImm32(2, g.value())
		g.emit(0x0F, 0x01, 0xD9) // VMMCALL
	},
	func(g *gen) { // CPUID
		g.movImm32(0, []uint32{0, 1, 7, 0xD, 0x40000000, 0x80000001, 0x80000008, 0x8000000A, g.value()}[g.r.IntN(9)])
		g.movImm32(1, uint32(g.r.IntN(3)))
		g.emit(0x0F, 0xA2)
	},
	func(g *gen) { // RDMSR or WRMSR
		g.movImm32(1, msrs[g.r.IntN(len(msrs))])
		g.movImm32(0, g.value())
		g.movImm32(2, g.value())
		g.emit(0x0F, 0x30+2*byte(g.r.IntN(2))) // WRMSR 0F 30, RDMSR 0F 32
	},
	func(g *gen) { // IN or OUT of every size, through DX
		port := ports[g.r.IntN(len(ports))]
		if g.r.IntN(4) == 0 {
			port = uint16(g.r.Uint32())
		}
		g.movImm32(2, uint32(port))
		g.movImm32(0, g.value())
		op := []byte{0xEC, 0xED, 0xEE, 0xEF}[g.r.IntN(4)] // IN AL/eAX, DX; OUT DX, AL/eAX
		if g.r.IntN(3) == 0 {
			g.emit(0x66) // the other operand size
		}
		g.emit(op)
	},
	func(g *gen) { // string port I/O, sometimes REP
		g.movImm32(2, uint32(ports[g.r.IntN(len(ports))]))
		g.movImm32(1, uint32(g.r.IntN(8)))
		if g.r.IntN(2) == 0 {
			g.emit(0xF3)
		}
		g.emit([]byte{0x6C, 0x6D, 0x6E, 0x6F}[g.r.IntN(4)])
	},
	func(g *gen) { // MMIO to the interrupt controllers and beyond RAM
		g.movImm32(3, mmio[g.r.IntN(len(mmio))]+uint32(g.r.IntN(4)))
		g.movImm32(0, g.value())
		if g.mode == kernel.Mode16 {
			g.emit(0x67) // 32-bit addressing in real mode (the limit faults)
		}
		// MOV [EBX], EAX / MOV EAX, [EBX] / XCHG / ADD / MOVZX
		g.emit([][]byte{{0x89, 0x03}, {0x8B, 0x03}, {0x87, 0x03}, {0x01, 0x03}, {0x0F, 0xB6, 0x03}, {0x88, 0x03}}[g.r.IntN(6)]...)
	},
	func(g *gen) { // control registers from EAX
		g.movImm32(0, g.value())
		g.emit(0x0F, 0x22, 0xC0|8*[]byte{0, 3, 4, 8}[g.r.IntN(4)]) // MOV CRn, EAX
	},
	func(g *gen) { // debug registers from EAX
		g.movImm32(0, g.value())
		g.emit(0x0F, 0x23, 0xC0|8*byte(g.r.IntN(8))) // MOV DRn, EAX
	},
	func(g *gen) { // XSETBV
		g.movImm32(1, uint32(g.r.IntN(2)))
		g.movImm32(0, []uint32{1, 3, 7, 0, 5, g.value()}[g.r.IntN(6)])
		g.movImm32(2, 0)
		g.emit(0x0F, 0x01, 0xD1)
	},
	func(g *gen) { // SVM and other privileged or intercepted instructions
		g.emit([][]byte{
			{0x0F, 0x01, 0xD8}, {0x0F, 0x01, 0xDA}, {0x0F, 0x01, 0xDB}, {0x0F, 0x01, 0xDC}, // VMRUN VMLOAD VMSAVE STGI
			{0x0F, 0x01, 0xDD}, {0x0F, 0x01, 0xDE}, {0x0F, 0x01, 0xDF}, // CLGI SKINIT INVLPGA
			{0x0F, 0x01, 0xC8}, {0x0F, 0x01, 0xC9}, {0x0F, 0x01, 0xFA}, {0x0F, 0x01, 0xFB}, // MONITOR MWAIT MONITORX MWAITX
			{0x0F, 0x01, 0xF9}, {0x0F, 0x31}, {0x0F, 0x33}, {0x0F, 0x01, 0xFD}, // RDTSCP RDTSC RDPMC RDPRU
			{0x0F, 0x08}, {0x0F, 0x09}, {0xF4}, {0xFB, 0xF4}, {0xFA, 0xF4}, // INVD WBINVD HLT STI;HLT CLI;HLT
			{0xCC}, {0xCD, 0x01}, {0xCE}, {0x0F, 0x0B}, {0xF1}, // INT3 INT1 INTO UD2 ICEBP
			{0x0F, 0x00, 0xD8}, {0x0F, 0x01, 0x18}, {0xCF}, {0x9D}, // LTR AX, LIDT [EAX], IRET, POPF
			{0xF3, 0x0F, 0xC7, 0xF8}, // RDPID
		}[g.r.IntN(29)]...)
	},
}
