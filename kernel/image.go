package kernel

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"

	"tamavisor/svm"
)

// Guest image header (docs/guest-abi.md, "Guest image").
//
// Version 2 adds the payload's size and CRC-32C (Castagnoli) after the 64
// bytes of version 1, so that a truncated or damaged image is refused
// instead of run; version 1 is still accepted.
const (
	ImageMagic        = "TAMAVGST"
	ImageVersion      = 2  // what tamavisor's tools and guests/common.inc write
	ImageVersion1     = 1  // no payload size or checksum
	ImageHeaderSize   = 64 // version 1; the least header_size of any version
	ImageHeaderSizeV2 = 72
	imagePayloadSize  = 64 // version 2: payload size, u32
	imagePayloadCRC   = 68 // version 2: CRC-32C of the payload, u32
	// MaxGuestRAM caps a guest's RAM (mem_size, a Linux guest's MEM, a
	// restored snapshot's): what RAM below 4 GiB could hold after the
	// hypervisor's own ranges. What the pool really has is the limit in
	// practice (QEMU -m); asking for more fails with both numbers.
	MaxGuestRAM = 3 << 30
	maxNameLen  = 16
)

// Initial CPU modes of a guest image.
const (
	Mode16 = 16 // real mode
	Mode32 = 32 // flat protected mode, paging off
	Mode64 = 64 // long mode on an identity map built by tamavisor
)

// Guest-physical layout tamavisor writes for modes 32 and 64.
const (
	bootGDT      = 0x500  // 3 descriptors: null, code (0x08), data (0x10)
	bootGDTEnd   = 0x518  //
	bootPML4     = 0x1000 // mode 64 identity map: PML4, PDPT, PD (2 MiB pages)
	bootPDPT     = 0x2000
	bootPD       = 0x3000
	bootTableEnd = 0x4000
	selCode      = 0x08
	selData      = 0x10
)

// Image is a parsed guest image.
type Image struct {
	Mode    uint32
	LoadGPA uint64
	Entry   uint64
	MemSize uint64
	Name    string
	Payload []byte
}

// ImageError is a refused guest image.
type ImageError struct{ Reason string }

func (e *ImageError) Error() string { return "guest image refused: " + e.Reason }

func refuse(f string, a ...any) error { return &ImageError{fmt.Sprintf(f, a...)} }

