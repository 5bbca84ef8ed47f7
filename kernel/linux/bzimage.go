// Package linux boots an unmodified Linux kernel (a bzImage) as a guest
// through the 64-bit boot protocol of Linux Documentation/arch/x86/boot.rst
// ("64-bit Boot Protocol"), with the zero page of zero-page.rst.
//
// ParseBzImage checks the setup header; Plan places the kernel, initrd,
// command line and boot structures in guest-physical memory;
// BuildBootParams writes the zero page with its e820 map; PageTables and
// GDT are the identity map and flat GDT the 64-bit entry needs; Pieces says
// what to copy where, and EntryState the register state the vCPU starts in.
//
// Everything is plain Go on byte slices: the caller copies the pieces into
// guest RAM and the EntryState into its VMCB.
package linux

import (
	"encoding/binary"
	"fmt"
)

// Setup header fields, as file offsets (boot.rst, "The Real-Mode Kernel
// Header"). The header sits at the same offset in boot_params (0x1F1), so
// these are boot_params offsets too.
const (
	offSetupSects          = 0x1F1 // setup_sects, 1 byte
	offSyssize             = 0x1F4 // syssize, 4: protected-mode size in 16-byte units
	offBootFlag            = 0x1FE // boot_flag, 2
	offJump                = 0x200 // jump, 2: 0xEB and the header length
	offHeaderMagic         = 0x202 // header, 4: "HdrS"
	offVersion             = 0x206 // version, 2
	offTypeOfLoader        = 0x210 // type_of_loader, 1
	offLoadflags           = 0x211 // loadflags, 1
	offRamdiskImage        = 0x218 // ramdisk_image, 4
	offRamdiskSize         = 0x21C // ramdisk_size, 4
	offHeapEndPtr          = 0x224 // heap_end_ptr, 2
	offCmdLinePtr          = 0x228 // cmd_line_ptr, 4
	offInitrdAddrMax       = 0x22C // initrd_addr_max, 4
	offKernelAlignment     = 0x230 // kernel_alignment, 4
	offRelocatableKernel   = 0x234 // relocatable_kernel, 1
	offXloadflags          = 0x236 // xloadflags, 2
	offCmdlineSize         = 0x238 // cmdline_size, 4
	offHardwareSubarch     = 0x23C // hardware_subarch, 4
	offHardwareSubarchData = 0x240 // hardware_subarch_data, 8
	offSetupData           = 0x250 // setup_data, 8
	offPrefAddress         = 0x258 // pref_address, 8
	offInitSize            = 0x260 // init_size, 4

	hdrMinEnd = offInitSize + 4 // the header must reach init_size, the last field read
)

// Values of the setup header (boot.rst).
const (
	BootFlag      = 0xAA55
	HeaderMagic   = "HdrS"
	MinVersion    = 0x020C // 2.12: first with xloadflags
	jumpShort     = 0xEB   // "jump": a short jmp whose offset gives the header end
	sectorSize    = 512
	defaultSects  = 4 // setup_sects 0 means 4 (boot.rst, note 1)
	Entry64Offset = 0x200

	// TypeOfLoader 0xFF: "undefined" boot loader (boot.rst, type_of_loader).
	TypeOfLoader = 0xFF
)

// loadflags bits (boot.rst, loadflags).
const (
	LOADED_HIGH  = 1 << 0 // protected-mode code loads at 0x100000 (bzImage)
	CAN_USE_HEAP = 1 << 7 // heap_end_ptr is valid
)

// xloadflags bits (boot.rst, xloadflags).
const (
	XLF_KERNEL_64              = 1 << 0 // 64-bit entry point at +0x200
	XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1 // kernel, boot_params, cmdline, initrd may sit above 4 GiB
)

// maxKernelAlignment bounds kernel_alignment so that aligning never wraps.
const maxKernelAlignment = 1 << 30

// BzImage is a checked bzImage. Header and Payload alias the parsed bytes.
type BzImage struct {
	Header  []byte // setup header: file bytes [0x1F1, 0x202+b[0x201])
	Payload []byte // protected-mode kernel, after (setup_sects+1)*512 bytes

	Version         uint16 // boot protocol: 0x020F is 2.15
	SetupSects      int    // real-mode setup sectors after the boot sector
	Loadflags       uint8
	Xloadflags      uint16
	KernelAlignment uint32
	Relocatable     bool
	PrefAddress     uint64
	InitSize        uint32 // bytes the kernel needs from its start before it reads e820
	CmdlineSize     uint32 // longest command line, NUL not counted
	InitrdAddrMax   uint32 // highest address the initrd may occupy
}

