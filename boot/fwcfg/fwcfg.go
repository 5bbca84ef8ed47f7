// Package fwcfg reads QEMU's firmware configuration device (fw_cfg): named
// files that the QEMU command line hands to the firmware, such as
// `-fw_cfg name=opt/tamavisor/guest,file=guest.bin`.
//
// It implements the I/O port interface of QEMU's docs/specs/fw_cfg.rst: a
// 16-bit selector register at port 0x510 and an 8-bit data register at
// 0x511. Parsing is plain Go over a Port so the host `go test` runs it.
package fwcfg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// I/O ports and well-known selectors (docs/specs/fw_cfg.rst).
const (
	PortSelector = 0x510
	PortData     = 0x511

	SelSignature = 0x0000 // "QEMU"
	SelID        = 0x0001 // feature bits
	SelFileDir   = 0x0019 // file directory

	Signature   = "QEMU"
	fileNameLen = 56
	dirEntryLen = 64
	maxFiles    = 4096
)

// Port is the raw device: select an item, then read its bytes in order.
type Port interface {
	Select(sel uint16)
	Read(buf []byte)
}

// File is one entry of the fw_cfg file directory.
type File struct {
	Name     string
	Size     uint32
	Selector uint16
}

// Device is an fw_cfg device with its file directory read.
type Device struct {
	port  Port
	files []File
}

// ErrAbsent is returned when no fw_cfg device answers.
var ErrAbsent = errors.New("fwcfg: no QEMU fw_cfg device (signature missing)")

// Open checks the signature and reads the file directory. The directory is
// big-endian: a 32-bit count, then 64-byte entries of size, selector,
// reserved and a NUL-terminated name.
func Open(p Port) (*Device, error) {
	sig := make([]byte, 4)
	p.Select(SelSignature)
	p.Read(sig)
	if string(sig) != Signature {
		return nil, ErrAbsent
	}
	var hdr [4]byte
	p.Select(SelFileDir)
	p.Read(hdr[:])
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFiles {
		return nil, fmt.Errorf("fwcfg: file directory claims %d files (max %d)", n, maxFiles)
	}
	d := &Device{port: p}
	ent := make([]byte, dirEntryLen)
	for i := uint32(0); i < n; i++ {
		p.Read(ent)
		name := string(ent[8 : 8+fileNameLen])
		if j := strings.IndexByte(name, 0); j >= 0 {
			name = name[:j]
		}
		d.files = append(d.files, File{
			Size:     binary.BigEndian.Uint32(ent[0:4]),
			Selector: binary.BigEndian.Uint16(ent[4:6]),
			Name:     name,
		})
	}
	return d, nil
}

// Files lists the directory.
func (d *Device) Files() []File { return d.files }

// Lookup finds a file by name.
func (d *Device) Lookup(name string) (File, bool) {
	for _, f := range d.files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// ReadFile returns the contents of a named file, refusing files larger than
// max bytes so a bad command line cannot exhaust memory.
func (d *Device) ReadFile(name string, max uint32) ([]byte, error) {
	f, ok := d.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("fwcfg: no file %q", name)
	}
	if f.Size > max {
		return nil, fmt.Errorf("fwcfg: file %q is %d bytes, more than the %d allowed", name, f.Size, max)
	}
	buf := make([]byte, f.Size)
	d.port.Select(f.Selector)
	d.port.Read(buf)
	return buf, nil
}
