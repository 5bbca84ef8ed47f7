package kernel

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tamavisor/svm"
)

// testBzImage describes a synthetic bzImage. Offsets are those of
// boot.rst's setup header, spelled out here independently of package
// linux's constants.
type testBzImage struct {
	xloadflags  uint16
	pref        uint64
	align       uint32
	initSize    uint32
	cmdlineSize uint32
	payload     []byte
}

func defaultTestBzImage() testBzImage {
	return testBzImage{
		xloadflags: 0x3, // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
		pref:       0x1000000, align: 0x200000, initSize: 0x400000, cmdlineSize: 2047,
		payload: bytes.Repeat([]byte{0x0f, 0x0b, 0xf4, 0x5a, 0xa5, 0x11, 0x22, 0x33}, 2048), // 16 KiB
	}
}

func (k testBzImage) bytes() []byte {
	const setupSects = 4
	b := make([]byte, (setupSects+1)*512)
	le := binary.LittleEndian
	b[0x1F1] = setupSects
	le.PutUint32(b[0x1F4:], uint32(len(k.payload)/16)) // syssize
	le.PutUint16(b[0x1FE:], 0xAA55)                    // boot_flag
	b[0x200], b[0x201] = 0xEB, 0x6A                    // jump: header ends at 0x26C
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], 0x020F) // protocol 2.15
	b[0x211] = 0x01                 // loadflags: LOADED_HIGH
	le.PutUint32(b[0x22C:], 0x7FFFFFFF)
	le.PutUint32(b[0x230:], k.align)
	b[0x234] = 1 // relocatable_kernel
	le.PutUint16(b[0x236:], k.xloadflags)
	le.PutUint32(b[0x238:], k.cmdlineSize)
	le.PutUint64(b[0x258:], k.pref)
	le.PutUint32(b[0x260:], k.initSize)
	return append(b, k.payload...)
}

// Guest RAM of the Linux tests and a host arena that holds it with the
// VMCB, permission maps and nested page tables.
const (
	linuxTestMem   = 64 << 20
	linuxTestArena = linuxTestMem + 4<<20
)

// newLinuxEnv is a harness machine with an arena of size bytes.
func newLinuxEnv(t *testing.T, size uint64) *env {
	e := newEnv(t, featNoNRIP)
	e.mem = newFakeMem(size)
	e.pool = NewPhysPool(e.mem, arenaBase, arenaBase+size)
	e.plat.Mem, e.plat.Pool, e.runner.mem = e.mem, e.pool, e.mem
	return e
}

var (
	testInitrd  = bytes.Repeat([]byte("initramfs-bytes!"), 4096+3) // 64 KiB + 48
	testCmdline = "console=ttyS0 panic=-1 tamavisor-test=1"
)

func testLinuxConfig() LinuxConfig {
	return LinuxConfig{Kernel: defaultTestBzImage().bytes(), Initrd: testInitrd, Cmdline: testCmdline,
		MemSize: linuxTestMem, Name: "lx"}
}

// linuxRAM reads n bytes of guest RAM.
func linuxRAM(t *testing.T, vm *VM, at, n uint64) []byte {
	t.Helper()
	b, err := vm.Mem.Slice(at, n)
	if err != nil {
		t.Fatalf("guest RAM %#x+%d: %v", at, n, err)
	}
	return b
}

