// Package pci reads and sizes PCI configuration space for tamavisor's
// board code: ECAM addresses from the ACPI MCFG table (PCI Firmware
// Specification 3.3 section 4.1.2; PCI Express Base Specification
// section 7.2.2, ECAM), enumeration of functions, BAR sizing including
// 64-bit BARs (PCI Local Bus Specification 3.0 section 6.2.5.1), and
// finding functions by class code, such as NVMe controllers.
//
// The package is pure Go and host-testable: configuration accesses go
// through Config. A TamaGo implementation maps ECAM addresses to 32-bit
// volatile loads and stores.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Addr is a function's bus/device/function address in one segment.
type Addr struct {
	Bus      uint8
	Device   uint8 // 0-31
	Function uint8 // 0-7
}

func (a Addr) String() string { return fmt.Sprintf("%02x:%02x.%x", a.Bus, a.Device, a.Function) }

// Config is 32-bit access to configuration space. off is a dword-aligned
// register offset (0-4095 with ECAM).
type Config interface {
	Read32(a Addr, off uint16) uint32
	Write32(a Addr, off uint16, v uint32)
}

// Configuration header registers (PCI Local Bus 3.0 section 6.1).
const (
	VendorID      = 0x00 // 15:0 Vendor ID, 31:16 Device ID
	Command       = 0x04 // 15:0 Command, 31:16 Status
	ClassRevision = 0x08 // 7:0 Revision ID, 15:8 Prog IF, 23:16 Subclass, 31:24 Class
	HeaderType    = 0x0c // byte 2 (offset 0x0e): 6:0 layout, 7 multi-function
	BAR0          = 0x10

	Command_IO        = 0 // I/O Space enable
	Command_MEM       = 1 // Memory Space enable
	Command_BUSMASTER = 2 // Bus Master enable

	headerTypeShift = 16
	headerLayout    = 0x7f
	headerMulti     = 0x80
	layoutDevice    = 0x00 // type 0: six BARs
	layoutBridge    = 0x01 // type 1: two BARs
	barsDevice      = 6
	barsBridge      = 2

	noVendor = 0xffff // no function at this address

	BAR_IO        = 0 // bit 0: I/O space BAR
	BAR_TYPE      = 1 // 2:1 memory type: 00 32-bit, 10 64-bit
	BAR_PREFETCH  = 3
	barType64     = 2
	barTypeMask   = 3
	barMemMask    = 0xf // low bits of a memory BAR that are not address
	barIOMask     = 0x3
	barStride     = 4
	allOnes32     = 0xffffffff
	commandMask16 = 0xffff
)

// Class codes (PCI Code and ID Assignment Specification).
const (
	ClassStorage      = 0x01
	SubclassNVM       = 0x08
	ProgIFNVMe        = 0x02
	ClassNetwork      = 0x02
	classShift        = 24
	subclassShift     = 16
	progIFShift       = 8
	maxDevice         = 32
	maxFunction       = 8
	ecamBusShift      = 20
	ecamDeviceShift   = 15
	ecamFunctionShift = 12
	ecamRegisterMask  = 0xfff
	mcfgHeaderLen     = 36 + 8 // ACPI table header and 8 reserved bytes
	mcfgEntryLen      = 16
	mcfgBase          = 0  // entry: base address, 64-bit
	mcfgSegment       = 8  // PCI segment group, 16-bit
	mcfgStartBus      = 10 // start bus number
	mcfgEndBus        = 11 // end bus number
	acpiLengthOff     = 4
	acpiSignatureLen  = 4
	mcfgSignature     = "MCFG"
)

// ECAM is one MCFG allocation: the memory-mapped configuration space of
// buses StartBus..EndBus of a segment. Base is the address of bus 0's
// space, even if StartBus is larger.
type ECAM struct {
	Base             uint64
	Segment          uint16
	StartBus, EndBus uint8
}

// Address returns the physical address of register off of function a,
// or false if a's bus is outside the allocation or a is malformed.
func (e ECAM) Address(a Addr, off uint16) (uint64, bool) {
	if a.Bus < e.StartBus || a.Bus > e.EndBus || a.Device >= maxDevice || a.Function >= maxFunction || off > ecamRegisterMask {
		return 0, false
	}
	return e.Base + uint64(a.Bus)<<ecamBusShift | uint64(a.Device)<<ecamDeviceShift |
		uint64(a.Function)<<ecamFunctionShift | uint64(off), true
}

// ParseMCFG returns the allocations of an ACPI MCFG table.
func ParseMCFG(table []byte) ([]ECAM, error) {
	if len(table) < mcfgHeaderLen || string(table[:acpiSignatureLen]) != mcfgSignature {
		return nil, errors.New("pci: not an MCFG table")
	}
	n := int(binary.LittleEndian.Uint32(table[acpiLengthOff:]))
	if n < mcfgHeaderLen || n > len(table) || (n-mcfgHeaderLen)%mcfgEntryLen != 0 {
		return nil, fmt.Errorf("pci: MCFG length %d (have %d bytes)", n, len(table))
	}
	var out []ECAM
	for e := table[mcfgHeaderLen:n]; len(e) > 0; e = e[mcfgEntryLen:] {
		m := ECAM{
			Base:     binary.LittleEndian.Uint64(e[mcfgBase:]),
			Segment:  binary.LittleEndian.Uint16(e[mcfgSegment:]),
			StartBus: e[mcfgStartBus],
			EndBus:   e[mcfgEndBus],
		}
		if m.EndBus < m.StartBus || m.Base&(1<<ecamBusShift-1) != 0 {
			return nil, fmt.Errorf("pci: MCFG entry %+v: bad bus range or unaligned base", m)
		}
		out = append(out, m)
	}
	return out, nil
}

