//go:build tamago && amd64

package boot

import (
	"tamavisor/boot/fwcfg"
	"tamavisor/internal/x86"
)

// FWCfgPort is QEMU's fw_cfg device reached through port I/O.
type FWCfgPort struct{}

func (FWCfgPort) Select(sel uint16) { x86.Out16(fwcfg.PortSelector, sel) }
func (FWCfgPort) Read(buf []byte)   { x86.InsB(fwcfg.PortData, buf) }
