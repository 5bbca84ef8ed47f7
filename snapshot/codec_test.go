package snapshot

import (
	"errors"
	"testing"
)

func TestCodecRoundTrip(t *testing.T) {
	e := NewEncoder(0)
	e.PutU8(0xab)
	e.PutBool(true)
	e.PutU16(0xbeef)
	e.PutU32(0xdeadbeef)
	e.PutU64(0x0123456789abcdef)
	e.PutI64(-5)
	e.PutBytes([]byte{1, 2, 3})
	e.PutString("héllo")
	e.PutRaw([]byte{9, 9})
	want := []byte{0xab, 1, 0xef, 0xbe, 0xef, 0xbe, 0xad, 0xde}
	if string(e.Bytes()[:len(want)]) != string(want) {
		t.Fatalf("little-endian layout: % x", e.Bytes()[:len(want)])
	}
	d := NewDecoder(e.Bytes())
	if d.U8() != 0xab || !d.Bool() || d.U16() != 0xbeef || d.U32() != 0xdeadbeef || d.U64() != 0x0123456789abcdef ||
		d.I64() != -5 || string(d.Bytes()) != "\x01\x02\x03" || d.String() != "héllo" || string(d.Raw(2)) != "\x09\x09" {
		t.Fatal("round trip differs")
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestDecoderStickyAndBounded(t *testing.T) {
	d := NewDecoder([]byte{1, 2, 3})
	if d.U32() != 0 || !errors.Is(d.Err(), ErrShortBody) {
		t.Fatalf("short read: %v", d.Err())
	}
	first := d.Err()
	if d.U8() != 0 || d.Err() != first {
		t.Error("error not sticky")
	}
	// A length prefix larger than the input fails before allocating.
	d = NewDecoder([]byte{0xff, 0xff, 0xff, 0x7f, 0})
	if d.Bytes() != nil || d.Err() == nil {
		t.Error("oversized Bytes accepted")
	}
	d = NewDecoder([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	if d.Count(8) != 0 || d.Err() == nil {
		t.Error("oversized Count accepted")
	}
	d = NewDecoder([]byte{2, 0, 0, 0, 1, 1})
	if d.Count(1) != 2 || d.Err() != nil {
		t.Error("valid Count refused")
	}
	d = NewDecoder([]byte{2})
	if d.Bool(); d.Err() == nil {
		t.Error("bool 2 accepted")
	}
	d = NewDecoder([]byte{1, 2})
	d.U8()
	if d.Finish() == nil {
		t.Error("trailing byte accepted")
	}
}
