package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Encoder builds a chunk body field by field, little-endian. The zero value
// is ready to use. Encoders never fail; the layout is whatever sequence of
// Put calls the caller makes, so adding a field to a Go struct never changes
// the bytes unless the encoder is changed (and the chunk version bumped).
type Encoder struct {
	buf []byte
}

// NewEncoder returns an Encoder with capacity for n bytes.
func NewEncoder(n int) *Encoder { return &Encoder{buf: make([]byte, 0, n)} }

// Bytes returns the encoded body. It aliases the encoder's buffer.
func (e *Encoder) Bytes() []byte { return e.buf }

// Len returns the number of bytes encoded so far.
func (e *Encoder) Len() int { return len(e.buf) }

// PutU8 appends v.
func (e *Encoder) PutU8(v uint8) { e.buf = append(e.buf, v) }

// PutBool appends v as one byte, 0 or 1.
func (e *Encoder) PutBool(v bool) {
	if v {
		e.PutU8(1)
	} else {
		e.PutU8(0)
	}
}

// PutU16 appends v, little-endian.
func (e *Encoder) PutU16(v uint16) { e.buf = binary.LittleEndian.AppendUint16(e.buf, v) }

// PutU32 appends v, little-endian.
func (e *Encoder) PutU32(v uint32) { e.buf = binary.LittleEndian.AppendUint32(e.buf, v) }

// PutU64 appends v, little-endian.
func (e *Encoder) PutU64(v uint64) { e.buf = binary.LittleEndian.AppendUint64(e.buf, v) }

// PutI64 appends v as two's complement, little-endian.
func (e *Encoder) PutI64(v int64) { e.PutU64(uint64(v)) }

// PutRaw appends b with no length prefix; the reader must know its size
// (see Decoder.Raw).
func (e *Encoder) PutRaw(b []byte) { e.buf = append(e.buf, b...) }

// PutBytes appends a u32 length followed by b.
func (e *Encoder) PutBytes(b []byte) {
	e.PutU32(uint32(len(b)))
	e.PutRaw(b)
}

// PutString appends a u32 length followed by the bytes of s.
func (e *Encoder) PutString(s string) {
	e.PutU32(uint32(len(s)))
	e.buf = append(e.buf, s...)
}

// ErrShortBody is the error a Decoder records when a field runs past the end
// of its input.
var ErrShortBody = errors.New("body too short")

// Decoder reads a chunk body field by field. The first failure is sticky:
// later reads return zero values and Err reports the first error, so a
// decoder can read a whole structure and check Err once. A Decoder never
// panics and never allocates more than its input length.
type Decoder struct {
	b   []byte
	off int
	err error
}

// NewDecoder returns a Decoder over b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns the first error, or nil.
func (d *Decoder) Err() error { return d.err }

// Remaining returns how many bytes are left.
func (d *Decoder) Remaining() int { return len(d.b) - d.off }

// Offset returns how many bytes have been consumed.
func (d *Decoder) Offset() int { return d.off }

// Fail records err (with the current offset) if no error is recorded yet.
// Decoders use it to report invalid values.
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = fmt.Errorf("at offset %d: %w", d.off, err)
	}
}

// Failf is Fail with a formatted message.
func (d *Decoder) Failf(format string, args ...any) { d.Fail(fmt.Errorf(format, args...)) }

func (d *Decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.Fail(fmt.Errorf("%w: need %d bytes, have %d", ErrShortBody, n, len(d.b)-d.off))
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

// U8 reads one byte.
func (d *Decoder) U8() uint8 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

// Bool reads one byte that must be 0 or 1.
func (d *Decoder) Bool() bool {
	v := d.U8()
	if v > 1 {
		d.Failf("invalid bool %d", v)
	}
	return v == 1
}

// U16 reads a little-endian uint16.
func (d *Decoder) U16() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(p)
}

// U32 reads a little-endian uint32.
func (d *Decoder) U32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(p)
}

// U64 reads a little-endian uint64.
func (d *Decoder) U64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(p)
}

// I64 reads a little-endian two's complement int64.
func (d *Decoder) I64() int64 { return int64(d.U64()) }

// Raw reads n bytes with no length prefix and returns a copy.
func (d *Decoder) Raw(n int) []byte {
	p := d.take(n)
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

// Bytes reads a u32 length and that many bytes, and returns a copy. The
// length is checked against the remaining input before anything is
// allocated.
func (d *Decoder) Bytes() []byte {
	n := d.U32()
	if d.err != nil {
		return nil
	}
	return d.Raw(int(n))
}

// String reads a u32 length and that many bytes as a string.
func (d *Decoder) String() string { return string(d.Bytes()) }

// Count reads a u32 element count for a list whose elements take at least
// minSize bytes each, and fails if the remaining input cannot hold that many
// elements. Use it before allocating a slice for the list.
func (d *Decoder) Count(minSize int) int {
	n := d.U32()
	if d.err != nil {
		return 0
	}
	if minSize < 1 {
		minSize = 1
	}
	if uint64(n)*uint64(minSize) > uint64(d.Remaining()) {
		d.Failf("count %d of %d-byte elements exceeds the %d bytes left", n, minSize, d.Remaining())
		return 0
	}
	return int(n)
}

// Finish returns Err, or an error if input bytes are left unread.
func (d *Decoder) Finish() error {
	if d.err == nil && d.off != len(d.b) {
		d.Failf("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}
