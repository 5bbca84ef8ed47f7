package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Split virtqueue layout (section 2.7).
const (
	DescSize      = 16 // struct virtq_desc: addr u64, len u32, flags u16, next u16
	DescFNext     = 1  // VIRTQ_DESC_F_NEXT: chain continues in next
	DescFWrite    = 2  // VIRTQ_DESC_F_WRITE: buffer is device-writable
	DescFIndirect = 4  // VIRTQ_DESC_F_INDIRECT (not used)

	AvailFNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	UsedFNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY

	MaxQueueSize = 32768

	descAlign  = 16 // section 2.7 table: descriptor table alignment
	availAlign = 2
	usedAlign  = 4
)

// Buf is one buffer of a descriptor chain.
type Buf struct {
	Addr  uint64 // physical address
	Len   uint32
	Write bool // device-writable
}

// Used is one completion from the used ring.
type Used struct {
	Head uint16 // head descriptor of the completed chain
	Len  uint32 // bytes the device wrote into the chain
}

// ErrQueueFull is returned by Submit when too few descriptors are free.
var ErrQueueFull = errors.New("virtio: not enough free descriptors")

// Queue is a split virtqueue in DMA memory. The driver side is not safe for
// concurrent use; the device side is synchronised with atomic accesses to
// the available and used ring index words.
//
// The first 32-bit word of both rings holds flags (low half) and idx (high
// half); atomic 32-bit loads and stores of that word order the ring entries
// and buffers with respect to the device (on amd64 an atomic store is a
// full barrier).
type Queue struct {
	size            uint16
	pa              uint64
	mem             []byte
	availOff        int
	usedOff         int
	next            []uint16 // shadow of desc.next, also links the free list
	chain           []uint16 // descriptors in the chain at head i, 0 if free
	freeHead        uint16
	numFree         int
	availIdx        uint16
	lastUsed        uint16
	availW, usedW   *uint32
	descPA, availPA uint64
	usedPA          uint64
}

// NewQueue allocates a queue of size entries (a power of two).
func NewQueue(d DMA, size int) (*Queue, error) {
	if size <= 0 || size > MaxQueueSize || size&(size-1) != 0 {
		return nil, fmt.Errorf("virtio: invalid queue size %d", size)
	}
	availOff := DescSize * size
	usedOff := alignUp(availOff+6+2*size, usedAlign)
	total := usedOff + 6 + 8*size
	pa, mem, err := d.Alloc(total, 4096)
	if err != nil {
		return nil, fmt.Errorf("virtio: queue memory: %w", err)
	}
	if len(mem) < total || pa%descAlign != 0 {
		return nil, errors.New("virtio: DMA allocator returned a bad queue buffer")
	}
	q := &Queue{
		size:     uint16(size),
		pa:       pa,
		mem:      mem[:total],
		availOff: availOff,
		usedOff:  usedOff,
		next:     make([]uint16, size),
		chain:    make([]uint16, size),
		descPA:   pa,
		availPA:  pa + uint64(availOff),
		usedPA:   pa + uint64(usedOff),
	}
	q.availW = (*uint32)(unsafe.Pointer(&q.mem[availOff]))
	q.usedW = (*uint32)(unsafe.Pointer(&q.mem[usedOff]))
	q.Reset()
	return q, nil
}

func alignUp(n, a int) int { return (n + a - 1) &^ (a - 1) }

// Reset returns the queue to its initial state. Call it only while the
// device does not use the queue (after a device reset).
func (q *Queue) Reset() {
	clear(q.mem)
	for i := range q.next {
		q.next[i] = uint16(i + 1)
		q.chain[i] = 0
	}
	q.freeHead, q.numFree = 0, int(q.size)
	q.availIdx, q.lastUsed = 0, 0
	atomic.StoreUint32(q.availW, AvailFNoInterrupt)
}

// Size is the number of entries.
func (q *Queue) Size() int { return int(q.size) }

// NumFree is the number of free descriptors.
func (q *Queue) NumFree() int { return q.numFree }

// Addrs returns the physical addresses of the descriptor table, the driver
// (available) area and the device (used) area.
func (q *Queue) Addrs() (desc, driver, device uint64) { return q.descPA, q.availPA, q.usedPA }

// Submit places a descriptor chain on the available ring, visible to the
// device on return; the caller then notifies the device. It returns the
// chain's head descriptor, which Poll reports on completion.
func (q *Queue) Submit(bufs []Buf) (uint16, error) {
	if len(bufs) == 0 {
		return 0, errors.New("virtio: empty descriptor chain")
	}
	if len(bufs) > q.numFree {
		return 0, ErrQueueFull
	}
	le := binary.LittleEndian
	head := q.freeHead
	id := head
	for i, b := range bufs {
		d := q.mem[int(id)*DescSize : int(id+1)*DescSize]
		flags := uint16(0)
		if b.Write {
			flags |= DescFWrite
		}
		nxt := q.next[id]
		if i < len(bufs)-1 {
			flags |= DescFNext
		} else {
			q.freeHead = nxt
		}
		le.PutUint64(d[0:], b.Addr)
		le.PutUint32(d[8:], b.Len)
		le.PutUint16(d[12:], flags)
		le.PutUint16(d[14:], nxt)
		id = nxt
	}
	q.numFree -= len(bufs)
	q.chain[head] = uint16(len(bufs))
	slot := q.availOff + 4 + 2*int(q.availIdx&(q.size-1))
	le.PutUint16(q.mem[slot:], head)
	q.availIdx++
	atomic.StoreUint32(q.availW, uint32(q.availIdx)<<16|AvailFNoInterrupt)
	return head, nil
}

// Poll returns the next completion, if any, and frees its chain. An error
// means the device reported a descriptor that is not an outstanding head;
// the queue must then be reset together with the device.
func (q *Queue) Poll() (Used, bool, error) {
	idx := uint16(atomic.LoadUint32(q.usedW) >> 16)
	if idx == q.lastUsed {
		return Used{}, false, nil
	}
	if idx-q.lastUsed > q.size {
		return Used{}, false, fmt.Errorf("virtio: used index jumped from %d to %d", q.lastUsed, idx)
	}
	le := binary.LittleEndian
	e := q.mem[q.usedOff+4+8*int(q.lastUsed&(q.size-1)):]
	id, n := le.Uint32(e[0:]), le.Uint32(e[4:])
	if id >= uint32(q.size) || q.chain[id] == 0 {
		return Used{}, false, fmt.Errorf("virtio: device completed unknown descriptor %d", id)
	}
	q.lastUsed++
	head := uint16(id)
	last := head
	for i := 1; i < int(q.chain[head]); i++ {
		last = q.next[last]
	}
	q.next[last] = q.freeHead
	q.freeHead = head
	q.numFree += int(q.chain[head])
	q.chain[head] = 0
	return Used{Head: head, Len: n}, true, nil
}
