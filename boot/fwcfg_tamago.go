//go:build tamago && amd64

package boot

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"tamavisor/boot/fwcfg"
	"tamavisor/internal/x86"
)

// fw_cfg DMA interface (QEMU docs/specs/fw_cfg.rst, "DMA interface"): the
// guest writes the physical address of an access descriptor, big-endian,
// to the DMA address register; writing its low half starts the transfer,
// which is complete when the write returns. It moves a multi-megabyte
// kernel in one exit instead of one byte per REP INSB iteration.
const (
	fwcfgDMAHigh   = 0x514  // DMA address, bits 63:32 (big-endian)
	fwcfgDMALow    = 0x518  // DMA address, bits 31:0 (big-endian); writing it starts the transfer
	fwcfgIDDMA     = 1 << 1 // feature bit of the ID item: DMA interface present
	fwcfgDMAError  = 1 << 0 // control: the transfer failed
	fwcfgDMARead   = 1 << 1 // control: read
	fwcfgDMAMinLen = 4096   // below this, port reads are as cheap
)

// fwcfgDMAAccess is the access descriptor: control, length, address,
// all big-endian.
type fwcfgDMAAccess struct {
	control, length uint32
	address         uint64
}

var (
	fwcfgDMAKnown, fwcfgDMA bool
	fwcfgDesc               fwcfgDMAAccess // reused: one transfer at a time
)

// FWCfgPort is QEMU's fw_cfg device reached through port I/O, with DMA for
// large reads where the device offers it.
type FWCfgPort struct{}

// Select selects an item (and, the first time, checks for DMA).
func (FWCfgPort) Select(sel uint16) {
	if !fwcfgDMAKnown {
		fwcfgDMAKnown = true
		var id [4]byte
		x86.Out16(fwcfg.PortSelector, fwcfg.SelID)
		x86.InsB(fwcfg.PortData, id[:])
		fwcfgDMA = binary.LittleEndian.Uint32(id[:])&fwcfgIDDMA != 0
	}
	x86.Out16(fwcfg.PortSelector, sel)
}

// Read reads the next len(buf) bytes of the selected item.
func (FWCfgPort) Read(buf []byte) {
	if fwcfgDMA && len(buf) >= fwcfgDMAMinLen && readDMA(buf) {
		return
	}
	x86.InsB(fwcfg.PortData, buf)
}

// readDMA reads buf through the DMA interface; false if the device
// reported an error (the caller falls back to port reads from the same
// position: a failed transfer moves nothing).
func readDMA(buf []byte) bool {
	d := &fwcfgDesc
	d.control = bits.ReverseBytes32(fwcfgDMARead)
	d.length = bits.ReverseBytes32(uint32(len(buf)))
	d.address = bits.ReverseBytes64(uint64(uintptr(unsafe.Pointer(&buf[0]))))
	pa := uint64(uintptr(unsafe.Pointer(d))) // identity-mapped: physical = virtual
	x86.Out32(fwcfgDMAHigh, bits.ReverseBytes32(uint32(pa>>32)))
	x86.Out32(fwcfgDMALow, bits.ReverseBytes32(uint32(pa)))
	return bits.ReverseBytes32(d.control)&fwcfgDMAError == 0
}