func TestNewLinuxVMMemory(t *testing.T) {
	e := newLinuxEnv(t, linuxTestArena)
	cfg := testLinuxConfig()
	vm, err := NewLinuxVM(e.plat, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Destroy()
	if vm.Name != "lx" || vm.Mem.Size != linuxTestMem {
		t.Errorf("VM %q with %d MiB, want lx with 64 MiB", vm.Name, vm.Mem.Size>>20)
	}
	le := binary.LittleEndian
	const zp = 0x7000 // boot_params, as planned by package linux
	bp := linuxRAM(t, vm, zp, 4096)

	// Setup header copied from the image, loader fields filled in
	// (boot.rst, zero-page.rst offsets).
	if le.Uint16(bp[0x1FE:]) != 0xAA55 || string(bp[0x202:0x206]) != "HdrS" || le.Uint16(bp[0x206:]) != 0x020F {
		t.Errorf("setup header not copied: boot_flag %#x magic %q version %#x", le.Uint16(bp[0x1FE:]), bp[0x202:0x206], le.Uint16(bp[0x206:]))
	}
	if bp[0x210] != 0xFF {
		t.Errorf("type_of_loader %#x, want 0xFF", bp[0x210])
	}
	if bp[0x211]&0x01 == 0 {
		t.Errorf("loadflags %#x lost LOADED_HIGH", bp[0x211])
	}

	// Command line, NUL-terminated, where cmd_line_ptr says.
	cl := uint64(le.Uint32(bp[0x228:])) | uint64(le.Uint32(bp[0x0C8:]))<<32
	if got := linuxRAM(t, vm, cl, uint64(len(testCmdline))+1); string(got) != testCmdline+"\x00" {
		t.Errorf("command line at %#x is %q", cl, got)
	}
	if cl >= 0x9FC00 && cl < 0x100000 {
		t.Errorf("command line at %#x is in the reserved BIOS area", cl)
	}

	// Initrd bytes where ramdisk_image says, page-aligned, inside RAM
	// above 1 MiB, clear of the kernel.
	rd := uint64(le.Uint32(bp[0x218:])) | uint64(le.Uint32(bp[0x0C0:]))<<32
	rs := uint64(le.Uint32(bp[0x21C:])) | uint64(le.Uint32(bp[0x0C4:]))<<32
	if rs != uint64(len(testInitrd)) || rd%4096 != 0 || rd < 0x100000 || rd+rs > linuxTestMem {
		t.Errorf("initrd at %#x size %#x, want %#x page-aligned bytes inside RAM above 1 MiB", rd, rs, len(testInitrd))
	}
	if !bytes.Equal(linuxRAM(t, vm, rd, rs), testInitrd) {
		t.Errorf("initrd bytes at %#x differ", rd)
	}

	// Kernel payload at the load address: pref_address, 2 MiB aligned.
	const load = 0x1000000
	k := defaultTestBzImage()
	if !bytes.Equal(linuxRAM(t, vm, load, uint64(len(k.payload))), k.payload) {
		t.Errorf("kernel payload not at %#x", load)
	}
	if rd < load+uint64(k.initSize) && rd+rs > load {
		t.Errorf("initrd [%#x, %#x) overlaps the kernel's init_size [%#x, %#x)", rd, rd+rs, load, load+uint64(k.initSize))
	}

	// e820: sorted, RAM below 640 KiB and from 1 MiB to the end of RAM,
	// the BIOS area with the ACPI tables reserved.
	n := int(bp[0x1E8])
	if n < 3 || n > 128 {
		t.Fatalf("%d e820 entries", n)
	}
	type ent struct {
		addr, size uint64
		typ        uint32
	}
	var m []ent
	for i := 0; i < n; i++ {
		o := 0x2D0 + 20*i
		m = append(m, ent{le.Uint64(bp[o:]), le.Uint64(bp[o+8:]), le.Uint32(bp[o+16:])})
	}
	typeAt := func(a uint64) uint32 {
		for _, x := range m {
			if a >= x.addr && a < x.addr+x.size {
				return x.typ
			}
		}
		return 0
	}
	for a, want := range map[uint64]uint32{0: 1, 0x9F000: 1, 0xE0000: 2, 0xFFFFF: 2, 0x100000: 1, load: 1, linuxTestMem - 1: 1, linuxTestMem: 0} {
		if got := typeAt(a); got != want {
			t.Errorf("e820 type at %#x is %d, want %d (map %+v)", a, got, want, m)
		}
	}

	// ACPI: RSDP at acpi_rsdp_addr, in the reserved BIOS area, with its
	// signature and checksums, pointing at an XSDT in guest RAM.
	rsdp := le.Uint64(bp[0x070:])
	if rsdp != 0xE0000 {
		t.Errorf("acpi_rsdp_addr %#x, want 0xE0000", rsdp)
	}
	r := linuxRAM(t, vm, rsdp, 36)
	if string(r[:8]) != "RSD PTR " || r[15] != 2 || linuxSum8(r[:20]) != 0 || linuxSum8(r) != 0 {
		t.Errorf("RSDP at %#x: % x", rsdp, r)
	}
	xsdt := le.Uint64(r[24:])
	if x := linuxRAM(t, vm, xsdt, 36); string(x[:4]) != "XSDT" || linuxSum8(linuxRAM(t, vm, xsdt, uint64(le.Uint32(x[4:])))) != 0 {
		t.Errorf("no valid XSDT at %#x", xsdt)
	}
}

func linuxSum8(b []byte) (s uint8) {
	for _, c := range b {
		s += c
	}
	return s
}

func TestNewLinuxVMEntryState(t *testing.T) {
	e := newLinuxEnv(t, linuxTestArena)
	vm, err := NewLinuxVM(e.plat, testLinuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	e.vm = vm
	defer vm.Destroy()
	if bad := svm.Check(vm.VCPU.VMCB()); len(bad) != 0 {
		t.Errorf("VMRUN would refuse the VMCB: %v", bad)
	}
	// The state the guest is entered with on its first VMRUN.
	in := e.resume()[0]
	s, regs := &in.vmcb.State, &in.regs

	const load, zeroPage = 0x1000000, 0x7000
	if s.RIP != load+0x200 {
		t.Errorf("RIP %#x, want the 64-bit entry %#x", s.RIP, load+0x200)
	}
	if regs.RSI != zeroPage {
		t.Errorf("RSI %#x, want boot_params at %#x", regs.RSI, zeroPage)
	}
	if regs.RBX|regs.RCX|regs.RDX|regs.RDI|regs.RBP|s.RAX != 0 {
		t.Errorf("general registers not 0: %+v RAX %#x", regs, s.RAX)
	}
	if s.CR0&(svm.CR0PE|svm.CR0PG) != svm.CR0PE|svm.CR0PG || s.CR4&svm.CR4PAE == 0 {
		t.Errorf("CR0 %#x CR4 %#x: want PE, PG and PAE", s.CR0, s.CR4)
	}
	if want := uint64(svm.EFERSVME | svm.EFERLME | svm.EFERLMA); s.EFER != want {
		t.Errorf("EFER %#x, want SVME|LME|LMA %#x", s.EFER, want)
	}
	if s.RFLAGS&(1<<9) != 0 || s.RFLAGS&2 == 0 {
		t.Errorf("RFLAGS %#x: want IF clear, bit 1 set", s.RFLAGS)
	}
	if s.CPL != 0 {
		t.Errorf("CPL %d", s.CPL)
	}
	if s.GPAT != resetPAT || s.DR7 != resetDR7 || s.DR6 != resetDR6 {
		t.Errorf("PAT %#x DR6 %#x DR7 %#x, want the reset values", s.GPAT, s.DR6, s.DR7)
	}
	// CS: __BOOT_CS (0x10), 64-bit (L=1, D=0), present code; DS/ES/SS:
	// __BOOT_DS (0x18), present writable data.
	if s.CS.Selector != 0x10 || s.CS.Attrib&svm.SegL == 0 || s.CS.Attrib&svm.SegDB != 0 ||
		s.CS.Attrib&(svm.SegP|svm.SegS|svm.SegCode) != svm.SegP|svm.SegS|svm.SegCode {
		t.Errorf("CS %+v: want selector 0x10, a present 64-bit code segment", s.CS)
	}
	for name, seg := range map[string]svm.Segment{"DS": s.DS, "ES": s.ES, "SS": s.SS} {
		if seg.Selector != 0x18 || seg.Attrib&(svm.SegP|svm.SegS|svm.SegWrite|svm.SegCode) != svm.SegP|svm.SegS|svm.SegWrite {
			t.Errorf("%s %+v: want selector 0x18, a present writable data segment", name, seg)
		}
	}
	if s.TR.Attrib&svm.SegP == 0 {
		t.Errorf("TR %+v not present", s.TR)
	}
	// The GDT in guest RAM holds the descriptors the selectors name.
	le := binary.LittleEndian
	gdt := linuxRAM(t, vm, s.GDTR.Base, uint64(s.GDTR.Limit)+1)
	if len(gdt) < 0x20 || le.Uint64(gdt[0x10:]) != 0x00AF9B000000FFFF || le.Uint64(gdt[0x18:]) != 0x00CF93000000FFFF {
		t.Errorf("GDT at %#x: % x", s.GDTR.Base, gdt)
	}
	// The page tables at CR3 map the entry, the stack, boot_params and the
	// RAM end identity, writable, 2 MiB pages.
	for _, va := range []uint64{s.RIP, s.RSP - 8, zeroPage, 0xE0000, linuxTestMem - 1} {
		pa, ok := linuxWalk(t, vm, s.CR3, va)
		if !ok || pa != va {
			t.Errorf("page walk of %#x from CR3 %#x: %#x %v, want identity", va, s.CR3, pa, ok)
		}
	}
}

// linuxWalk translates va through 4-level long-mode tables (APM vol. 2, 5.3),
// expecting 2 MiB pages.
func linuxWalk(t *testing.T, vm *VM, cr3, va uint64) (uint64, bool) {
	const addr = 0x000FFFFFFFFFF000
	le := binary.LittleEndian
	table := cr3 & addr
	for level, shift := 0, 39; level < 3; level, shift = level+1, shift-9 {
		e := le.Uint64(linuxRAM(t, vm, table+(va>>shift&511)*8, 8))
		if e&1 == 0 || e&2 == 0 {
			return 0, false
		}
		if level == 2 {
			if e&0x80 == 0 {
				return 0, false
			}
			return e&addr&^(svm.Size2M-1) | va&(svm.Size2M-1), true
		}
		table = e & addr
	}
	return 0, false
}

func TestNewLinuxVMRefused(t *testing.T) {
	notBz := defaultTestBzImage().bytes()
	binary.LittleEndian.PutUint16(notBz[0x1FE:], 0)
	k32 := defaultTestBzImage()
	k32.xloadflags = 0
	shortCmd := defaultTestBzImage()
	shortCmd.cmdlineSize = 8
	for name, c := range map[string]struct {
		mod  func(*LinuxConfig)
		want string
	}{
		"no kernel":          {func(c *LinuxConfig) { c.Kernel = nil }, "truncated"},
		"not a bzImage":      {func(c *LinuxConfig) { c.Kernel = notBz }, "not a bzImage"},
		"ELF":                {func(c *LinuxConfig) { c.Kernel = append([]byte("\x7fELF"), make([]byte, 4096)...) }, "not a bzImage"},
		"32-bit kernel":      {func(c *LinuxConfig) { c.Kernel = k32.bytes() }, "64-bit"},
		"too little RAM":     {func(c *LinuxConfig) { c.MemSize = 32 << 20 }, "minimum"},
		"RAM not 2 MiB":      {func(c *LinuxConfig) { c.MemSize = 64<<20 + 4096 }, "multiple"},
		"too much RAM":       {func(c *LinuxConfig) { c.MemSize = 4 << 30 }, "maximum"},
		"long command line":  {func(c *LinuxConfig) { c.Kernel = shortCmd.bytes() }, "cmdline_size"},
		"NUL in cmdline":     {func(c *LinuxConfig) { c.Cmdline = "a\x00b" }, "NUL"},
		"initrd too big":     {func(c *LinuxConfig) { c.Initrd = make([]byte, 62<<20) }, "initrd"},
		"no room for kernel": {func(c *LinuxConfig) { c.Kernel = bigInit().bytes() }, "init_size"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newLinuxEnv(t, linuxTestArena)
			free := e.pool.FreeBytes()
			cfg := testLinuxConfig()
			c.mod(&cfg)
			vm, err := NewLinuxVM(e.plat, cfg)
			if err == nil {
				vm.Destroy()
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "linux: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want a linux: error about %q", err, c.want)
			}
			if got := e.pool.FreeBytes(); got != free {
				t.Errorf("pool has %d bytes free after the refusal, %d before", got, free)
			}
		})
	}
}

