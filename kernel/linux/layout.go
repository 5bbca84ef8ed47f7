package linux

import (
	"math"
	"strings"
)

// Guest-physical layout of the boot structures, all in RAM below 640 KiB
// (boot.rst, "64-bit Boot Protocol": boot_params, the command line and the
// kernel's init_size range must be identity mapped; the GDT must hold
// __BOOT_CS and __BOOT_DS).
const (
	GDTAddr        = 0x500   // GDTSize bytes
	ZeroPageAddr   = 0x7000  // boot_params, ZeroPageSize bytes
	StackTop       = 0x9000  // boot stack [0x8000, 0x9000): the decompressor pushes before it sets its own
	stackSize      = 0x1000  //
	PageTablesAddr = 0x9000  // PML4, PDPT, PDs: [0x9000, 0xF000) for 4 GiB
	CmdlineAddr    = 0x20000 // command line, NUL-terminated
	CmdlineMax     = 0x10000 // bytes reserved at CmdlineAddr, NUL included

	// IdentityMapBytes is what the boot page tables map: all of RAM (at
	// most MaxRAM) and the APIC pages.
	IdentityMapBytes = 4 << 30

	LowRAMEnd    = 0x9FC00  // end of conventional RAM; EBDA and BIOS area above
	HighMemStart = 0x100000 // 1 MiB: the kernel and initrd live above
	pageSize     = 0x1000
)

// Interrupt controller pages of the guest (Intel 82093AA and SDM vol. 3,
// 10.4.1 default bases). RAM must end below them.
const (
	IOAPICBase = 0xFEC00000
	LAPICBase  = 0xFEE00000
	apicSize   = 0x1000
	MaxRAM     = IOAPICBase
)

// Layout is where a kernel, its initrd, command line and boot structures
// go in guest-physical memory.
type Layout struct {
	RAMSize uint64 // guest RAM [0, RAMSize)

	GDT, ZeroPage, StackTop, PageTables, Cmdline uint64
	MapBytes                                     uint64 // identity-mapped from 0 by PageTables

	CommandLine string // without its NUL

	Kernel, KernelEnd  uint64 // load address (entry at +0x200) and the end of init_size
	Initrd, InitrdSize uint64 // 0, 0 when there is no initrd
}