// Function is one function found by Enumerate.
type Function struct {
	Addr
	VendorID, DeviceID uint16
	Class              uint32 // class<<16 | subclass<<8 | prog IF
	Revision           uint8
	Bridge             bool
}

// Enumerate lists the functions on buses first..last: function 0 of each
// device, and functions 1-7 of multi-function devices. It relies on the
// firmware's bus numbering (it does not program bridges).
func Enumerate(c Config, first, last uint8) []Function {
	var out []Function
	for bus := int(first); bus <= int(last); bus++ {
		for dev := range uint8(maxDevice) {
			for fn := range uint8(maxFunction) {
				a := Addr{uint8(bus), dev, fn}
				id := c.Read32(a, VendorID)
				if uint16(id) == noVendor {
					if fn == 0 {
						break
					}
					continue
				}
				cr := c.Read32(a, ClassRevision)
				ht := uint8(c.Read32(a, HeaderType) >> headerTypeShift)
				out = append(out, Function{Addr: a, VendorID: uint16(id), DeviceID: uint16(id >> 16),
					Class: cr >> progIFShift, Revision: uint8(cr), Bridge: ht&headerLayout == layoutBridge})
				if fn == 0 && ht&headerMulti == 0 {
					break
				}
			}
		}
	}
	return out
}

// Find returns the functions of fs with the given class, subclass and
// programming interface (for NVMe: ClassStorage, SubclassNVM, ProgIFNVMe).
func Find(fs []Function, class, subclass, progIF uint8) []Function {
	want := uint32(class)<<(classShift-progIFShift) | uint32(subclass)<<(subclassShift-progIFShift) | uint32(progIF)
	var out []Function
	for _, f := range fs {
		if f.Class == want {
			out = append(out, f)
		}
	}
	return out
}

// BAR describes one base address register.
type BAR struct {
	Index        int    // 0-5; a 64-bit BAR occupies Index and Index+1
	Addr         uint64 // base address as programmed
	Size         uint64 // bytes decoded; 0 if the BAR is not implemented
	IO           bool
	Is64         bool
	Prefetchable bool
}

// BARs sizes every BAR of function a: it turns I/O and memory decoding
// off, writes all ones to each BAR, reads back the size mask and restores
// the BAR and the Command register.
func BARs(c Config, a Addr) ([]BAR, error) {
	n := barsDevice
	switch layout := uint8(c.Read32(a, HeaderType)>>headerTypeShift) & headerLayout; layout {
	case layoutDevice:
	case layoutBridge:
		n = barsBridge
	default:
		return nil, fmt.Errorf("pci: %v: header layout %#x has no BARs we know", a, layout)
	}
	cmd := c.Read32(a, Command)
	c.Write32(a, Command, cmd&commandMask16&^(1<<Command_IO|1<<Command_MEM))
	defer c.Write32(a, Command, cmd&commandMask16)
	var out []BAR
	for i := 0; i < n; i++ {
		off := uint16(BAR0 + barStride*i)
		lo := c.Read32(a, off)
		c.Write32(a, off, allOnes32)
		mlo := c.Read32(a, off)
		c.Write32(a, off, lo)
		b := BAR{Index: i}
		if lo&(1<<BAR_IO) != 0 {
			b.IO = true
			b.Addr = uint64(lo &^ barIOMask)
			b.Size = lowestBit(uint64(mlo &^ barIOMask)) // upper 16 bits may read 0
			out = append(out, b)
			continue
		}
		b.Prefetchable = lo&(1<<BAR_PREFETCH) != 0
		b.Addr = uint64(lo &^ barMemMask)
		mask := uint64(mlo &^ barMemMask)
		if (lo>>BAR_TYPE)&barTypeMask == barType64 {
			if i+1 >= n {
				return nil, fmt.Errorf("pci: %v: 64-bit BAR %d has no upper half", a, i)
			}
			hoff := off + barStride
			hi := c.Read32(a, hoff)
			c.Write32(a, hoff, allOnes32)
			mhi := c.Read32(a, hoff)
			c.Write32(a, hoff, hi)
			b.Is64 = true
			b.Addr |= uint64(hi) << 32
			mask = uint64(mhi)<<32 | uint64(mlo&^barMemMask)
			i++
		}
		b.Size = lowestBit(mask)
		out = append(out, b)
	}
	return out, nil
}

// lowestBit is the size a BAR's read-back mask encodes: its lowest
// writable address bit (0 if none: the BAR is not implemented).
func lowestBit(mask uint64) uint64 { return mask & -mask }

// EnableMemory turns on memory decoding and bus mastering (DMA) for a,
// as an NVMe controller needs before its registers are used.
func EnableMemory(c Config, a Addr) {
	cmd := c.Read32(a, Command) & commandMask16
	c.Write32(a, Command, cmd|1<<Command_MEM|1<<Command_BUSMASTER)
}
