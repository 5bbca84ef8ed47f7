package nvme

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// arena is fake physical memory: DMA allocations and zero-copy data
// buffers are carved from it and have fake physical addresses.
type arena struct {
	mem  []byte
	base uint64
	next int
}

const arenaBase = 0x8_0000_0000 // above 4 GiB: PRP entries need all 64 bits

func newArena(size int) *arena {
	raw := make([]byte, size+pageSize)
	off := int(-uintptr(unsafe.Pointer(&raw[0])) & pageMask)
	return &arena{mem: raw[off : off+size], base: arenaBase}
}

func (a *arena) Alloc(size, align int) (uint64, []byte, error) {
	align = max(align, 8)
	n := (a.next + align - 1) &^ (align - 1)
	if n+size > len(a.mem) {
		return 0, nil, fmt.Errorf("arena: out of memory (%d bytes)", size)
	}
	a.next = n + size
	return a.base + uint64(n), a.mem[n : n+size : n+size], nil
}

// buf returns a buffer of n bytes the driver can pass by address, at
// offset skew from a page boundary.
func (a *arena) buf(n, skew int) []byte {
	_, b, err := a.Alloc(n+skew, pageSize)
	if err != nil {
		panic(err)
	}
	return b[skew:]
}

func (a *arena) phys(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	base := uintptr(unsafe.Pointer(&a.mem[0]))
	if p < base || p+uintptr(len(b)) > base+uintptr(len(a.mem)) {
		return 0, false
	}
	return a.base + uint64(p-base), true
}

// at returns the arena bytes at [pa, pa+n), or nil if out of range.
func (a *arena) at(pa uint64, n int) []byte {
	if pa < a.base || pa-a.base+uint64(n) > uint64(len(a.mem)) {
		return nil
	}
	o := int(pa - a.base)
	return a.mem[o : o+n]
}

// action is what the fake controller does with one command.
type action int

const (
	actNormal   action = iota
	actDrop            // execute, post no completion
	actHang            // neither execute nor complete, until a reset
	actStatus          // complete with f.status
	actBadCID          // completion with a command ID that is not in flight
	actBadSQID         // completion naming another submission queue
	actBadSQHD         // completion with an SQ head outside the queue
	actDup             // post the completion twice
	actBadPhase        // post the completion with the old phase tag
	actFatal           // set CSTS.CFS and stop
	numActions
)

// actHold keeps a command, neither executed nor completed, until release
// (it then runs after the commands run with it) or a reset. The fuzzer
// does not draw it.
const actHold = numActions

type fmode int

const (
	modeSync   fmode = iota // commands run during the SQ tail doorbell write
	modeLazy                // they run, in reverse order, when the driver reads its clock
	modeAsync               // a goroutine runs them
	modeManual              // they run when the test calls step
)

// Fake controller constants.
const (
	fakeVS        = 2 << VS_MJR // version 2.0.0
	fakeVID       = 0x1d1d
	fakeCNTLID    = 1
	fakeMPSMAX    = 4
	fakeSN        = "FAKE-SN-0001"
	fakeMN        = "tamavisor fake NVMe"
	fakeFR        = "1.0"
	badCIDSlot    = cidSlotMask
	statusNone    = 0
	fakeLBAF512   = 0 // format 0: 512-byte blocks
	fakeLBAF4096  = 1 // format 1: 4096-byte blocks
	fakeNLBAF     = 1 // two formats, 0's based
	sqesDefault   = sqesLog2<<4 | sqesLog2
	cqesDefault   = cqesLog2<<4 | cqesLog2
	fidMask       = 0xff
	cnsMask       = 0xff
	qidMask       = 0xffff
	nlbMask       = 0xffff
	ienBit        = 1
	mediaErrRead  = SCUnrecoveredReadError
	mediaErrWrite = SCWriteFault
)

type fsq struct {
	pa         uint64
	size, cqid int
	head, tail int
}

type fcq struct {
	pa         uint64
	size       int
	head, tail int
	phase      uint32
}

// prpRecord is the memory of one I/O command as the fake resolved its
// PRP entries: PRP1, then the page of each further entry.
type prpRecord struct {
	slba uint64
	prps []uint64
}

type pcmd struct {
	qid int
	sqe [SQESize]byte
	act action
}

// event is an I/O command the controller fetched and held (actHold), or
// executed.
type event struct {
	kind byte // 'h' held, 'x' executed, 'r' executed on release
	op   byte
	slba uint64
}