// Plan places a kernel in ramSize bytes of guest RAM at GPA 0 with an
// initrd of initrdLen bytes and a command line. The kernel goes at
// pref_address (aligned up to kernel_alignment if relocatable) with its
// init_size above it; the initrd as high as initrd_addr_max and RAM allow,
// page-aligned, clear of the kernel.
func Plan(ramSize uint64, img *BzImage, initrdLen uint64, cmdline string) (*Layout, error) {
	if ramSize%pageSize != 0 || ramSize <= HighMemStart || ramSize > MaxRAM {
		return nil, refuse("guest RAM %#x must be a multiple of 4 KiB in (1 MiB, %#x]", ramSize, uint64(MaxRAM))
	}
	l := &Layout{
		RAMSize: ramSize, GDT: GDTAddr, ZeroPage: ZeroPageAddr, StackTop: StackTop,
		PageTables: PageTablesAddr, Cmdline: CmdlineAddr, MapBytes: IdentityMapBytes,
		CommandLine: cmdline,
	}

	// cmdline_size is the longest command line without its NUL (boot.rst).
	if strings.IndexByte(cmdline, 0) >= 0 {
		return nil, refuse("command line contains a NUL byte")
	}
	if uint64(len(cmdline)) > uint64(img.CmdlineSize) {
		return nil, refuse("command line is %d bytes, the kernel takes at most %d (cmdline_size)", len(cmdline), img.CmdlineSize)
	}
	if len(cmdline) >= CmdlineMax {
		return nil, refuse("command line is %d bytes, at most %d fit at %#x", len(cmdline), CmdlineMax-1, CmdlineAddr)
	}

	// Kernel runtime start (boot.rst, init_size): a relocatable kernel
	// runs at its load address raised to pref_address and aligned to
	// kernel_alignment; another runs at pref_address only.
	load := img.PrefAddress
	if img.Relocatable {
		var ok bool
		if load, ok = alignUp(max(load, HighMemStart), uint64(img.KernelAlignment)); !ok {
			return nil, refuse("pref_address %#x aligned to %#x overflows", img.PrefAddress, img.KernelAlignment)
		}
	}
	if load < HighMemStart {
		return nil, refuse("kernel pref_address %#x is below 1 MiB and the kernel is not relocatable", load)
	}
	need := max(uint64(img.InitSize), uint64(len(img.Payload)))
	if load > ramSize || need > ramSize-load {
		return nil, refuse("kernel needs [%#x, %#x+%#x) (init_size), guest RAM ends at %#x", load, load, need, ramSize)
	}
	l.Kernel, l.KernelEnd = load, load+need

	if initrdLen > 0 {
		if err := l.placeInitrd(img, initrdLen); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// placeInitrd puts the initrd at the highest page below min(RAM end,
// initrd_addr_max+1) (boot.rst, initrd_addr_max; without a limit when
// XLF_CAN_BE_LOADED_ABOVE_4G), above the kernel or else below it.
func (l *Layout) placeInitrd(img *BzImage, n uint64) error {
	top := l.RAMSize
	if img.Xloadflags&XLF_CAN_BE_LOADED_ABOVE_4G == 0 {
		top = min(top, uint64(img.InitrdAddrMax)+1)
	}
	fits := func(top uint64) (uint64, bool) {
		if n > top {
			return 0, false
		}
		a := (top - n) &^ (pageSize - 1)
		return a, a >= HighMemStart
	}
	if a, ok := fits(top); ok && a >= l.KernelEnd {
		l.Initrd, l.InitrdSize = a, n
		return nil
	}
	if a, ok := fits(min(top, l.Kernel)); ok {
		l.Initrd, l.InitrdSize = a, n
		return nil
	}
	return refuse("initrd of %d bytes fits neither above the kernel [%#x, %#x) nor below it, under %#x",
		n, l.Kernel, l.KernelEnd, top)
}

// alignUp rounds x up to a power of two a; false if that wraps.
func alignUp(x, a uint64) (uint64, bool) {
	if x > math.MaxUint64-(a-1) {
		return 0, false
	}
	return (x + a - 1) &^ (a - 1), true
}

// Piece is bytes to copy to a guest-physical address.
type Piece struct {
	Name string
	GPA  uint64
	Data []byte
}

// Region is a named range [Start, End) of guest-physical memory.
type Region struct {
	Name       string
	Start, End uint64
}

// Regions are the ranges the boot uses: all must be RAM, none overlap.
func (l *Layout) Regions() []Region {
	r := []Region{
		{"GDT", l.GDT, l.GDT + GDTSize},
		{"boot_params", l.ZeroPage, l.ZeroPage + ZeroPageSize},
		{"boot stack", l.StackTop - stackSize, l.StackTop},
		{"page tables", l.PageTables, l.PageTables + PageTablesSize(l.MapBytes)},
		{"command line", l.Cmdline, l.Cmdline + uint64(len(l.CommandLine)) + 1},
		{"kernel", l.Kernel, l.KernelEnd},
	}
	if l.InitrdSize > 0 {
		r = append(r, Region{"initrd", l.Initrd, l.Initrd + l.InitrdSize})
	}
	return r
}

// Pieces is what to copy into guest RAM: GDT, page tables, boot_params
// (from BuildBootParams), the command line, the kernel and the initrd.
func (l *Layout) Pieces(img *BzImage, initrd, bootParams []byte) ([]Piece, error) {
	if uint64(len(initrd)) != l.InitrdSize {
		return nil, refuse("initrd is %d bytes, the layout planned %d", len(initrd), l.InitrdSize)
	}
	if len(bootParams) != ZeroPageSize {
		return nil, refuse("boot_params is %d bytes, want %d", len(bootParams), ZeroPageSize)
	}
	if uint64(len(img.Payload)) > l.KernelEnd-l.Kernel {
		return nil, refuse("kernel of %d bytes does not fit the planned %d", len(img.Payload), l.KernelEnd-l.Kernel)
	}
	pt, err := PageTables(l.PageTables, l.MapBytes)
	if err != nil {
		return nil, err
	}
	p := []Piece{
		{"GDT", l.GDT, GDT()},
		{"page tables", l.PageTables, pt},
		{"boot_params", l.ZeroPage, bootParams},
		{"command line", l.Cmdline, append([]byte(l.CommandLine), 0)},
		{"kernel", l.Kernel, img.Payload},
	}
	if len(initrd) > 0 {
		p = append(p, Piece{"initrd", l.Initrd, initrd})
	}
	return p, nil
}