func bigInit() testBzImage {
	k := defaultTestBzImage()
	k.initSize = 60 << 20
	return k
}

// A VM the pool cannot hold is refused with everything given back; the
// same pool then builds and frees a VM that fits, again and again (no
// leaked memory or ASID).
func TestNewLinuxVMNoLeak(t *testing.T) {
	e := newLinuxEnv(t, linuxTestArena)
	free := e.pool.FreeBytes()
	cfg := testLinuxConfig()
	cfg.MemSize = 128 << 20
	if vm, err := NewLinuxVM(e.plat, cfg); err == nil {
		vm.Destroy()
		t.Fatal("a 128 MiB guest fit a 68 MiB pool")
	} else if !strings.HasPrefix(err.Error(), "linux: ") {
		t.Errorf("error %q", err)
	}
	if got := e.pool.FreeBytes(); got != free {
		t.Fatalf("pool has %d bytes free after the failure, %d before", got, free)
	}
	for i := 0; i < 20; i++ { // more rounds than the 16 ASIDs
		vm, err := NewLinuxVM(e.plat, testLinuxConfig())
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		vm.Destroy()
		if got := e.pool.FreeBytes(); got != free {
			t.Fatalf("round %d: pool has %d bytes free, %d before", i, got, free)
		}
	}
}

