package fwcfg

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// fake is an fw_cfg device holding items by selector.
type fake struct {
	items map[uint16][]byte
	cur   []byte
}

func (f *fake) Select(sel uint16) { f.cur = f.items[sel] }
func (f *fake) Read(b []byte) {
	n := copy(b, f.cur)
	f.cur = f.cur[n:]
	for i := n; i < len(b); i++ {
		b[i] = 0 // reads past the end return 0, as QEMU does
	}
}

func newFake(files map[string][]byte) *fake {
	f := &fake{items: map[uint16][]byte{SelSignature: []byte("QEMU")}}
	dir := binary.BigEndian.AppendUint32(nil, uint32(len(files)))
	sel := uint16(0x20)
	for _, name := range []string{"etc/e820", "opt/tamavisor/guest", "opt/other"} {
		data, ok := files[name]
		if !ok {
			continue
		}
		ent := make([]byte, dirEntryLen)
		binary.BigEndian.PutUint32(ent[0:], uint32(len(data)))
		binary.BigEndian.PutUint16(ent[4:], sel)
		copy(ent[8:], name)
		dir = append(dir, ent...)
		f.items[sel] = data
		sel++
	}
	f.items[SelFileDir] = dir
	return f
}

func TestOpenAndRead(t *testing.T) {
	guest := bytes.Repeat([]byte{0xab}, 1000)
	d, err := Open(newFake(map[string][]byte{"opt/tamavisor/guest": guest, "opt/other": []byte("x")}))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Files()) != 2 {
		t.Fatalf("files: %+v", d.Files())
	}
	got, err := d.ReadFile("opt/tamavisor/guest", 1<<20)
	if err != nil || !bytes.Equal(got, guest) {
		t.Fatalf("read: %v", err)
	}
	if _, err := d.ReadFile("opt/tamavisor/guest", 999); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("size cap: %v", err)
	}
	if _, err := d.ReadFile("missing", 10); err == nil {
		t.Error("missing file read")
	}
}

func TestAbsentAndHostile(t *testing.T) {
	if _, err := Open(&fake{items: map[uint16][]byte{}}); err != ErrAbsent {
		t.Errorf("absent: %v", err)
	}
	f := newFake(nil)
	f.items[SelFileDir] = []byte{0xff, 0xff, 0xff, 0xff}
	if _, err := Open(f); err == nil {
		t.Error("absurd file count accepted")
	}
}
