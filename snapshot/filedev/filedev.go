// Package filedev implements snapshot.BlockDevice over a host file (a disk
// image), for tests and host tools. It is not used on bare metal.
package filedev

import (
	"fmt"
	"os"

	"tamavisor/snapshot"
)

// Device is a disk image file used as a block device.
type Device struct {
	f      *os.File
	sector int
	size   int64
}

// Open opens an existing image. Its size, rounded down to a whole sector,
// is the device size.
func Open(path string, sector int) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return newDevice(f, sector)
}

// OpenReadOnly opens an existing image for reading; writes fail.
func OpenReadOnly(path string, sector int) (*Device, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return newDevice(f, sector)
}

// Create creates (or truncates) an image of size bytes, all zero.
func Create(path string, size int64, sector int) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	return newDevice(f, sector)
}

func newDevice(f *os.File, sector int) (*Device, error) {
	if sector < 512 || sector&(sector-1) != 0 {
		f.Close()
		return nil, fmt.Errorf("filedev: bad sector size %d", sector)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Device{f: f, sector: sector, size: st.Size() / int64(sector) * int64(sector)}, nil
}

func (d *Device) SectorSize() int { return d.sector }
func (d *Device) Size() int64     { return d.size }

func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if err := snapshot.CheckRequest(d.sector, d.size, len(p), off); err != nil {
		return 0, err
	}
	return d.f.ReadAt(p, off)
}

func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if err := snapshot.CheckRequest(d.sector, d.size, len(p), off); err != nil {
		return 0, err
	}
	return d.f.WriteAt(p, off)
}

// Flush makes completed writes durable (fsync).
func (d *Device) Flush() error { return d.f.Sync() }

// Close closes the file.
func (d *Device) Close() error { return d.f.Close() }
