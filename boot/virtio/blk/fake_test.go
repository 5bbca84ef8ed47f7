package blk

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"tamavisor/boot/virtio"
)

// arena is fake physical memory: DMA allocations and zero-copy data
// buffers are carved from it and have fake physical addresses.
type arena struct {
	mem  []byte
	base uint64
	next int
}

const arenaBase = 0x4000_0000

func newArena(size int) *arena {
	raw := make([]byte, size+4096)
	off := int(-uintptr(unsafe.Pointer(&raw[0])) & 4095)
	return &arena{mem: raw[off : off+size], base: arenaBase}
}

func (a *arena) Alloc(size, align int) (uint64, []byte, error) {
	if align < 8 {
		align = 8
	}
	n := (a.next + align - 1) &^ (align - 1)
	if n+size > len(a.mem) {
		return 0, nil, fmt.Errorf("arena: out of memory (%d bytes)", size)
	}
	a.next = n + size
	return a.base + uint64(n), a.mem[n : n+size : n+size], nil
}

// buf returns a zero-copy-able buffer of n bytes.
func (a *arena) buf(n int) []byte {
	_, b, err := a.Alloc(n, 512)
	if err != nil {
		panic(err)
	}
	return b
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

func word(b []byte) *uint32 { return (*uint32)(unsafe.Pointer(&b[0])) }

type mode int

const (
	modeSync  mode = iota // requests complete during QueueNotify
	modeAsync             // a goroutine completes them, in reverse batch order
	modeHang              // requests never complete
	modeLazy              // completed in reverse order when the driver reads its clock
)

// lazyClock returns an Options.Now that lets a modeLazy device complete
// all outstanding requests, in reverse order, each time the driver polls.
func (f *fakeBlk) lazyClock() func() time.Duration {
	f.mode = modeLazy
	start := time.Now()
	return func() time.Duration {
		f.mu.Lock()
		if f.mode == modeLazy && f.ready && f.status&virtio.StatusDriverOK != 0 {
			f.process(true)
		}
		f.mu.Unlock()
		return time.Since(start)
	}
}

// fakeBlk is a virtio-mmio v2 block device over an arena.
type fakeBlk struct {
	t        testing.TB
	a        *arena
	mu       sync.Mutex
	mode     mode
	magic    uint32
	version  uint32
	id       uint32
	features uint64
	reject   bool // clear FEATURES_OK
	qmax     uint32
	sizeMax  uint32
	segMax   uint32
	blkSize  uint32
	disk     []byte
	errLo    uint64 // IOERR on sectors [errLo, errHi)
	errHi    uint64
	badFlush bool // IOERR on flushes
	// holdFlushes is the number of the next flushes held: received but
	// neither executed nor completed, until release (they then complete
	// after the requests received with them) or a reset (dropped).
	holdFlushes int
	held        []uint16 // heads of the held flushes
	releasing   bool
	events      []event // what the device received and executed, in order

	devSel, drvSel, qsel, qnum, status, gen uint32
	drvFeat                                 uint64
	ready                                   bool
	desc, drv, dev                          uint64
	lastAvail, usedIdx                      uint16

	reqs, flushes, notifies int
	maxBatch                int
	stop                    chan struct{}
	done                    sync.WaitGroup
}

const defaultFeatures = 1<<virtio.FeatureVersion1 | 1<<FeatureFlush | 1<<FeatureBlkSize

func newFake(t testing.TB, a *arena, diskSize int) *fakeBlk {
	f := &fakeBlk{t: t, a: a, magic: virtio.MMIOMagic, version: 2, id: DeviceID,
		features: defaultFeatures, qmax: 64, blkSize: 512, disk: make([]byte, diskSize)}
	for i := range f.disk {
		f.disk[i] = byte(i*7 + i>>9)
	}
	return f
}

// startAsync runs the device in its own goroutine until the test ends.
func (f *fakeBlk) startAsync() {
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
			if f.ready && f.status&virtio.StatusDriverOK != 0 {
				f.process(true)
			}
			f.mu.Unlock()
			runtime.Gosched()
		}
	}()
	f.t.Cleanup(func() { close(f.stop); f.done.Wait() })
}

func (f *fakeBlk) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeBlk) counts() (reqs, flushes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqs, f.flushes
}

