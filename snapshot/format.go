package snapshot

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Format constants. See docs/snapshot-format.md.
const (
	// Magic starts every snapshot stream.
	Magic = "TAMASNAP"
	// FormatVersion is the version of the stream framing (header, chunk
	// framing, end record) this package writes and reads.
	FormatVersion = 1
	// HeaderSize is the size of the stream header in bytes.
	HeaderSize = 96
	// ChunkHeaderSize is the size of a chunk header in bytes.
	ChunkHeaderSize = 48
	// ChunkTrailerSize is the size of a chunk trailer (body CRC32C).
	ChunkTrailerSize = 4
	// MaxTypeLen is the longest chunk type name.
	MaxTypeLen = 24
	// PageSize is the guest page size used by RAM chunks.
	PageSize = 4096

	chunkMagic = "CHNK"
)

// Header flags.
const (
	// HeaderKeyed says the end record carries an HMAC-SHA256.
	HeaderKeyed uint32 = 1 << 0
)

// ChunkFlags are the flags of a chunk header.
type ChunkFlags uint16

// Chunk flags.
const (
	// Required marks a chunk a reader must understand: a reader that does
	// not know its type refuses the snapshot. A reader skips an unknown
	// chunk without it.
	Required ChunkFlags = 1 << 0

	knownChunkFlags = Required
)

// Core chunk types.
const (
	TypeManifest = "manifest"
	TypeRAM      = "ram"
	TypeEnd      = "end"
	// TypeChain lists the earlier streams of an increment in a store
	// slot; the store writes it (docs/snapshot-format.md, 5.2).
	TypeChain = "chain"
	// TypePad is optional zero bytes before the RAM chunk that start its
	// page data on a page boundary of the stream, which the store
	// starts on a page of the device, so that page data is written and
	// read in place by whole pages (docs/snapshot-format.md, 3.4).
	TypePad = "pad"
	// TypeVCPU is the conventional type for vCPU state; the instance is the
	// vCPU index.
	TypeVCPU = "vcpu"
	// DevicePrefix prefixes the chunk type of a device model's state:
	// "dev:" + device name, instance = device instance.
	DevicePrefix = "dev:"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Header is the fixed header at the start of a snapshot stream.
type Header struct {
	Version    uint16   // format version, FormatVersion
	Flags      uint32   // HeaderKeyed, ...
	Generation uint64   // store generation; 1 for the first snapshot
	Created    int64    // creation time, Unix nanoseconds (UTC)
	VMID       [16]byte // identity of the VM (e.g. a UUID)
	VMName     string   // up to 32 bytes, printable ASCII
}

func (h *Header) marshal() ([]byte, error) {
	if len(h.VMName) > 32 {
		return nil, fmt.Errorf("snapshot: VM name %q longer than 32 bytes", h.VMName)
	}
	if !printable(h.VMName, true) {
		return nil, fmt.Errorf("snapshot: VM name %q is not printable ASCII", h.VMName)
	}
	b := make([]byte, HeaderSize)
	copy(b[0:8], Magic)
	binary.LittleEndian.PutUint16(b[8:], h.Version)
	binary.LittleEndian.PutUint16(b[10:], HeaderSize)
	binary.LittleEndian.PutUint32(b[12:], h.Flags)
	binary.LittleEndian.PutUint64(b[16:], h.Generation)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.Created))
	copy(b[32:48], h.VMID[:])
	copy(b[48:80], h.VMName)
	binary.LittleEndian.PutUint32(b[92:], crc32c(b[:92]))
	return b, nil
}

func parseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("snapshot: header: %w", ErrShortBody)
	}
	if string(b[0:8]) != Magic {
		return h, fmt.Errorf("snapshot: header: bad magic %q", b[0:8])
	}
	if got, want := binary.LittleEndian.Uint32(b[92:]), crc32c(b[:92]); got != want {
		return h, fmt.Errorf("snapshot: header: checksum mismatch")
	}
	h.Version = binary.LittleEndian.Uint16(b[8:])
	if h.Version != FormatVersion {
		return h, fmt.Errorf("snapshot: header: format version %d not supported (this reader knows %d)", h.Version, FormatVersion)
	}
	if n := binary.LittleEndian.Uint16(b[10:]); n != HeaderSize {
		return h, fmt.Errorf("snapshot: header: size %d, want %d", n, HeaderSize)
	}
	h.Flags = binary.LittleEndian.Uint32(b[12:])
	if h.Flags&^HeaderKeyed != 0 {
		return h, fmt.Errorf("snapshot: header: unknown flags %#x", h.Flags)
	}
	h.Generation = binary.LittleEndian.Uint64(b[16:])
	h.Created = int64(binary.LittleEndian.Uint64(b[24:]))
	copy(h.VMID[:], b[32:48])
	name := b[48:80]
	n := 0
	for n < len(name) && name[n] != 0 {
		n++
	}
	for _, c := range name[n:] {
		if c != 0 {
			return h, fmt.Errorf("snapshot: header: VM name not NUL-padded")
		}
	}
	h.VMName = string(name[:n])
	if !printable(h.VMName, true) {
		return h, fmt.Errorf("snapshot: header: VM name is not printable ASCII")
	}
	for _, c := range b[80:92] {
		if c != 0 {
			return h, fmt.Errorf("snapshot: header: reserved bytes not zero")
		}
	}
	return h, nil
}

// chunkHeader is the framing before each chunk body.
type chunkHeader struct {
	Type     string
	Version  uint16
	Flags    ChunkFlags
	Instance uint32
	Length   uint64 // body length in bytes
}

func (c *chunkHeader) marshal(b []byte) {
	_ = b[ChunkHeaderSize-1]
	copy(b[0:4], chunkMagic)
	clear(b[4:28])
	copy(b[4:28], c.Type)
	binary.LittleEndian.PutUint16(b[28:], c.Version)
	binary.LittleEndian.PutUint16(b[30:], uint16(c.Flags))
	binary.LittleEndian.PutUint32(b[32:], c.Instance)
	binary.LittleEndian.PutUint64(b[36:], c.Length)
	binary.LittleEndian.PutUint32(b[44:], crc32c(b[:44]))
}

func parseChunkHeader(b []byte) (chunkHeader, error) {
	var c chunkHeader
	if len(b) < ChunkHeaderSize {
		return c, ErrShortBody
	}
	if string(b[0:4]) != chunkMagic {
		return c, fmt.Errorf("bad chunk magic %q", b[0:4])
	}
	if got, want := binary.LittleEndian.Uint32(b[44:]), crc32c(b[:44]); got != want {
		return c, fmt.Errorf("chunk header checksum mismatch")
	}
	name := b[4:28]
	n := 0
	for n < len(name) && name[n] != 0 {
		n++
	}
	for _, x := range name[n:] {
		if x != 0 {
			return c, fmt.Errorf("chunk type not NUL-padded")
		}
	}
	c.Type = string(name[:n])
	if err := checkType(c.Type); err != nil {
		return c, err
	}
	c.Version = binary.LittleEndian.Uint16(b[28:])
	c.Flags = ChunkFlags(binary.LittleEndian.Uint16(b[30:]))
	if c.Flags&^knownChunkFlags != 0 {
		return c, fmt.Errorf("chunk %q: unknown flags %#x", c.Type, c.Flags)
	}
	c.Instance = binary.LittleEndian.Uint32(b[32:])
	c.Length = binary.LittleEndian.Uint64(b[36:])
	return c, nil
}

// checkType validates a chunk type name: 1 to MaxTypeLen bytes of printable
// ASCII without spaces.
func checkType(t string) error {
	if len(t) == 0 || len(t) > MaxTypeLen || !printable(t, false) {
		return fmt.Errorf("invalid chunk type %q (want 1-%d printable ASCII bytes)", t, MaxTypeLen)
	}
	return nil
}

func printable(s string, spaceOK bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' && spaceOK {
			continue
		}
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
