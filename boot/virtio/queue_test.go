package virtio

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
	"unsafe"
)

type heapDMA struct{}

func (heapDMA) Alloc(size, align int) (uint64, []byte, error) {
	raw := make([]byte, size+align)
	off := int(-uintptr(unsafe.Pointer(&raw[0])) & uintptr(align-1))
	return 0x1000_0000, raw[off : off+size], nil
}

// complete plays the device: it pops the next available head and reports
// it used with n bytes written.
func complete(q *Queue, n uint32) uint16 {
	le := binary.LittleEndian
	avail := uint16(atomic.LoadUint32(q.availW) >> 16)
	used := uint16(atomic.LoadUint32(q.usedW) >> 16)
	if avail == used {
		panic("nothing available")
	}
	head := le.Uint16(q.mem[q.availOff+4+2*int(used&(q.size-1)):])
	e := q.mem[q.usedOff+4+8*int(used&(q.size-1)):]
	le.PutUint32(e, uint32(head))
	le.PutUint32(e[4:], n)
	atomic.StoreUint32(q.usedW, uint32(used+1)<<16)
	return head
}

func TestQueue(t *testing.T) {
	if _, err := NewQueue(heapDMA{}, 6); err == nil {
		t.Fatal("size 6 accepted")
	}
	q, err := NewQueue(heapDMA{}, 8)
	if err != nil {
		t.Fatal(err)
	}
	desc, drv, dev := q.Addrs()
	if desc != 0x1000_0000 || drv != desc+128 || dev%4 != 0 || dev < drv+6+16 {
		t.Fatalf("addrs %#x %#x %#x", desc, drv, dev)
	}
	chain := []Buf{{Addr: 0x100, Len: 16}, {Addr: 0x200, Len: 512, Write: true}, {Addr: 0x300, Len: 1, Write: true}}
	h1, err := q.Submit(chain)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	for i, id := 0, h1; i < 3; i++ {
		d := q.mem[int(id)*DescSize:]
		flags := le.Uint16(d[12:])
		if le.Uint64(d) != chain[i].Addr || le.Uint32(d[8:]) != chain[i].Len ||
			(flags&DescFWrite != 0) != chain[i].Write || (flags&DescFNext != 0) != (i < 2) {
			t.Fatalf("descriptor %d wrong: flags %#x", i, flags)
		}
		id = le.Uint16(d[14:])
	}
	h2, _ := q.Submit(chain)
	if _, err := q.Submit(chain); !errors.Is(err, ErrQueueFull) || q.NumFree() != 2 {
		t.Fatalf("third chain: %v, %d free", err, q.NumFree())
	}
	if _, ok, _ := q.Poll(); ok {
		t.Fatal("completion before the device acted")
	}
	complete(q, 513)
	if u, ok, err := q.Poll(); !ok || err != nil || u.Head != h1 || u.Len != 513 || q.NumFree() != 5 {
		t.Fatalf("poll: %+v %v %v, %d free", u, ok, err, q.NumFree())
	}
	// Many more chains than entries: indices wrap. The device completes in
	// available order, so each poll reports the chain submitted before.
	for i := range 70000 {
		if _, err := q.Submit(chain[:1+i%3]); err != nil {
			t.Fatal(i, err)
		}
		complete(q, 0)
		if _, ok, err := q.Poll(); !ok || err != nil {
			t.Fatal(i, ok, err)
		}
	}
	_ = h2
	complete(q, 0)
	if _, ok, _ := q.Poll(); !ok || q.NumFree() != 8 {
		t.Fatalf("final completion: %d free", q.NumFree())
	}
	// A device reporting a head that is not outstanding is an error.
	q.Submit(chain)
	complete(q, 0)
	le.PutUint32(q.mem[q.usedOff+4+8*int((q.lastUsed)&7):], 7)
	if _, _, err := q.Poll(); err == nil {
		t.Fatal("bogus used id accepted")
	}
}