func (f *fakeBlk) Read32(off uint32) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch off {
	case virtio.RegMagicValue:
		return f.magic
	case virtio.RegVersion:
		return f.version
	case virtio.RegDeviceID:
		return f.id
	case virtio.RegVendorID:
		return 0x554d4551
	case virtio.RegDeviceFeatures:
		return uint32(f.features >> (32 * f.devSel))
	case virtio.RegQueueNumMax:
		if f.qsel != 0 {
			return 0
		}
		return f.qmax
	case virtio.RegQueueReady:
		return b2u(f.ready)
	case virtio.RegStatus:
		return f.status
	case virtio.RegConfigGeneration:
		return f.gen
	}
	if off >= virtio.RegConfig {
		var cfg [24]byte
		le := binary.LittleEndian
		le.PutUint64(cfg[ConfigCapacity:], uint64(len(f.disk)/512))
		le.PutUint32(cfg[ConfigSizeMax:], f.sizeMax)
		le.PutUint32(cfg[ConfigSegMax:], f.segMax)
		le.PutUint32(cfg[ConfigBlkSize:], f.blkSize)
		if o := off - virtio.RegConfig; o+4 <= 24 {
			return le.Uint32(cfg[o:])
		}
		return 0
	}
	f.t.Errorf("fake: read of register %#x", off)
	return 0
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func (f *fakeBlk) Write32(off uint32, v uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	lo := func(p *uint64) { *p = *p&^0xffffffff | uint64(v) }
	hi := func(p *uint64) { *p = *p&0xffffffff | uint64(v)<<32 }
	switch off {
	case virtio.RegDeviceFeaturesSel:
		f.devSel = v & 1
	case virtio.RegDriverFeaturesSel:
		f.drvSel = v & 1
	case virtio.RegDriverFeatures:
		if f.drvSel == 0 {
			lo(&f.drvFeat)
		} else {
			hi(&f.drvFeat)
		}
	case virtio.RegQueueSel:
		f.qsel = v
	case virtio.RegQueueNum:
		if v > f.qmax || v&(v-1) != 0 {
			f.t.Errorf("fake: bad queue size %d", v)
		}
		f.qnum = v
	case virtio.RegQueueReady:
		f.ready = v == 1
	case virtio.RegQueueDescLow:
		lo(&f.desc)
	case virtio.RegQueueDescHigh:
		hi(&f.desc)
	case virtio.RegQueueDriverLow:
		lo(&f.drv)
	case virtio.RegQueueDriverHigh:
		hi(&f.drv)
	case virtio.RegQueueDeviceLow:
		lo(&f.dev)
	case virtio.RegQueueDeviceHigh:
		hi(&f.dev)
	case virtio.RegQueueNotify:
		f.notifies++
		if !f.ready || f.status&virtio.StatusDriverOK == 0 {
			f.t.Errorf("fake: notify before DRIVER_OK")
		}
		if f.mode == modeSync {
			f.process(false)
		}
	case virtio.RegInterruptACK:
	case virtio.RegStatus:
		if v == 0 {
			f.status, f.drvFeat, f.ready, f.lastAvail, f.usedIdx, f.qnum = 0, 0, false, 0, 0, 0
			f.held, f.releasing = nil, false
			return
		}
		if v&virtio.StatusFeaturesOK != 0 && f.status&virtio.StatusFeaturesOK == 0 &&
			(f.reject || f.drvFeat&^f.features != 0) {
			v &^= virtio.StatusFeaturesOK
		}
		f.status = v
	default:
		f.t.Errorf("fake: write of register %#x", off)
	}
}

// event is a request the device received and held (a flush), or
// executed.
type event struct {
	kind   byte // 'h' held, 'x' executed on receipt, 'r' executed on release
	typ    uint32
	sector uint64
}

// release makes the device complete the flushes it holds the next time
// it processes requests.
func (f *fakeBlk) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releasing = true
}

// log returns a copy of the events so far.
func (f *fakeBlk) log() []event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]event(nil), f.events...)
}

// header returns the type and sector of the request at head.
func (f *fakeBlk) header(head uint16) (typ uint32, sector uint64) {
	if int(head) >= int(f.qnum) {
		return 0, 0
	}
	b := f.a.at(f.desc+16*uint64(head), 16)
	if b == nil {
		return 0, 0
	}
	h := f.a.at(binary.LittleEndian.Uint64(b), 16)
	if h == nil {
		return 0, 0
	}
	return binary.LittleEndian.Uint32(h), binary.LittleEndian.Uint64(h[8:])
}

type fdesc struct {
	addr  uint64
	len   uint32
	flags uint16
}