// fakeNVMe is an NVMe controller over an arena with one namespace.
type fakeNVMe struct {
	t    testing.TB
	a    *arena
	mu   sync.Mutex
	mode fmode

	// Capabilities and identity.
	mqes       uint16
	to         uint8
	dstrd      uint8
	mpsmin     uint8
	noNVM      bool // CAP.CSS without the NVM command set
	mdts       uint8
	lbads      uint8
	ms         uint16 // metadata bytes in the namespace's format
	flbas      int    // format index override, -1 = from lbads
	vwc        bool
	nn         uint32
	sqes, cqes byte
	disk       []byte

	// Faults.
	gone       bool // registers read all ones
	neverReady bool // CSTS.RDY never sets
	stuckReady bool // CSTS.RDY never clears
	stickyCFS  bool // CSTS.CFS survives a reset
	errLo      uint64
	errHi      uint64 // blocks [errLo, errHi) fail with media errors
	fault      func(qid int, op byte) action
	status     uint16 // Status Field for actStatus
	badSQHD    int    // SQHD for actBadSQHD (default: the queue size)

	// State.
	cc, aqa  uint32
	asq, acq uint64
	rdy, cfs bool
	shst     uint32
	sqs      [2]*fsq
	cqs      [2]*fcq
	pending  []pcmd
	tainted  bool // an altered completion was posted since the last reset
	release  bool // run the held commands (actHold) on the next pass

	// Counts.
	enables, disables int
	admin             []byte // admin opcodes in order
	ioCount           map[byte]int
	listCmds          int // commands that used a PRP list
	logPRPs           bool
	prpLog            []prpRecord // I/O commands' resolved PRPs, if logPRPs
	maxXfer           int
	sqDoorbells       int
	maxBatch          int
	events            []event // I/O commands held and executed, in order
	stop              chan struct{}
	done              sync.WaitGroup
}

func newFake(t testing.TB, a *arena, diskSize int) *fakeNVMe {
	f := &fakeNVMe{t: t, a: a, mqes: 63, to: 2, lbads: minLBAShift, flbas: -1, vwc: true, nn: 1,
		sqes: sqesDefault, cqes: cqesDefault, disk: make([]byte, diskSize), ioCount: map[byte]int{}}
	for i := range f.disk {
		f.disk[i] = byte(i*7 + i>>9)
	}
	return f
}

func (f *fakeNVMe) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeNVMe) ios(op byte) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ioCount[op]
}

// outstanding counts commands the controller holds: fetched and not
// completed, or still in a submission queue.
func (f *fakeNVMe) outstanding() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.pending)
	for _, sq := range f.sqs {
		if sq != nil {
			n += (sq.tail - sq.head + sq.size) % sq.size
		}
	}
	return n
}

// outstandingOps is outstanding, split into the I/O queue's flushes and
// the other commands.
func (f *fakeNVMe) outstandingOps() (flushes, others int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	count := func(qid int, sqe []byte) {
		if qid == ioQueueID && sqe[sqeCDW0] == ioFlush {
			flushes++
		} else {
			others++
		}
	}
	for _, c := range f.pending {
		count(c.qid, c.sqe[:])
	}
	for qid, sq := range f.sqs {
		for i := 0; sq != nil && i < (sq.tail-sq.head+sq.size)%sq.size; i++ {
			count(qid, f.a.at(sq.pa+uint64((sq.head+i)%sq.size*SQESize), SQESize))
		}
	}
	return flushes, others
}

// releaseHeld makes the controller run the commands it holds (actHold)
// the next time it processes commands.
func (f *fakeNVMe) releaseHeld() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.release = true
}

// log returns a copy of the events so far.
func (f *fakeNVMe) log() []event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]event(nil), f.events...)
}

// record notes an event of the I/O command c.
func (f *fakeNVMe) record(kind byte, c pcmd) {
	if c.qid != ioQueueID {
		return
	}
	le := binary.LittleEndian
	f.events = append(f.events, event{kind, c.sqe[sqeCDW0], uint64(le.Uint32(c.sqe[sqeCDW11:]))<<32 | uint64(le.Uint32(c.sqe[sqeCDW10:]))})
}

// clock returns an Options.Now that advances by step per call and, in
// modeLazy, completes the commands fetched so far.
func (f *fakeNVMe) clock(step time.Duration) func() time.Duration {
	var now time.Duration
	return func() time.Duration {
		f.mu.Lock()
		if f.mode == modeLazy && f.rdy {
			f.process(true)
		}
		f.mu.Unlock()
		now += step
		return now
	}
}