// Error is a refused kernel or a layout that does not fit.
type Error struct{ Reason string }

func (e *Error) Error() string { return "linux: " + e.Reason }

func refuse(f string, a ...any) error { return &Error{fmt.Sprintf(f, a...)} }

// ParseBzImage checks the setup header of a bzImage for the 64-bit boot
// protocol and returns it with its protected-mode payload.
func ParseBzImage(b []byte) (*BzImage, error) {
	le := binary.LittleEndian
	if len(b) < sectorSize {
		return nil, refuse("truncated: %d bytes, shorter than the %d-byte boot sector", len(b), sectorSize)
	}
	if f := le.Uint16(b[offBootFlag:]); f != BootFlag {
		return nil, refuse("not a bzImage: boot flag %#04x at %#x (want %#04x)", f, offBootFlag, BootFlag)
	}
	if len(b) < offVersion+2 {
		return nil, refuse("truncated: setup header needs %d bytes, file has %d", offVersion+2, len(b))
	}
	if string(b[offHeaderMagic:offHeaderMagic+4]) != HeaderMagic {
		return nil, refuse("not a bzImage: no %s magic at %#x", HeaderMagic, offHeaderMagic)
	}
	img := &BzImage{Version: le.Uint16(b[offVersion:])}
	if img.Version < MinVersion {
		return nil, refuse("boot protocol %d.%d too old (need %d.%d)",
			img.Version>>8, img.Version&0xff, MinVersion>>8, MinVersion&0xff)
	}
	// 64-bit boot protocol: the header ends at 0x202 + the byte at 0x201,
	// the signed offset of the short jump at 0x200.
	if b[offJump] != jumpShort {
		return nil, refuse("setup header: byte %#02x at %#x is not a short jump (%#02x)", b[offJump], offJump, jumpShort)
	}
	end := offHeaderMagic + int(int8(b[offJump+1]))
	if end < hdrMinEnd {
		return nil, refuse("setup header ends at %#x, before the end of init_size (%#x)", end, hdrMinEnd)
	}
	if len(b) < end {
		return nil, refuse("truncated: setup header needs %d bytes, file has %d", end, len(b))
	}
	img.Header = b[offSetupSects:end]

	img.SetupSects = int(b[offSetupSects])
	if img.SetupSects == 0 {
		img.SetupSects = defaultSects
	}
	setup := (img.SetupSects + 1) * sectorSize
	if len(b) < setup {
		return nil, refuse("truncated: setup needs %d bytes, file has %d", setup, len(b))
	}
	img.Payload = b[setup:]
	if len(img.Payload) == 0 {
		return nil, refuse("no protected-mode kernel after the %d-byte setup", setup)
	}
	if sys := uint64(le.Uint32(b[offSyssize:])) * 16; sys > uint64(len(img.Payload)) {
		return nil, refuse("truncated: syssize says the kernel is %d bytes, file has %d after setup", sys, len(img.Payload))
	}

	img.Loadflags = b[offLoadflags]
	img.Xloadflags = le.Uint16(b[offXloadflags:])
	img.KernelAlignment = le.Uint32(b[offKernelAlignment:])
	img.Relocatable = b[offRelocatableKernel] != 0
	img.PrefAddress = le.Uint64(b[offPrefAddress:])
	img.InitSize = le.Uint32(b[offInitSize:])
	img.CmdlineSize = le.Uint32(b[offCmdlineSize:])
	img.InitrdAddrMax = le.Uint32(b[offInitrdAddrMax:])

	if img.Loadflags&LOADED_HIGH == 0 {
		return nil, refuse("not a bzImage: LOADED_HIGH clear (a zImage loads at 0x10000)")
	}
	if img.Xloadflags&XLF_KERNEL_64 == 0 {
		return nil, refuse("not a 64-bit kernel (XLF_KERNEL_64 clear)")
	}
	if a := img.KernelAlignment; img.Relocatable && (a == 0 || a&(a-1) != 0 || a > maxKernelAlignment) {
		return nil, refuse("kernel_alignment %#x is not a power of two up to %#x", a, maxKernelAlignment)
	}
	if img.InitSize == 0 {
		return nil, refuse("init_size is 0")
	}
	return img, nil
}
