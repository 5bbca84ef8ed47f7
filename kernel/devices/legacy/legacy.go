// Package legacy models the small PC platform stubs an unmodified Linux
// kernel probes, each answering just enough for the probe to conclude
// cleanly:
//
//   - POST, the BIOS power-on self test code port 0x80 (IBM PC/AT
//     convention; Linux writes it as an I/O delay);
//   - PCIHost, PCI configuration mechanism #1 at 0xCF8-0xCFF (PCI Local
//     Bus Specification 3.0, 3.2.2.3.2) with no device behind it, and the
//     reset control register RST_CNT at 0xCF9 (Intel ICH datasheets);
//   - I8042, the keyboard controller at 0x60 and 0x64 (IBM PC/AT
//     Technical Reference, "Keyboard Controller"), absent except for its
//     reset line.
//
// Register each on the port bus with its Register method. The types are
// safe for concurrent use; a reset callback is called from Out, on the
// vCPU's goroutine, with no lock held.
package legacy

import (
	"fmt"

	"tamavisor/kernel/devices"
)

// StateVersion is the version of every snapshot encoding in this package.
const StateVersion = 1

func checkState(model string, wantLen int, version uint16, b []byte) error {
	if version != StateVersion {
		return fmt.Errorf("%w: %s state version %d, want %d", devices.ErrStateVersion, model, version, StateVersion)
	}
	if len(b) != wantLen {
		return fmt.Errorf("%w: %s state is %d bytes, want %d", devices.ErrStateLength, model, len(b), wantLen)
	}
	return nil
}

func validSize(size uint8) bool { return size == 1 || size == 2 || size == 4 }

// floating returns what a size-byte read nobody answers returns.
func floating(size uint8) uint32 { return devices.Floating >> (32 - 8*uint32(size)) }