// step runs the commands submitted so far (modeManual).
func (f *fakeNVMe) step() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rdy {
		f.process(false)
	}
}

// startAsync runs the controller in its own goroutine until the test ends.
func (f *fakeNVMe) startAsync() {
	f.mode = modeAsync
	f.stop = make(chan struct{})
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		for {
			select {
			case <-f.stop:
				return
			default:
			}
			f.mu.Lock()
			if f.rdy {
				f.process(false)
			}
			f.mu.Unlock()
			runtime.Gosched()
		}
	}()
	f.t.Cleanup(func() { close(f.stop); f.done.Wait() })
}

func (f *fakeNVMe) capValue() uint64 {
	c := uint64(f.mqes)<<CAP_MQES | 1<<CAP_CQR | uint64(f.to)<<CAP_TO | uint64(f.dstrd)<<CAP_DSTRD |
		uint64(f.mpsmin)<<CAP_MPSMIN | fakeMPSMAX<<CAP_MPSMAX
	if !f.noNVM {
		c |= 1 << CAP_CSS
	}
	return c
}

func (f *fakeNVMe) Read64(off uint32) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return 1<<64 - 1
	}
	switch off {
	case CAP:
		return f.capValue()
	case ASQ:
		return f.asq
	case ACQ:
		return f.acq
	}
	f.t.Errorf("fake: 64-bit read of %#x", off)
	return 0
}

func (f *fakeNVMe) Write64(off uint32, v uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cc&(1<<CC_EN) != 0 {
		f.t.Errorf("fake: write of %#x while enabled", off)
	}
	switch off {
	case ASQ:
		f.asq = v
	case ACQ:
		f.acq = v
	default:
		f.t.Errorf("fake: 64-bit write of %#x", off)
	}
}

func (f *fakeNVMe) Read32(off uint32) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return cstsGone
	}
	switch off {
	case VS:
		return fakeVS
	case CC:
		return f.cc
	case CSTS:
		return b2u(f.rdy)<<CSTS_RDY | b2u(f.cfs)<<CSTS_CFS | f.shst<<CSTS_SHST
	case AQA:
		return f.aqa
	}
	f.t.Errorf("fake: read of %#x", off)
	return 0
}

func (f *fakeNVMe) Write32(off uint32, v uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case off == CC:
		f.writeCC(v)
	case off == AQA:
		f.aqa = v
	case off == INTMS || off == INTMC:
	case off >= SQ0TDBL:
		f.doorbell(off, v)
	default:
		f.t.Errorf("fake: write of %#x", off)
	}
}

func (f *fakeNVMe) writeCC(v uint32) {
	was, en := f.cc&(1<<CC_EN) != 0, v&(1<<CC_EN) != 0
	f.cc = v
	switch {
	case was && !en: // controller reset: queues and commands are gone
		f.disables++
		f.sqs, f.cqs, f.pending, f.shst, f.tainted, f.release = [2]*fsq{}, [2]*fcq{}, nil, 0, false, false
		f.rdy = f.stuckReady
		if !f.stickyCFS {
			f.cfs = false
		}
	case !was && en:
		f.enables++
		if f.rdy {
			f.t.Errorf("fake: CC.EN set while CSTS.RDY is still 1")
		}
		if field(uint64(v), CC_IOSQES, 4) != sqesLog2 || field(uint64(v), CC_IOCQES, 4) != cqesLog2 ||
			field(uint64(v), CC_MPS, 4) != 0 || field(uint64(v), CC_CSS, 3) != 0 {
			f.t.Errorf("fake: bad CC %#x", v)
		}
		if f.asq&pageMask != 0 || f.acq&pageMask != 0 {
			f.t.Errorf("fake: admin queues not page aligned")
		}
		sqs, cqs := int(field(uint64(f.aqa), AQA_ASQS, 12))+1, int(field(uint64(f.aqa), AQA_ACQS, 12))+1
		f.sqs[0] = &fsq{pa: f.asq, size: sqs}
		f.cqs[0] = &fcq{pa: f.acq, size: cqs, phase: 1}
		f.rdy = !f.neverReady && !f.cfs
	case en && field(uint64(v), CC_SHN, ccSHNBits) == CC_SHN_NORMAL:
		f.shst = CSTS_SHST_COMPLETE
	}
}