// process completes every available request. Called with f.mu held.
func (f *fakeBlk) process(reverse bool) {
	n := uint16(f.qnum)
	aw := f.a.at(f.drv, 4)
	uw := f.a.at(f.dev, 4)
	if n == 0 || aw == nil || uw == nil {
		f.t.Errorf("fake: queue not set up")
		return
	}
	idx := uint16(atomic.LoadUint32(word(aw)) >> 16)
	var done [][2]uint32
	defer func() { f.maxBatch = max(f.maxBatch, len(done)) }()
	for f.lastAvail != idx {
		head := binary.LittleEndian.Uint16(f.a.at(f.drv+4+2*uint64(f.lastAvail%n), 2))
		f.lastAvail++
		if typ, sec := f.header(head); typ == TypeFlush && f.holdFlushes > 0 {
			f.holdFlushes--
			f.held = append(f.held, head)
			f.events = append(f.events, event{'h', typ, sec})
			continue
		}
		done = append(done, [2]uint32{uint32(head), f.handle(head, 'x')})
	}
	if f.releasing {
		for _, head := range f.held {
			done = append(done, [2]uint32{uint32(head), f.handle(head, 'r')})
		}
		f.held, f.releasing = nil, false
	}
	for i := range done {
		e := done[i]
		if reverse {
			e = done[len(done)-1-i]
		}
		u := f.a.at(f.dev+4+8*uint64(f.usedIdx%n), 8)
		binary.LittleEndian.PutUint32(u, e[0])
		binary.LittleEndian.PutUint32(u[4:], e[1])
		f.usedIdx++
		atomic.StoreUint32(word(uw), uint32(f.usedIdx)<<16)
	}
}

// handle executes one request chain and returns the bytes written; kind
// is its event's.
func (f *fakeBlk) handle(head uint16, kind byte) uint32 {
	f.reqs++
	le := binary.LittleEndian
	var ds []fdesc
	for i := head; ; {
		if int(i) >= int(f.qnum) || len(ds) > int(f.qnum) {
			f.t.Errorf("fake: bad descriptor chain")
			return 0
		}
		b := f.a.at(f.desc+16*uint64(i), 16)
		ds = append(ds, fdesc{le.Uint64(b), le.Uint32(b[8:]), le.Uint16(b[12:])})
		if ds[len(ds)-1].flags&virtio.DescFNext == 0 {
			break
		}
		i = le.Uint16(b[14:])
	}
	if len(ds) < 2 || ds[0].len != 16 || ds[0].flags&virtio.DescFWrite != 0 {
		f.t.Errorf("fake: bad request header %+v", ds)
		return 0
	}
	st := ds[len(ds)-1]
	if st.len != 1 || st.flags&virtio.DescFWrite == 0 {
		f.t.Errorf("fake: bad status descriptor %+v", st)
		return 0
	}
	hdr := f.a.at(ds[0].addr, 16)
	typ, sector := le.Uint32(hdr), le.Uint64(hdr[8:])
	data := ds[1 : len(ds)-1]
	if f.features&(1<<FeatureSegMax) != 0 && len(data) > int(f.segMax) {
		f.t.Errorf("fake: %d segments > seg_max %d", len(data), f.segMax)
	}
	total := 0
	for _, d := range data {
		if f.features&(1<<FeatureSizeMax) != 0 && d.len > f.sizeMax {
			f.t.Errorf("fake: segment of %d bytes > size_max %d", d.len, f.sizeMax)
		}
		if want := typ != TypeOut; (d.flags&virtio.DescFWrite != 0) != want {
			f.t.Errorf("fake: data descriptor flags %#x for type %d", d.flags, typ)
		}
		total += int(d.len)
	}
	status, written := byte(StatusOK), uint32(1)
	off := int(sector * 512)
	f.events = append(f.events, event{kind, typ, sector})
	switch typ {
	case TypeIn, TypeOut:
		end := sector + uint64(total+511)/512
		switch {
		case total%512 != 0 || off+total > len(f.disk):
			status = StatusIOErr
		case sector < f.errHi && end > f.errLo:
			status = StatusIOErr
		case typ == TypeOut && f.features&(1<<FeatureRO) != 0:
			status = StatusIOErr
		default:
			for _, d := range data {
				b := f.a.at(d.addr, int(d.len))
				if typ == TypeIn {
					copy(b, f.disk[off:])
					written += d.len
				} else {
					copy(f.disk[off:], b)
				}
				off += int(d.len)
			}
		}
	case TypeFlush:
		f.flushes++
		if f.features&(1<<FeatureFlush) == 0 {
			status = StatusUnsupp
		} else if f.badFlush {
			status = StatusIOErr
		}
	case TypeGetID:
		copy(f.a.at(data[0].addr, 20), "fake-serial-0001\x00\x00\x00\x00")
		written += 20
	default:
		status = StatusUnsupp
	}
	f.a.at(st.addr, 1)[0] = status
	return written
}
