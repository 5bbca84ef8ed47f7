package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// bootChain plans, builds boot_params and pieces for an accepted image and
// checks what comes out; Plan may refuse, the rest must then succeed.
func bootChain(t *testing.T, img *BzImage, ram, initrdLen uint64, cmdline string) {
	l, err := Plan(ram, img, initrdLen, cmdline)
	if err != nil {
		var le *Error
		if !errors.As(err, &le) || l != nil {
			t.Fatalf("Plan: %T %v", err, err)
		}
		return
	}
	if l.Kernel < HighMemStart || l.KernelEnd > ram || l.KernelEnd-l.Kernel < uint64(len(img.Payload)) ||
		l.KernelEnd-l.Kernel < uint64(img.InitSize) || img.Relocatable && l.Kernel%uint64(img.KernelAlignment) != 0 {
		t.Fatalf("kernel [%#x, %#x) in RAM %#x for %+v", l.Kernel, l.KernelEnd, ram, img)
	}
	if l.InitrdSize != initrdLen {
		t.Fatalf("initrd size %d, asked %d", l.InitrdSize, initrdLen)
	}
	if initrdLen > 0 && img.Xloadflags&XLF_CAN_BE_LOADED_ABOVE_4G == 0 && l.Initrd+initrdLen-1 > uint64(img.InitrdAddrMax) {
		t.Fatalf("initrd [%#x, +%#x) above initrd_addr_max %#x", l.Initrd, initrdLen, img.InitrdAddrMax)
	}
	mm, err := DefaultMemoryMap(ram)
	if err != nil {
		t.Fatal(err)
	}
	bp, err := BuildBootParams(img, l, mm, 0)
	if err != nil {
		t.Fatalf("BuildBootParams after Plan: %v", err)
	}
	if !bytes.Equal(bp[0x202:0x206], []byte("HdrS")) || bp[0x210] != 0xFF {
		t.Fatal("boot_params header")
	}
	var initrd []byte
	if initrdLen <= 1<<20 {
		initrd = make([]byte, initrdLen)
	} else {
		return
	}
	p, err := l.Pieces(img, initrd, bp)
	if err != nil {
		t.Fatalf("Pieces: %v", err)
	}
	checkPieces(t, l, p)
}

// FuzzParseBzImage: ParseBzImage never panics, refuses with *Error, and what
// it accepts is a consistent 64-bit bzImage that plans or is refused cleanly.
func FuzzParseBzImage(f *testing.F) {
	f.Add(validImage(), uint32(64<<20), uint32(4096), "console=ttyS0")
	h := defHdr()
	h.setupSects, h.jump[1], h.version = 0, 0x62, 0x020C
	f.Add(h.bytes(testPayload[:16]), uint32(32<<20), uint32(0), "")
	h = defHdr()
	h.reloc, h.pref, h.xlf, h.initrdMax = 0, 0x200000, 1, 0x3FFFFFF
	f.Add(h.bytes(testPayload), uint32(128<<20), uint32(1<<20), "a b c")
	f.Add(validImage()[:0x264], uint32(64<<20), uint32(1), "x")
	f.Add([]byte{}, uint32(0), uint32(0), "")
	f.Fuzz(func(t *testing.T, b []byte, ram, initrdLen uint32, cmdline string) {
		img, err := ParseBzImage(b)
		if err != nil {
			var le *Error
			if img != nil || !errors.As(err, &le) {
				t.Fatalf("%v with image %v", err, img)
			}
			return
		}
		end := 0x202 + int(int8(b[0x201]))
		setup := (img.SetupSects + 1) * 512
		switch {
		case !bytes.Equal(img.Header, b[0x1F1:end]) || end < 0x264:
			t.Fatalf("header [0x1f1, %#x) of %d bytes", end, len(img.Header))
		case len(img.Payload) == 0 || len(b)-len(img.Payload) != setup || img.SetupSects < 1:
			t.Fatalf("payload of %d bytes, setup %d, file %d", len(img.Payload), setup, len(b))
		case img.Version < 0x020C || img.Loadflags&LOADED_HIGH == 0 || img.Xloadflags&XLF_KERNEL_64 == 0:
			t.Fatalf("accepted %+v", img)
		case binary.LittleEndian.Uint16(b[0x1FE:]) != 0xAA55 || string(b[0x202:0x206]) != "HdrS":
			t.Fatal("accepted without boot flag or magic")
		}
		bootChain(t, img, uint64(ram)&^0xFFF, uint64(initrdLen), cmdline)
	})
}

// FuzzPlan: for any header values, RAM size, initrd length and command
// line, the layout is refused or sound.
func FuzzPlan(f *testing.F) {
	f.Add(uint64(0x1000000), uint32(0x200000), uint32(0x800000), uint32(0x7FFFFFFF), uint16(3), true, uint64(64<<20), uint64(1<<20), uint16(12))
	f.Add(uint64(0), uint32(4096), uint32(16), uint32(0xFFFFF), uint16(1), true, uint64(2<<20), uint64(4096), uint16(0))
	f.Add(uint64(0x100000), uint32(0), uint32(0xFFFFFFFF), uint32(0), uint16(1), false, uint64(0xFEC00000), uint64(0), uint16(2047))
	f.Add(^uint64(0), uint32(1<<30), uint32(1), uint32(0x17FFFFF), uint16(1), true, uint64(0x1801000), uint64(0xF00000), uint16(3000))
	f.Fuzz(func(t *testing.T, pref uint64, align, initSize, initrdMax uint32, xlf uint16, reloc bool, ram, initrdLen uint64, cmdLen uint16) {
		h := defHdr()
		h.pref, h.align, h.initSize, h.initrdMax, h.xlf = pref, align, initSize, initrdMax, xlf|XLF_KERNEL_64
		h.reloc = 0
		if reloc {
			h.reloc = 1
		}
		img, err := ParseBzImage(h.bytes(testPayload))
		if err != nil {
			return // alignment or init_size refused: ParseBzImage's business
		}
		cmdline := string(bytes.Repeat([]byte{'c'}, int(cmdLen)))
		bootChain(t, img, ram, initrdLen, cmdline)
	})
}
