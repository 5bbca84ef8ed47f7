package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestCorruptEveryChunk flips one byte in the header, in every chunk header
// and in every chunk body (end record included), and checks the error names
// what failed.
func TestCorruptEveryChunk(t *testing.T) {
	vm := newTestVM(10, 2<<20)
	vm.extra = true
	b := vm.encode(t, 1, nil)
	snap, err := decodeBytes(b, DecodeOptions{Inspect: true})
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		name  string
		index int
		typ   string
		off   int64
		isHdr bool
	}
	targets := []target{{name: "header", index: -1, off: 20}}
	chunks := append([]*Chunk(nil), snap.Chunks...)
	endOff := int64(len(b)) - ChunkHeaderSize - endBodySize - ChunkTrailerSize
	chunks = append(chunks, &Chunk{Index: len(chunks), Type: TypeEnd, Offset: endOff, Length: endBodySize})
	for _, c := range chunks {
		targets = append(targets,
			target{fmt.Sprintf("%s header", c.Type), c.Index, c.Type, c.Offset + 30, true},
			target{fmt.Sprintf("%s body", c.Type), c.Index, c.Type, c.Offset + ChunkHeaderSize + int64(c.Length)/2, false},
			target{fmt.Sprintf("%s trailer", c.Type), c.Index, c.Type, c.Offset + ChunkHeaderSize + int64(c.Length) + 1, false})
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			bad := bytes.Clone(b)
			bad[tg.off] ^= 0x10
			_, err := decodeBytes(bad, DecodeOptions{Registry: testRegistry(t)})
			if !errors.Is(err, ErrChecksum) {
				t.Fatalf("error %v, want a checksum mismatch", err)
			}
			switch {
			case tg.index < 0:
				if !strings.Contains(err.Error(), "header") {
					t.Errorf("error %q does not name the header", err)
				}
			case tg.isHdr:
				if !strings.Contains(err.Error(), fmt.Sprintf("(index %d)", tg.index)) {
					t.Errorf("error %q does not name index %d", err, tg.index)
				}
			default:
				var ce *ChunkError
				if !errors.As(err, &ce) || ce.Type != tg.typ || ce.Index != tg.index {
					t.Errorf("error %q does not name chunk %q index %d", err, tg.typ, tg.index)
				}
			}
		})
	}
}

// TestDigestCatchesFixedUpCRC changes a chunk body and fixes its CRC, as a
// careless tool or an attacker without the key would: the digest catches it.
func TestDigestCatchesFixedUpCRC(t *testing.T) {
	vm := newTestVM(11, 2<<20)
	b := vm.encode(t, 1, nil)
	snap, _ := decodeBytes(b, DecodeOptions{Inspect: true})
	c := snap.Find("dev:uart16550", 0)
	bad := bytes.Clone(b)
	body := bad[c.Offset+ChunkHeaderSize : c.Offset+ChunkHeaderSize+int64(c.Length)]
	body[0] ^= 1
	binary.LittleEndian.PutUint32(bad[c.Offset+ChunkHeaderSize+int64(c.Length):], crc32c(body))
	if _, err := decodeBytes(bad, DecodeOptions{Registry: testRegistry(t)}); !errors.Is(err, ErrDigest) {
		t.Errorf("error %v, want digest mismatch", err)
	}
}

func TestHMAC(t *testing.T) {
	vm := newTestVM(12, 2<<20)
	key := []byte("the right key")
	b := vm.encode(t, 1, key)
	reg := testRegistry(t)
	snap, err := decodeBytes(b, DecodeOptions{Registry: reg, Key: key})
	if err != nil || !snap.Authenticated {
		t.Fatalf("right key: %v", err)
	}
	for name, opts := range map[string]DecodeOptions{
		"wrong key": {Registry: reg, Key: []byte("the wrong key")},
		"no key":    {Registry: reg},
	} {
		if _, err := decodeBytes(b, opts); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "authentication failed") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Inspection without a key is allowed, and says it is not authenticated.
	if snap, err := decodeBytes(b, DecodeOptions{Registry: reg, SkipAuth: true}); err != nil || snap.Authenticated {
		t.Errorf("skip auth: %v", err)
	}
	// An unkeyed snapshot is refused when a key is configured: an attacker
	// cannot strip the HMAC.
	plain := vm.encode(t, 1, nil)
	if _, err := decodeBytes(plain, DecodeOptions{Registry: reg, Key: key}); !errors.Is(err, ErrAuth) {
		t.Errorf("unkeyed snapshot with a key: %v", err)
	}
	// A tampered snapshot whose CRCs and digest were all recomputed (a
	// forgery by someone without the key) fails authentication.
	vm.devs["uart16550"] = []byte("evil state!!!")
	forged := vm.encode(t, 1, []byte("attacker key"))
	if _, err := decodeBytes(forged, DecodeOptions{Registry: reg, Key: key}); !errors.Is(err, ErrAuth) {
		t.Errorf("forged snapshot: %v", err)
	}
}