// ParseImage checks a guest image and returns it. Every field is checked
// against the others so that loading cannot write outside guest RAM.
func ParseImage(b []byte) (*Image, error) {
	le := binary.LittleEndian
	if len(b) < ImageHeaderSize {
		return nil, refuse("%d bytes, shorter than the %d-byte header", len(b), ImageHeaderSize)
	}
	if string(b[:8]) != ImageMagic {
		return nil, refuse("bad magic %q (want %q)", sanitize(b[:8]), ImageMagic)
	}
	version := le.Uint32(b[8:])
	minHeader := uint64(ImageHeaderSize)
	switch version {
	case ImageVersion1:
	case ImageVersion:
		minHeader = ImageHeaderSizeV2
	default:
		return nil, refuse("header version %d (this tamavisor reads %d and %d)", version, ImageVersion1, ImageVersion)
	}
	hs := uint64(le.Uint32(b[12:]))
	if hs < minHeader || hs > uint64(len(b)) {
		return nil, refuse("header_size %d outside [%d, %d]", hs, minHeader, len(b))
	}
	if version == ImageVersion {
		size, sum := uint64(le.Uint32(b[imagePayloadSize:])), le.Uint32(b[imagePayloadCRC:])
		if size == 0 && le.Uint32(b[imagePayloadCRC:]) == 0 && uint64(len(b)) > hs {
			return nil, refuse("payload size and checksum are 0: the image was not stamped (go run ./cmd/tamavisor-image stamp FILE)")
		}
		if got := uint64(len(b)) - hs; got != size {
			return nil, refuse("payload is %d bytes, the header says %d (truncated or padded file?)", got, size)
		}
		if got := crc32.Checksum(b[hs:], castagnoli); got != sum {
			return nil, refuse("payload CRC-32C %08x, the header says %08x (damaged file?)", got, sum)
		}
	}
	img := &Image{
		Mode:    le.Uint32(b[16:]),
		LoadGPA: le.Uint64(b[24:]),
		Entry:   le.Uint64(b[32:]),
		MemSize: le.Uint64(b[40:]),
		Name:    sanitize(b[48 : 48+maxNameLen]),
		Payload: b[hs:],
	}
	if img.Name == "" {
		img.Name = "guest"
	}
	if f := le.Uint32(b[20:]); f != 0 {
		return nil, refuse("unknown flags %#x", f)
	}
	switch img.Mode {
	case Mode16, Mode32, Mode64:
	default:
		return nil, refuse("mode %d (want 16, 32 or 64)", img.Mode)
	}
	if img.MemSize == 0 || img.MemSize%svm.PageSize != 0 || img.MemSize > MaxGuestRAM {
		return nil, refuse("mem_size %#x must be a non-zero multiple of 4096 up to %d MiB", img.MemSize, MaxGuestRAM>>20)
	}
	end := img.LoadGPA + uint64(len(img.Payload))
	if end < img.LoadGPA || end > img.MemSize {
		return nil, refuse("payload [%#x, %#x) does not fit in mem_size %#x", img.LoadGPA, end, img.MemSize)
	}
	if img.Entry >= img.MemSize {
		return nil, refuse("entry %#x outside guest RAM (mem_size %#x)", img.Entry, img.MemSize)
	}
	if version == ImageVersion && (img.Entry < img.LoadGPA || img.Entry >= end) {
		return nil, refuse("entry %#x outside the payload [%#x, %#x)", img.Entry, img.LoadGPA, end)
	}
	if img.Mode == Mode16 && img.Entry > 0xffff {
		return nil, refuse("real-mode entry %#x above 64 KiB", img.Entry)
	}
	var lo, hi uint64
	switch img.Mode {
	case Mode32:
		lo, hi = bootGDT, bootGDTEnd
	case Mode64:
		lo, hi = bootGDT, bootTableEnd
	}
	if hi > 0 && img.LoadGPA < hi && end > lo {
		return nil, refuse("payload [%#x, %#x) overlaps tamavisor's boot structures at [%#x, %#x)", img.LoadGPA, end, lo, hi)
	}
	if hi > img.MemSize {
		return nil, refuse("mem_size %#x too small for mode %d boot structures", img.MemSize, img.Mode)
	}
	return img, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeImage returns img as an image file of the current version.
func EncodeImage(img *Image) []byte {
	le := binary.LittleEndian
	b := make([]byte, ImageHeaderSizeV2, ImageHeaderSizeV2+len(img.Payload))
	copy(b, ImageMagic)
	le.PutUint32(b[8:], ImageVersion)
	le.PutUint32(b[12:], ImageHeaderSizeV2)
	le.PutUint32(b[16:], img.Mode)
	le.PutUint64(b[24:], img.LoadGPA)
	le.PutUint64(b[32:], img.Entry)
	le.PutUint64(b[40:], img.MemSize)
	copy(b[48:48+maxNameLen], img.Name)
	b = append(b, img.Payload...)
	if err := StampImage(b); err != nil {
		panic(err) // the header above is well formed
	}
	return b
}

// StampImage fills in the payload size and CRC-32C of a version 2 image
// whose header an assembler wrote (guests/common.inc), in place.
func StampImage(b []byte) error {
	le := binary.LittleEndian
	if len(b) < ImageHeaderSizeV2 || string(b[:8]) != ImageMagic || le.Uint32(b[8:]) != ImageVersion {
		return refuse("not a version %d image", ImageVersion)
	}
	hs := uint64(le.Uint32(b[12:]))
	if hs < ImageHeaderSizeV2 || hs > uint64(len(b)) || uint64(len(b))-hs > 1<<32-1 {
		return refuse("header_size %d outside [%d, %d]", hs, ImageHeaderSizeV2, len(b))
	}
	le.PutUint32(b[imagePayloadSize:], uint32(uint64(len(b))-hs))
	le.PutUint32(b[imagePayloadCRC:], crc32.Checksum(b[hs:], castagnoli))
	return nil
}

// sanitize makes a NUL-padded header string printable.
func sanitize(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		s.WriteByte(c)
	}
	return s.String()
}

