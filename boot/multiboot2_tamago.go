//go:build tamago && amd64

package boot

// multiboot2Area is where multiboot2Entry saves GRUB's registers and boot
// information (layout in multiboot2.go). It is in the image's BSS, which
// the boot loader zeroes and TamaGo's runtime never clears: all zero when
// the kernel came up another way (QEMU's PVH entry).
var multiboot2Area [mb2AreaLen]byte

// multiboot2Entry is the 32-bit entry named by the Multiboot2 header
// (multiboot2_amd64.s). Go code never calls it.
func multiboot2Entry()

// keepEntry references multiboot2Entry so that the linker keeps it:
// internal/mb2header looks its address up in the ELF symbol table.
var keepEntry = multiboot2Entry

// Multiboot2 returns the boot information GRUB passed, and where it was:
// ErrNotMultiboot2 when the kernel was not entered through multiboot2.
func Multiboot2() (*Multiboot2Info, uint32, error) {
	if keepEntry == nil {
		return nil, 0, ErrNotMultiboot2
	}
	return multiboot2FromArea(multiboot2Area[:])
}
