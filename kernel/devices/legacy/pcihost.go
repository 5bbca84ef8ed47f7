package legacy

import (
	"encoding/binary"
	"fmt"
	"sync"

	"tamavisor/kernel/devices"
)

// PCI configuration mechanism #1 (PCI Local Bus Specification 3.0,
// 3.2.2.3.2) and the ICH's reset control register inside its range.
const (
	CONFIG_ADDRESS = 0xCF8 // 32-bit accesses only
	RST_CNT        = 0xCF9 // byte accesses only (Intel ICH datasheets, "RST_CNT")
	CONFIG_DATA    = 0xCFC // 0xCFC-0xCFF: the addressed configuration dword

	// PCIPorts is the number of ports at CONFIG_ADDRESS.
	PCIPorts = 8

	CONFIG_ENABLE = 1 << 31 // CONFIG_ADDRESS: enable configuration cycles
	// configAddressKeep are the bits of CONFIG_ADDRESS that hold: enable,
	// bus, device, function, register; bits 30:24 are reserved and read
	// 0, bits 1:0 are 0 for type 0 translation.
	configAddressKeep = CONFIG_ENABLE | 0x00FFFFFC
)

// RST_CNT bits.
const (
	SYS_RST  = 0x02 // system reset (hard) rather than CPU-only (soft)
	RST_CPU  = 0x04 // 0 to 1 starts the reset selected by SYS_RST, FULL_RST
	FULL_RST = 0x08 // full reset: power cycle
	// rstCntKeep are the bits that read back; RST_CPU is not kept: the
	// reset happens when it is written.
	rstCntKeep = SYS_RST | FULL_RST
)

// The host bridge's own configuration header at bus 0, device 0,
// function 0 (PCI Local Bus Specification 3.0, 6.1, header type 0). It
// has no BARs, no capabilities and ignores writes. The IDs are those
// Red Hat assigned to a virtual host bridge (QEMU's docs/specs/pci-ids):
// a vendor ID no real chipset quirk in a guest matches.
const (
	HostBridgeVendor = 0x1B36   // Red Hat, Inc.
	HostBridgeDevice = 0x0008   // virtual host bridge
	HostBridgeClass  = 0x060000 // base class 06 (bridge), subclass 00 (host), interface 00
	HostBridgeRev    = 0x00
	// Configuration header registers read here (dword offsets).
	pciVendorDevice = 0x00
	pciClassRev     = 0x08
)

// PCIHost is a PCI host bridge: the bridge itself at 00:00.0 and no
// device behind it. CONFIG_ADDRESS holds and reads back what a 32-bit
// write put there; configuration data reads the bridge's read-only header
// when CONFIG_ADDRESS selects 00:00.0 and as all ones (no device)
// elsewhere, and ignores writes. Byte and word accesses to 0xCF8-0xCFB
// other than RST_CNT reach no register, as on the PC, and read as all
// ones: so Linux's probe finds mechanism #1 and, through the host bridge
// class, passes its sanity check, and finds no mechanism #2 (which would
// need byte reads of 0xCF8 and 0xCFA to read back 0).
//
// RST_CNT keeps SYS_RST and FULL_RST; writing it with RST_CPU set calls
// the reset callback (soft and hard resets are the same here: one vCPU).
// Linux writes SYS_RST first, then SYS_RST|RST_CPU (|FULL_RST).
type PCIHost struct {
	mu     sync.Mutex
	addr   uint32
	rstCnt uint8
	reset  func()
}

// NewPCIHost returns a host bridge calling reset (nil: nothing) when the
// guest resets the machine through RST_CNT.
func NewPCIHost(reset func()) *PCIHost {
	if reset == nil {
		reset = func() {}
	}
	return &PCIHost{reset: reset}
}

// Register puts the bridge on bus at CONFIG_ADDRESS..CONFIG_DATA+3.
func (h *PCIHost) Register(bus *devices.Bus) error {
	return bus.Register(CONFIG_ADDRESS, PCIPorts, h)
}

// In implements devices.PortDevice.
func (h *PCIHost) In(port uint16, size uint8) uint32 {
	if !validSize(size) {
		return devices.Floating
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case port == CONFIG_ADDRESS && size == 4:
		return h.addr
	case port == RST_CNT && size == 1:
		return uint32(h.rstCnt)
	case port >= CONFIG_DATA:
		// The bytes of the addressed dword from the port's offset; bytes
		// past its end read as all ones.
		dword := uint64(h.configRead()) | 0xFFFFFFFF<<32
		v := uint32(dword >> (8 * (port - CONFIG_DATA)))
		return v & floating(size)
	}
	return floating(size)
}

// configRead returns the configuration dword CONFIG_ADDRESS selects.
// The caller holds h.mu.
func (h *PCIHost) configRead() uint32 {
	const selectBusDevFn = 0x00FFFF00 // bus 23:16, device 15:11, function 10:8
	if h.addr&CONFIG_ENABLE == 0 || h.addr&selectBusDevFn != 0 {
		return devices.Floating
	}
	switch h.addr & 0xFC {
	case pciVendorDevice:
		return HostBridgeVendor | HostBridgeDevice<<16
	case pciClassRev:
		return HostBridgeClass<<8 | HostBridgeRev
	}
	return 0
}

// Out implements devices.PortDevice.
func (h *PCIHost) Out(port uint16, size uint8, v uint32) {
	reset := false
	h.mu.Lock()
	switch {
	case port == CONFIG_ADDRESS && size == 4:
		h.addr = v & configAddressKeep
	case port == RST_CNT && size == 1:
		h.rstCnt = uint8(v) & rstCntKeep
		reset = v&RST_CPU != 0
	}
	h.mu.Unlock()
	if reset {
		h.reset()
	}
}

// MarshalState returns the bridge's state, version StateVersion: 5
// bytes, CONFIG_ADDRESS (little endian) then RST_CNT.
func (h *PCIHost) MarshalState() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := binary.LittleEndian.AppendUint32(nil, h.addr)
	return append(b, h.rstCnt)
}

// UnmarshalState restores a state produced by MarshalState; it rejects
// bits the registers never hold, leaving the state unchanged.
func (h *PCIHost) UnmarshalState(version uint16, b []byte) error {
	if err := checkState("PCIHost", 5, version, b); err != nil {
		return err
	}
	addr := binary.LittleEndian.Uint32(b)
	if addr&^configAddressKeep != 0 {
		return fmt.Errorf("%w: PCIHost CONFIG_ADDRESS = %#x", devices.ErrStateInvalid, addr)
	}
	if b[4]&^rstCntKeep != 0 {
		return fmt.Errorf("%w: PCIHost RST_CNT = %#x", devices.ErrStateInvalid, b[4])
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addr, h.rstCnt = addr, b[4]
	return nil
}