// TestRAMVersion2: RAM chunks are version 2: page data out of the digest,
// checked by XXH64 block sums (unkeyed) or Poly1305 tags under one-time
// keys (keyed). Every flipped byte of page data is caught and names its
// block (an authentication failure when keyed); the block table is
// covered by the chunk CRC; two keyed saves of one VM use different
// nonces.
func TestRAMVersion2(t *testing.T) {
	vm := newTestVM(21, 8<<20)
	b := vm.encode(t, 1, nil)
	snap, err := decodeBytes(b, DecodeOptions{Registry: testRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	ram := snap.Find(TypeRAM, 0)
	if ram.Version != RAMVersion {
		t.Fatalf("unkeyed RAM chunk version %d, want %d", ram.Version, RAMVersion)
	}
	keyed := vm.encode(t, 1, []byte("0123456789abcdef"))
	ks, err := decodeBytes(keyed, DecodeOptions{Registry: testRegistry(t), Key: []byte("0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	if v := ks.Find(TypeRAM, 0).Version; v != RAMVersion {
		t.Errorf("keyed RAM chunk version %d, want %d", v, RAMVersion)
	}
	var data uint64
	for _, r := range snap.RAM.Ranges {
		data += r.Data * PageSize
	}
	if data < 2*RAMBlockSize {
		t.Fatalf("test VM has %d bytes of page data: want several blocks", data)
	}
	body := ram.Offset + ChunkHeaderSize
	table := body + int64(ram.Length) - int64(ramTableHeader+xxhSumSize*ramBlocks(data))
	// The last data byte (block n-1), a byte in the middle of the data,
	// and one of the table.
	for _, c := range []struct {
		off  int64
		want string
	}{
		{table - 1, fmt.Sprintf("RAM block %d ", ramBlocks(data)-1)},
		{table - int64(data/2), "RAM block"},
		{table + ramTableHeader + 3, "checksum mismatch"},
	} {
		bad := bytes.Clone(b)
		bad[c.off] ^= 0x01
		_, err := decodeBytes(bad, DecodeOptions{Registry: testRegistry(t)})
		if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("byte %d flipped: %v, want a checksum mismatch naming %q", c.off, err, c.want)
		}
	}
}

// TestRAMVersion2Keyed: in a keyed snapshot a changed page is found (XXH64,
// naming the block) with or without the key, a wrong key fails the
// Poly1305 tags, the nonce differs between saves, and a reader that
// skips authentication still reads an intact one.
func TestRAMVersion2Keyed(t *testing.T) {
	key := []byte("0123456789abcdef")
	vm := newTestVM(22, 8<<20)
	a, b := vm.encode(t, 1, key), vm.encode(t, 1, key)
	snap, err := decodeBytes(a, DecodeOptions{Registry: testRegistry(t), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	ram := snap.Find(TypeRAM, 0)
	nonceAt := ram.Offset + ChunkHeaderSize + ramHeaderSize
	if bytes.Equal(a[nonceAt:nonceAt+ramNonceSize], b[nonceAt:nonceAt+ramNonceSize]) || isZero(a[nonceAt:nonceAt+ramNonceSize]) {
		t.Error("two keyed saves share a RAM block nonce (or it is zero)")
	}
	var data uint64
	for _, r := range snap.RAM.Ranges {
		data += r.Data * PageSize
	}
	table := ram.Offset + ChunkHeaderSize + int64(ram.Length) - int64(ramTableHeader+(xxhSumSize+polyTagSize)*ramBlocks(data))
	bad := bytes.Clone(a)
	bad[table-int64(data)+RAMBlockSize+5] ^= 0x80 // in block 1
	// Damage is damage, with the key or without it (XXH64 in the table).
	for _, opts := range []DecodeOptions{{Key: key}, {SkipAuth: true}} {
		opts.Registry = testRegistry(t)
		_, err = decodeBytes(bad, opts)
		if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "RAM block 1 ") {
			t.Errorf("changed page in a keyed snapshot (key given %v): %v, want a checksum mismatch naming block 1", opts.Key != nil, err)
		}
	}
	if _, err := decodeBytes(a, DecodeOptions{Registry: testRegistry(t), SkipAuth: true}); err != nil {
		t.Errorf("keyed snapshot read without the key (SkipAuth): %v", err)
	}
	if _, err := decodeBytes(a, DecodeOptions{Registry: testRegistry(t), Key: []byte("another key, 16+")}); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: %v, want an authentication failure", err)
	}
}

// TestSecondRAMChunkRefused: a stream with two RAM chunks (a code review
// found the lazy open would mix their ranges) is refused as corrupt, by the
// eager decode and the lazy open alike.
func TestSecondRAMChunkRefused(t *testing.T) {
	vm := newTestVM(21, 2<<20)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Generation: 1, VMName: "vm"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.fill(w); err != nil {
		t.Fatal(err)
	}
	w.ram, w.ramInstance = false, 1
	if err := w.WriteRAM(vm.mem, vm.ranges, RAMOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeBytes(buf.Bytes(), DecodeOptions{Registry: testRegistry(t)}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "second RAM chunk") {
		t.Fatalf("a stream with two RAM chunks: %v", err)
	}
}