// Defaults: 256 MiB of RAM and the name "linux"; no initrd means
// ramdisk_image and ramdisk_size 0.
func TestNewLinuxVMDefaults(t *testing.T) {
	e := newLinuxEnv(t, LinuxDefaultMem+4<<20)
	vm, err := NewLinuxVM(e.plat, LinuxConfig{Kernel: defaultTestBzImage().bytes()})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Destroy()
	if vm.Mem.Size != LinuxDefaultMem || vm.Name != "linux" {
		t.Errorf("VM %q with %d MiB, want linux with 256 MiB", vm.Name, vm.Mem.Size>>20)
	}
	bp := linuxRAM(t, vm, vm.VCPU.Regs.RSI, 4096)
	le := binary.LittleEndian
	if le.Uint32(bp[0x218:]) != 0 || le.Uint32(bp[0x21C:]) != 0 {
		t.Errorf("ramdisk_image %#x size %#x without an initrd", le.Uint32(bp[0x218:]), le.Uint32(bp[0x21C:]))
	}
	cl := uint64(le.Uint32(bp[0x228:]))
	if b := linuxRAM(t, vm, cl, 1); b[0] != 0 {
		t.Errorf("empty command line at %#x is %q", cl, b)
	}
}

func TestParseMemSize(t *testing.T) {
	for s, want := range map[string]uint64{
		"268435456": 256 << 20, "256M": 256 << 20, "256m": 256 << 20, "1G": 1 << 30, "65536k": 64 << 20,
		" 128M\n": 128 << 20, "0": 0,
	} {
		if got, err := ParseMemSize(s); err != nil || got != want {
			t.Errorf("ParseMemSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "M", "-1", "1.5G", "12T", "0x100000", "99999999999999999999", "17179869184G"} {
		if got, err := ParseMemSize(s); err == nil {
			t.Errorf("ParseMemSize(%q) = %d, want an error", s, got)
		}
	}
}

func TestCheckLinuxMem(t *testing.T) {
	for in, want := range map[uint64]uint64{0: 256 << 20, 64 << 20: 64 << 20, 1 << 30: 1 << 30, 66 << 20: 66 << 20} {
		if got, err := CheckLinuxMem(in); err != nil || got != want {
			t.Errorf("CheckLinuxMem(%#x) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []uint64{62 << 20, 3<<30 + 2<<20, 65 << 20, 64<<20 + 4096} {
		if _, err := CheckLinuxMem(in); err == nil {
			t.Errorf("CheckLinuxMem(%#x) accepted", in)
		}
	}
}

// TestNewLinuxVMCachedKernel loads the real Debian kernel and initramfs
// that guests/linux/fetch.sh caches, when they are there.
func TestNewLinuxVMCachedKernel(t *testing.T) {
	dir := os.Getenv("TAMAVISOR_LINUX_DIR")
	if dir == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			t.Skip(err)
		}
		dir = filepath.Join(c, "tamavisor", "linux")
	}
	k, err := os.ReadFile(filepath.Join(dir, "bzImage"))
	if err != nil {
		t.Skipf("no cached kernel (run guests/linux/fetch.sh): %v", err)
	}
	rd, err := os.ReadFile(filepath.Join(dir, "initramfs.cpio.gz"))
	if err != nil {
		t.Skipf("no cached initramfs: %v", err)
	}
	const mem = 128 << 20
	e := newLinuxEnv(t, mem+4<<20)
	vm, err := NewLinuxVM(e.plat, LinuxConfig{Kernel: k, Initrd: rd, Cmdline: "console=ttyS0", MemSize: mem})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Destroy()
	s := &vm.VCPU.VMCB().State
	if bad := svm.Check(vm.VCPU.VMCB()); len(bad) != 0 {
		t.Errorf("VMRUN would refuse the VMCB: %v", bad)
	}
	bp := linuxRAM(t, vm, vm.VCPU.Regs.RSI, 4096)
	rdAt := uint64(binary.LittleEndian.Uint32(bp[0x218:]))
	if !bytes.Equal(linuxRAM(t, vm, rdAt, uint64(len(rd))), rd) {
		t.Errorf("initramfs not at %#x", rdAt)
	}
	t.Logf("kernel of %d KiB entered at %#x, initramfs of %d KiB at %#x", len(k)>>10, s.RIP, len(rd)>>10, rdAt)
}
