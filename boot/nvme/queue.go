package nvme

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Submission Queue Entry layout: the Common Command Format (Base 2.0
// section 3.3.3.1). Byte offsets in the 64-byte entry.
const (
	SQESize  = 64
	sqeCDW0  = 0  // 7:0 opcode, 9:8 FUSE, 15:14 PSDT (0 = PRPs), 31:16 CID
	sqeNSID  = 4  // namespace identifier
	sqeMPTR  = 16 // metadata pointer (unused: no metadata)
	sqePRP1  = 24 // data pointer: PRP Entry 1
	sqePRP2  = 32 // data pointer: PRP Entry 2 or PRP List pointer
	sqeCDW10 = 40
	sqeCDW11 = 44
	sqeCDW12 = 48

	sqeCIDShift = 16
	sqesLog2    = 6 // CC.IOSQES and Identify SQES: 2^6 = 64 bytes
)

// Completion Queue Entry layout (Base 2.0 section 3.3.3.2). Byte offsets
// in the 16-byte entry, and the fields of dword 3.
const (
	CQESize = 16
	cqeDW0  = 0  // command specific result
	cqeDW2  = 8  // 15:0 SQHD (SQ head pointer), 31:16 SQID
	cqeDW3  = 12 // 15:0 CID, 16 P (phase tag), 31:17 Status Field

	cqeSQIDShift = 16
	cqeP         = 16 // phase tag bit of dword 3
	cqeSC        = 17 // 24:17 Status Code
	cqeSCT       = 25 // 27:25 Status Code Type
	cqeCRD       = 28 // 29:28 Command Retry Delay
	cqeM         = 30 // More (Get Log Page has more)
	cqeDNR       = 31 // Do Not Retry
	cqeSCBits    = 8
	cqeSCTBits   = 3
	cqesLog2     = 4 // CC.IOCQES and Identify CQES: 2^4 = 16 bytes
)

// Command identifiers: the low cidSlotBits name the driver's slot, the
// rest count the slot's uses, so that a stale or repeated completion is
// caught even when the slot is busy again.
const (
	cidSlotBits = 8
	cidSlotMask = 1<<cidSlotBits - 1
	maxSlots    = cidSlotMask // slot 255 is never used: a CID with it is always unknown
)

// completion is one decoded Completion Queue Entry.
type completion struct {
	dw0    uint32
	sqhd   uint16
	sqid   uint16
	cid    uint16
	status uint16 // Status Field without the phase tag: SC | SCT<<8 | CRD<<11 | M<<13 | DNR<<14
}

// queue is a submission/completion queue pair in DMA memory: the admin
// pair (ID 0) or the I/O pair (ID 1). Both queues have size entries.
type queue struct {
	id     uint16
	size   int
	sqPA   uint64
	cqPA   uint64
	sq, cq []byte
	sqDB   uint32 // SQ tail doorbell offset
	cqDB   uint32 // CQ head doorbell offset
	tail   int    // next SQ entry to fill
	head   int    // SQ head as last reported by the controller (SQHD)
	cqHead int    // next CQ entry to consume
	phase  uint32 // phase tag of new entries: 1 on the first pass
	unrung bool   // entries consumed since the last CQ head doorbell
}

func newQueue(dma DMA, id uint16, size int) (*queue, error) {
	sqPA, sq, err := dma.Alloc(size*SQESize, pageSize)
	if err != nil {
		return nil, fmt.Errorf("nvme: submission queue %d: %w", id, err)
	}
	cqPA, cq, err := dma.Alloc(size*CQESize, pageSize)
	if err != nil {
		return nil, fmt.Errorf("nvme: completion queue %d: %w", id, err)
	}
	if len(sq) < size*SQESize || len(cq) < size*CQESize || sqPA%pageSize != 0 || cqPA%pageSize != 0 {
		return nil, fmt.Errorf("nvme: queue %d: DMA allocator returned short or misaligned memory", id)
	}
	return &queue{id: id, size: size, sqPA: sqPA, cqPA: cqPA, sq: sq[:size*SQESize], cq: cq[:size*CQESize]}, nil
}

// setDoorbells computes the doorbell offsets for a stride of 4<<dstrd bytes.
func (q *queue) setDoorbells(dstrd uint) {
	stride := uint32(4) << dstrd
	q.sqDB = SQ0TDBL + 2*uint32(q.id)*stride
	q.cqDB = SQ0TDBL + (2*uint32(q.id)+1)*stride
}

// reset empties both queues: the controller has been disabled, and it
// starts the queues over at entry 0 with phase tag 1 (section 3.3.1).
func (q *queue) reset() {
	clear(q.sq)
	clear(q.cq)
	q.tail, q.head, q.cqHead, q.phase, q.unrung = 0, 0, 0, 1, false
}

// full reports whether the SQ has no free entry: one entry always stays
// empty to tell a full queue from an empty one.
func (q *queue) full() bool { return (q.tail+1)%q.size == q.head }

// inSQ is the number of SQ entries the controller has not consumed.
func (q *queue) inSQ() int { return (q.tail - q.head + q.size) % q.size }

// next returns the zeroed SQ entry at the tail and advances the tail. The
// caller fills it and then calls ring.
func (q *queue) next() []byte {
	e := q.sq[q.tail*SQESize : (q.tail+1)*SQESize]
	clear(e)
	q.tail = (q.tail + 1) % q.size
	return e
}

// ring writes the SQ tail doorbell. Entries are in memory before the
// doorbell write (an MMIO store after ordinary stores; amd64 keeps order).
func (q *queue) ring(r Regs) { r.Write32(q.sqDB, uint32(q.tail)) }

// ack writes the CQ head doorbell if entries were consumed since the last one.
func (q *queue) ack(r Regs) {
	if q.unrung {
		r.Write32(q.cqDB, uint32(q.cqHead))
		q.unrung = false
	}
}

// pop consumes the next completion if its phase tag says it is new. It
// checks the entry's SQ identifier and SQ head against the queue; a bad
// one is a protocol violation (error). Dword 3, which holds the phase tag,
// is read first and atomically: the controller writes it last.
func (q *queue) pop() (completion, bool, error) {
	e := q.cq[q.cqHead*CQESize : (q.cqHead+1)*CQESize]
	dw3 := atomic.LoadUint32((*uint32)(unsafe.Pointer(&e[cqeDW3])))
	if dw3>>cqeP&1 != q.phase {
		return completion{}, false, nil
	}
	le := binary.LittleEndian
	dw2 := le.Uint32(e[cqeDW2:])
	c := completion{
		dw0:    le.Uint32(e[cqeDW0:]),
		sqhd:   uint16(dw2),
		sqid:   uint16(dw2 >> cqeSQIDShift),
		cid:    uint16(dw3),
		status: uint16(dw3 >> cqeSC),
	}
	at := q.cqHead
	q.cqHead++
	if q.cqHead == q.size {
		q.cqHead, q.phase = 0, q.phase^1
	}
	q.unrung = true
	if c.sqid != q.id {
		return c, true, fmt.Errorf("%w: completion queue %d entry %d names submission queue %d", ErrProtocol, q.id, at, c.sqid)
	}
	// The new head lies between the last reported head and the tail.
	h := int(c.sqhd)
	if h >= q.size || (h-q.head+q.size)%q.size > q.inSQ() {
		return c, true, fmt.Errorf("%w: completion queue %d entry %d reports SQ head %d outside %d..%d (queue of %d)",
			ErrProtocol, q.id, at, h, q.head, q.tail, q.size)
	}
	q.head = h
	return c, true, nil
}