func (f *fakeNVMe) doorbell(off, v uint32) {
	stride := uint32(4) << f.dstrd
	idx := (off - SQ0TDBL) / stride
	qid := int(idx / 2)
	if (off-SQ0TDBL)%stride != 0 || qid >= len(f.sqs) || !f.rdy {
		f.t.Errorf("fake: doorbell write at %#x (stride %d, ready %v)", off, stride, f.rdy)
		return
	}
	if idx%2 == 1 {
		cq := f.cqs[qid]
		if cq == nil || int(v) >= cq.size || (int(v)-cq.head+cq.size)%cq.size > (cq.tail-cq.head+cq.size)%cq.size {
			f.t.Errorf("fake: CQ %d head doorbell %d (queue %+v)", qid, v, cq)
			return
		}
		cq.head = int(v)
		return
	}
	sq := f.sqs[qid]
	if sq == nil || int(v) >= sq.size {
		f.t.Errorf("fake: SQ %d tail doorbell %d (queue %+v)", qid, v, sq)
		return
	}
	sq.tail = int(v)
	f.sqDoorbells++
	if f.mode == modeSync {
		f.process(false)
	}
}

// process fetches submitted commands and completes every pending one
// that does not hang. Called with f.mu held.
func (f *fakeNVMe) process(reverse bool) {
	if f.cfs || f.shst != 0 {
		return
	}
	for qid, sq := range f.sqs {
		for sq != nil && sq.head != sq.tail {
			var c pcmd
			c.qid = qid
			copy(c.sqe[:], f.a.at(sq.pa+uint64(sq.head*SQESize), SQESize))
			sq.head = (sq.head + 1) % sq.size
			if f.fault != nil {
				c.act = f.fault(qid, c.sqe[sqeCDW0])
			}
			if c.act == actHold {
				f.record('h', c)
			}
			f.pending = append(f.pending, c)
		}
	}
	var keep, late []pcmd
	run := f.pending
	f.maxBatch = max(f.maxBatch, len(run))
	for i := range run {
		c := run[i]
		if reverse {
			c = run[len(run)-1-i]
		}
		if f.cfs {
			keep = append(keep, c)
			continue
		}
		switch c.act {
		case actHang:
			keep = append(keep, c)
			continue
		case actFatal:
			f.cfs = true
			keep = append(keep, c)
			continue
		case actHold:
			if f.release {
				c.act = actNormal
				late = append(late, c)
			} else {
				keep = append(keep, c)
			}
			continue
		}
		f.record('x', c)
		dw0, st := f.execute(c)
		if c.act != actDrop {
			f.post(c, dw0, st)
		}
	}
	for _, c := range late {
		f.record('r', c)
		dw0, st := f.execute(c)
		f.post(c, dw0, st)
	}
	f.release = false
	f.pending = keep
}

