//go:build tamago

package blk

import (
	"errors"

	"tamavisor/boot/dmamem"
	"tamavisor/boot/virtio"
)

// QEMU microvm virtio-mmio slots.
const (
	MicroVMBase   = 0xfeb00000
	MicroVMStride = 0x200
	MicroVMSlots  = 32
)

// ErrNotFound tells the user how to attach a disk.
var ErrNotFound = errors.New("no virtio-blk device: start QEMU with -global virtio-mmio.force-legacy=false " +
	"-drive if=none,id=d0,file=disk.img,format=raw -device virtio-blk-device,drive=d0")

// ProbeMicroVM returns the first virtio-blk device on the QEMU microvm
// virtio-mmio slots, using tamago's DMA region and zero-copy Phys. opt may
// be nil; its Phys, if nil, is set to dmamem.Phys.
func ProbeMicroVM(opt *Options) (*Device, error) {
	var o Options
	if opt != nil {
		o = *opt
	}
	if o.Phys == nil {
		o.Phys = dmamem.Phys
	}
	var legacy error
	for i := range MicroVMSlots {
		m, err := virtio.ProbeMMIO(virtio.PhysRegs(MicroVMBase + i*MicroVMStride))
		if err != nil {
			if !errors.Is(err, virtio.ErrNoMMIODevice) && legacy == nil {
				legacy = err
			}
			continue
		}
		if m.DeviceID() != DeviceID {
			continue
		}
		return New(m, dmamem.Region{}, o)
	}
	if legacy != nil {
		return nil, errors.Join(ErrNotFound, legacy)
	}
	return nil, ErrNotFound
}