// Segment attributes in VMCB format (svm.Seg*).
const (
	attrCode16 = svm.SegP | svm.SegS | svm.SegCode | svm.SegWrite | svm.SegAccessed
	attrData16 = svm.SegP | svm.SegS | svm.SegWrite | svm.SegAccessed
	attrCode32 = attrCode16 | svm.SegDB | svm.SegG
	attrData32 = attrData16 | svm.SegDB | svm.SegG
	attrCode64 = attrCode16 | svm.SegL | svm.SegG
	attrLDT    = svm.SegP | svm.SegTypeLDT
	attrTR     = svm.SegP | svm.SegTypeTSS64Bsy
)

// Reset values (APM vol. 2, table 14-1) and the power-on PAT.
const (
	resetDR6 = 0xffff0ff0
	resetDR7 = 0x400
	resetPAT = 0x0007040600070406
)

// descriptor builds a flat GDT entry (APM vol. 2, 4.7) from VMCB-format
// attributes.
func descriptor(attrib uint16) uint64 {
	const limit = 0xfffff
	d := uint64(limit&0xffff) | uint64(limit>>16)<<48
	d |= uint64(attrib&0xff) << 40
	d |= uint64(attrib>>8&0xf) << 52
	return d
}

// load copies the payload into guest RAM, writes the boot structures of its
// mode and sets the initial register state in s.
func (img *Image) load(mem *GuestMemory, s *svm.StateSaveArea) error {
	// An empty payload may sit at load_gpa == mem_size: nothing to copy.
	if len(img.Payload) > 0 {
		if err := mem.WriteGPA(img.LoadGPA, img.Payload); err != nil {
			return err
		}
	}
	*s = svm.StateSaveArea{}
	s.EFER = svm.EFERSVME
	s.CR0 = svm.CR0ET
	s.RFLAGS = svm.RFLAGSFixed
	s.DR6, s.DR7 = resetDR6, resetDR7
	s.GPAT = resetPAT
	s.RIP = img.Entry
	s.LDTR = svm.Segment{Attrib: attrLDT, Limit: 0xffff}
	s.TR = svm.Segment{Attrib: attrTR, Limit: 0xffff}
	s.GDTR.Limit, s.IDTR.Limit = 0xffff, 0xffff

	var code, data uint16 = attrCode16, attrData16
	var limit uint32 = 0xffff
	var cs, ds uint16
	le := binary.LittleEndian
	if img.Mode != Mode16 {
		cs, ds, limit = selCode, selData, 0xffffffff
		code, data = attrCode32, attrData32
		if img.Mode == Mode64 {
			code = attrCode64
		}
		gdt := make([]byte, bootGDTEnd-bootGDT)
		le.PutUint64(gdt[selCode:], descriptor(code))
		le.PutUint64(gdt[selData:], descriptor(data))
		if err := mem.WriteGPA(bootGDT, gdt); err != nil {
			return err
		}
		s.GDTR = svm.Segment{Base: bootGDT, Limit: uint32(len(gdt) - 1)}
		s.IDTR.Limit = 0
		s.CR0 |= svm.CR0PE
	}
	if img.Mode == Mode64 {
		if err := identityMap1G(mem); err != nil {
			return err
		}
		s.CR3 = bootPML4
		s.CR4 = svm.CR4PAE
		s.CR0 |= svm.CR0PG
		s.EFER |= svm.EFERLME | svm.EFERLMA
	}
	s.CS = svm.Segment{Selector: cs, Attrib: code, Limit: limit}
	for _, seg := range []*svm.Segment{&s.DS, &s.ES, &s.SS, &s.FS, &s.GS} {
		*seg = svm.Segment{Selector: ds, Attrib: data, Limit: limit}
	}
	return nil
}

// Guest page-table bits for the mode-64 identity map (APM vol. 2, 5.3).
const (
	gptP  = 1 << 0
	gptRW = 1 << 1
	gptPS = 1 << 7
)

// identityMap1G maps the first 1 GiB with 2 MiB pages.
func identityMap1G(mem *GuestMemory) error {
	tables := make([]byte, bootTableEnd-bootPML4)
	le := binary.LittleEndian
	le.PutUint64(tables[0:], bootPDPT|gptP|gptRW)
	le.PutUint64(tables[bootPDPT-bootPML4:], bootPD|gptP|gptRW)
	for i := uint64(0); i < 512; i++ {
		le.PutUint64(tables[bootPD-bootPML4+i*8:], i*svm.Size2M|gptP|gptRW|gptPS)
	}
	return mem.WriteGPA(bootPML4, tables)
}