// post writes the completion of c, altered as c.act says.
func (f *fakeNVMe) post(c pcmd, dw0 uint32, status uint16) {
	sq := f.sqs[c.qid]
	cq := f.cqs[sq.cqid]
	if cq == nil {
		f.t.Errorf("fake: SQ %d has no CQ", c.qid)
		return
	}
	cid := binary.LittleEndian.Uint16(c.sqe[sqeCDW0+2:])
	sqid, sqhd := uint32(c.qid), uint32(sq.head)
	phase := cq.phase
	if c.act != actNormal && c.act != actStatus {
		f.tainted = true // the driver's view of the CQ may now differ
	}
	switch c.act {
	case actStatus:
		status = f.status
	case actBadCID:
		cid |= badCIDSlot
	case actBadSQID:
		sqid ^= 1
	case actBadSQHD:
		sqhd = uint32(sq.size)
		if f.badSQHD != 0 {
			sqhd = uint32(f.badSQHD)
		}
	case actBadPhase:
		phase ^= 1
	}
	for range 1 + b2i(c.act == actDup) {
		if (cq.tail+1)%cq.size == cq.head {
			if !f.tainted {
				f.t.Errorf("fake: completion queue %d overflows", sq.cqid)
			}
			return
		}
		e := f.a.at(cq.pa+uint64(cq.tail*CQESize), CQESize)
		le := binary.LittleEndian
		le.PutUint32(e[cqeDW0:], dw0)
		le.PutUint32(e[cqeDW0+4:], 0)
		le.PutUint32(e[cqeDW2:], sqid<<cqeSQIDShift|sqhd&qidMask)
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&e[cqeDW3])), uint32(cid)|(phase&1)<<cqeP|uint32(status)<<cqeSC)
		cq.tail++
		if cq.tail == cq.size {
			cq.tail, cq.phase = 0, cq.phase^1
			phase ^= 1
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func st(sct, sc uint8) uint16 { return uint16(sct)<<statusSCTShift | uint16(sc) }

func (f *fakeNVMe) execute(c pcmd) (uint32, uint16) {
	le := binary.LittleEndian
	op := c.sqe[sqeCDW0]
	nsid := le.Uint32(c.sqe[sqeNSID:])
	prp1, prp2 := le.Uint64(c.sqe[sqePRP1:]), le.Uint64(c.sqe[sqePRP2:])
	cdw10, cdw11, cdw12 := le.Uint32(c.sqe[sqeCDW10:]), le.Uint32(c.sqe[sqeCDW11:]), le.Uint32(c.sqe[sqeCDW12:])
	if c.qid == 0 {
		f.admin = append(f.admin, op)
		return f.adminCmd(op, nsid, prp1, prp2, cdw10, cdw11)
	}
	f.ioCount[op]++
	if nsid != 1 {
		return 0, st(SCTGeneric, SCInvalidNamespace)
	}
	switch op {
	case ioFlush:
		return 0, statusNone
	case ioRead, ioWrite:
	default:
		return 0, st(SCTGeneric, SCInvalidOpcode)
	}
	slba := uint64(cdw11)<<32 | uint64(cdw10)
	nlb := uint64(cdw12&nlbMask) + 1
	n := int(nlb << f.lbads)
	f.maxXfer = max(f.maxXfer, n)
	if f.mdts != 0 && n > pageSize<<f.mdts {
		f.t.Errorf("fake: transfer of %d bytes exceeds MDTS (%d bytes)", n, pageSize<<f.mdts)
		return 0, st(SCTGeneric, SCInvalidField)
	}
	if slba+nlb > uint64(len(f.disk))>>f.lbads {
		return 0, st(SCTGeneric, SCLBAOutOfRange)
	}
	if slba < f.errHi && slba+nlb > f.errLo {
		if op == ioRead {
			return 0, st(SCTMediaError, mediaErrRead)
		}
		return 0, st(SCTMediaError, mediaErrWrite)
	}
	segs, ok := f.prpSegments(prp1, prp2, n)
	if !ok {
		return 0, st(SCTGeneric, SCPRPOffsetInvalid)
	}
	if f.logPRPs {
		rec := prpRecord{slba: slba}
		for _, s := range segs {
			pa, _ := f.a.phys(s)
			rec.prps = append(rec.prps, pa)
		}
		f.prpLog = append(f.prpLog, rec)
	}
	off := int(slba << f.lbads)
	for _, s := range segs {
		if op == ioRead {
			copy(s, f.disk[off:])
		} else {
			copy(f.disk[off:], s)
		}
		off += len(s)
	}
	return 0, statusNone
}

// prpSegments resolves PRP1/PRP2 for n bytes into arena slices, checking
// the rules of PRP entries and lists.
func (f *fakeNVMe) prpSegments(prp1, prp2 uint64, n int) ([][]byte, bool) {
	bad := func(format string, args ...any) ([][]byte, bool) {
		f.t.Errorf("fake: "+format, args...)
		return nil, false
	}
	if prp1%prpAlign != 0 {
		return bad("PRP1 %#x not dword aligned", prp1)
	}
	var segs [][]byte
	add := func(pa uint64, l int) bool {
		s := f.a.at(pa, l)
		segs = append(segs, s)
		return s != nil
	}
	first := min(n, pageSize-int(prp1&pageMask))
	if !add(prp1, first) {
		return bad("PRP1 %#x outside memory", prp1)
	}
	rest := n - first
	switch {
	case rest == 0:
	case rest <= pageSize:
		if prp2&pageMask != 0 || !add(prp2, rest) {
			return bad("PRP2 %#x not a page", prp2)
		}
	default:
		f.listCmds++
		list := prp2
		if list%8 != 0 {
			return bad("PRP list pointer %#x not qword aligned", list)
		}
		for rest > 0 {
			ent := f.a.at(list, 8)
			if ent == nil {
				return bad("PRP list at %#x outside memory", list)
			}
			pa := binary.LittleEndian.Uint64(ent)
			list += 8
			if list&pageMask == 0 && rest > pageSize { // last entry of a list page: next list
				list = pa
				continue
			}
			l := min(rest, pageSize)
			if pa&pageMask != 0 || !add(pa, l) {
				return bad("PRP list entry %#x not a page", pa)
			}
			rest -= l
		}
	}
	return segs, true
}

func (f *fakeNVMe) adminCmd(op uint8, nsid uint32, prp1, prp2 uint64, cdw10, cdw11 uint32) (uint32, uint16) {
	switch op {
	case adminIdentify:
		var b [identifySize]byte
		switch cdw10 & cnsMask {
		case cnsController:
			f.identifyController(b[:])
		case cnsNamespace:
			if nsid == 0 || nsid > f.nn {
				return 0, st(SCTGeneric, SCInvalidNamespace)
			}
			if nsid == 1 {
				f.identifyNamespace(b[:])
			}
		default:
			return 0, st(SCTGeneric, SCInvalidField)
		}
		segs, ok := f.prpSegments(prp1, prp2, identifySize)
		if !ok {
			return 0, st(SCTGeneric, SCPRPOffsetInvalid)
		}
		off := 0
		for _, s := range segs {
			off += copy(s, b[off:])
		}
		return 0, statusNone
	case adminSetFeatures:
		if cdw10&fidMask != featNumberOfQueue {
			return 0, st(SCTGeneric, SCInvalidField)
		}
		return 0, statusNone // one SQ and one CQ allocated (0's based)
	case adminCreateIOCQ, adminCreateIOSQ:
		qid, size := int(cdw10&qidMask), int(cdw10>>createQSizeShift)+1
		if qid != ioQueueID {
			return 0, st(SCTCommandSpecific, SCInvalidQueueID)
		}
		if size < minQueue || size > int(f.mqes)+1 {
			return 0, st(SCTCommandSpecific, SCInvalidQueueSize)
		}
		if cdw11&(1<<createPC) == 0 || prp1&pageMask != 0 || f.a.at(prp1, pageSize) == nil {
			f.t.Errorf("fake: queue creation without a contiguous page-aligned queue (cdw11 %#x, prp1 %#x)", cdw11, prp1)
			return 0, st(SCTGeneric, SCInvalidField)
		}
		if op == adminCreateIOCQ {
			if cdw11&(1<<ienBit) != 0 {
				f.t.Errorf("fake: polled driver enabled interrupts")
			}
			f.cqs[qid] = &fcq{pa: prp1, size: size, phase: 1}
			return 0, statusNone
		}
		cqid := int(cdw11 >> createCQIDShift)
		if cqid >= len(f.cqs) || f.cqs[cqid] == nil || cqid == 0 {
			return 0, st(SCTCommandSpecific, SCCompletionQueueInvalid)
		}
		f.sqs[qid] = &fsq{pa: prp1, size: size, cqid: cqid}
		return 0, statusNone
	}
	return 0, st(SCTGeneric, SCInvalidOpcode)
}

func pad(b []byte, s string) {
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
}

func (f *fakeNVMe) identifyController(b []byte) {
	le := binary.LittleEndian
	le.PutUint16(b[idVID:], fakeVID)
	pad(b[idSN:idSN+snLen], fakeSN)
	pad(b[idMN:idMN+mnLen], fakeMN)
	pad(b[idFR:idFR+frLen], fakeFR)
	b[idMDTS] = f.mdts
	le.PutUint16(b[idCNTLID:], fakeCNTLID)
	b[idSQES], b[idCQES] = f.sqes, f.cqes
	le.PutUint32(b[idNN:], f.nn)
	b[idVWC] = byte(b2u(f.vwc))
}

func (f *fakeNVMe) identifyNamespace(b []byte) {
	le := binary.LittleEndian
	blocks := uint64(len(f.disk)) >> f.lbads
	le.PutUint64(b[nsNSZE:], blocks)
	le.PutUint64(b[nsNSZE+8:], blocks)  // NCAP
	le.PutUint64(b[nsNSZE+16:], blocks) // NUSE
	b[nsNLBAF] = fakeNLBAF
	le.PutUint32(b[nsLBAF0+lbafSize*fakeLBAF512:], minLBAShift<<lbafLBADS)
	le.PutUint32(b[nsLBAF0+lbafSize*fakeLBAF4096:], maxLBAShift<<lbafLBADS)
	idx := fakeLBAF512 // the format in use: LBADS from f.lbads, MS from f.ms
	if f.lbads != minLBAShift {
		idx = fakeLBAF4096
	}
	le.PutUint32(b[nsLBAF0+lbafSize*idx:], uint32(f.lbads)<<lbafLBADS|uint32(f.ms))
	if f.flbas >= 0 {
		idx = f.flbas
	}
	b[nsFLBAS] = byte(idx)
}
