// Package nvme is a polling NVMe driver for tamavisor's snapshot store.
// It follows the NVM Express Base Specification 2.0, the NVM Command Set
// Specification 1.0 and the NVMe over PCIe Transport Specification 1.0
// (doorbells), and implements snapshot.BlockDevice on one namespace.
//
// Bring-up (Base section 3.5.1): disable the controller (CC.EN=0, wait
// CSTS.RDY=0), program the admin queue (AQA, ASQ, ACQ), enable it (CC.EN=1,
// wait CSTS.RDY=1, both bounded by CAP.TO), Identify Controller and
// Identify Namespace, Set Features Number of Queues, then Create I/O
// Completion Queue and Create I/O Submission Queue for one queue pair.
// Reads and writes describe memory with PRP entries and PRP lists, split
// at MDTS, with several commands in flight; completions are polled (phase
// tag), no interrupts are used.
//
// Like boot/virtio/blk: caller buffers go to the controller by physical
// address when Options.Phys allows it, else through a bounce buffer; a
// command that times out, and any protocol violation by the controller,
// resets and reinitialises the controller before the call returns, so
// the controller no longer accesses the caller's buffer; a failed
// reinitialisation is remembered and retried on the next request.
//
// Also like boot/virtio/blk, writes can be pipelined (snapshot.AsyncWriter:
// WriteAsync returns while the controller works, Sync waits) and a wait for
// the controller can run other work (snapshot.Idler: SetIdle). WriteVAsync
// writes several buffers as one, without a copy, when PRP entries can
// describe them. FlushAsync starts a Flush command that Sync does not wait
// for (snapshot.AsyncFlusher).
//
// The package is pure Go and host-testable: registers go through Regs,
// DMA memory through DMA. Structures are little-endian and the code
// assumes a little-endian host (amd64).
package nvme

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"tamavisor/boot/blkio"
	"tamavisor/snapshot"
)

// The driver uses 4 KiB memory pages (CC.MPS = 0).
const (
	pageShift = 12
	pageSize  = 1 << pageShift
	pageMask  = pageSize - 1
	// prpPerPage is the number of PRP entries in one PRP list page; one
	// list page per command bounds a command to prpPerPage pages after
	// the first.
	prpEntrySize = 8
	prpPerPage   = pageSize / prpEntrySize
	maxPRPData   = prpPerPage * pageSize
	prpAlign     = 4 // PRP1 needs a dword-aligned offset (bits 1:0 clear)
)

// Admin command opcodes (Base 2.0 section 5, Figure "Opcodes for Admin Commands").
const (
	adminCreateIOSQ   = 0x01 // section 5.5
	adminCreateIOCQ   = 0x05 // section 5.4
	adminIdentify     = 0x06 // section 5.17
	adminSetFeatures  = 0x09 // section 5.27
	featNumberOfQueue = 0x07 // Number of Queues feature (5.27.1.5)
)

// NVM command set I/O opcodes (Flush: Base 2.0 section 7.1; Read and
// Write: NVM Command Set 1.0, I/O Commands).
const (
	ioFlush = 0x00
	ioWrite = 0x01
	ioRead  = 0x02
)

// Identify (section 5.17): CDW10 CNS values and the data structures.
const (
	cnsNamespace  = 0x00 // Identify Namespace (NVM Command Set 1.0 section 4.1.5.1)
	cnsController = 0x01 // Identify Controller (Base 2.0 section 5.17.2.1)
	identifySize  = 4096

	// Identify Controller byte offsets.
	idVID      = 0   // PCI Vendor ID
	idSN       = 4   // Serial Number, 20 ASCII bytes
	idMN       = 24  // Model Number, 40 ASCII bytes
	idFR       = 64  // Firmware Revision, 8 ASCII bytes
	idMDTS     = 77  // Maximum Data Transfer Size, 2^n units of CAP.MPSMIN, 0 = no limit
	idCNTLID   = 78  // Controller ID
	idSQES     = 512 // 3:0 required, 7:4 maximum SQ entry size (log2)
	esRequired = 0
	esMaximum  = 4
	esBits     = 4
	maxMDTS    = 32  // larger MDTS values exceed any transfer: no limit
	idCQES     = 513 // 3:0 required, 7:4 maximum CQ entry size (log2)
	idNN       = 516 // Number of Namespaces
	idVWC      = 525 // bit 0: volatile write cache present
	snLen      = 20
	mnLen      = 40
	frLen      = 8

	// Identify Namespace byte offsets.
	nsNSZE        = 0   // Namespace Size, in logical blocks
	nsNLBAF       = 25  // Number of LBA Formats, 0's based
	nsFLBAS       = 26  // 3:0 format index low bits, 4 extended metadata, 6:5 index high bits
	nsLBAF0       = 128 // LBA Format 0 descriptor; 4 bytes each
	lbafSize      = 4
	lbafMS        = 0 // 15:0 Metadata Size
	lbafMSBits    = 16
	lbafLBADSBits = 8
	lbafLBADS     = 16 // 23:16 LBA Data Size, log2
	flbasLo       = 0
	flbasLoLen    = 4
	flbasHi       = 5
	flbasHiLen    = 2
	maxLBAF       = 63 // NLBAF limit (64 formats)
)

// Queue creation (sections 5.4, 5.5) and Number of Queues (5.27.1.5).
const (
	createQSizeShift = 16 // CDW10 31:16 QSIZE, 0's based; 15:0 QID
	createPC         = 0  // CDW11 bit 0: physically contiguous
	createCQIDShift  = 16 // Create I/O SQ CDW11 31:16: CQID
	nqNCQRShift      = 16 // Number of Queues CDW11/DW0: 31:16 completion queues, 15:0 submission queues
	ioQueueID        = 1
)

// Read/Write CDW12: 15:0 NLB, the number of logical blocks, 0's based.
const maxNLB = 1 << 16

// Limits of what the driver supports.
const (
	minLBAShift            = 9  // 512-byte logical blocks
	maxLBAShift            = 12 // 4096-byte logical blocks
	adminEntries           = 4  // admin queue: one command at a time
	minQueue               = 2  // smallest queue (MQES = 1)
	maxSizeLog2            = 63 // Size is an int64
	toUnit                 = 500 * time.Millisecond
	cfsPollPeriod          = 1 << 12 // empty polls between CSTS.CFS checks
	defaultShutdownTimeout = 10 * time.Second
)

// Defaults for Options.
const (
	DefaultQueueSize  = 32
	DefaultMaxRequest = 512 << 10
	DefaultBounceSize = 1 << 20
	DefaultTimeout    = 30 * time.Second
	DefaultNamespace  = 1
)

var (
	// ErrTimeout wraps commands the controller did not complete in time.
	ErrTimeout = errors.New("nvme: command timed out")
	// ErrProtocol wraps completions that break the queue protocol: an
	// unknown or stale command ID, a wrong SQ identifier or SQ head.
	ErrProtocol = errors.New("nvme: controller protocol violation")
	// ErrFatal is reported when the controller sets CSTS.CFS.
	ErrFatal = errors.New("nvme: controller fatal status (CSTS.CFS)")
	// ErrNotReady wraps a controller that does not reach CSTS.RDY in CAP.TO.
	ErrNotReady = errors.New("nvme: controller not ready")
	// ErrGone is reported when the registers read all ones: the
	// controller no longer responds on the bus.
	ErrGone = errors.New("nvme: controller not responding (CSTS reads all ones)")
	// errShutdown marks a controller after Shutdown: the next request
	// reinitialises it.
	errShutdown = errors.New("nvme: controller was shut down")
	errStuck    = errors.New("nvme: controller did not stop")
	errPolling  = errors.New("waiting for completions")
)

// Options tunes a Device. Zero values select the defaults.
type Options struct {
	// Phys returns the physical address of b[0] if the controller may
	// access all of b directly; nil or false means bounce through DMA
	// memory. Buffers whose address is not dword-aligned are bounced.
	Phys func(b []byte) (uint64, bool)
	// Timeout bounds the wait for any completion while commands are in
	// flight. After a timeout the controller is reset and reinitialised.
	Timeout time.Duration
	// Now is a monotonic clock (default: time since New). Register waits
	// (CAP.TO) use it too.
	Now func() time.Duration
	// QueueSize caps the entries of the I/O queue pair (also capped by
	// CAP.MQES); QueueSize-1 commands can be in flight.
	QueueSize int
	// MaxRequest caps the data bytes of one command (also capped by MDTS);
	// it is rounded down to whole 4 KiB pages, at least one.
	MaxRequest int
	// BounceSize is the size of the bounce buffer, allocated on first use.
	BounceSize int
	// Namespace is the namespace ID (default 1).
	Namespace uint32
}

// Stats counts driver activity.
type Stats struct {
	Commands, Flushes, Errors, Timeouts, Resets, ProtocolErrors uint64
	BytesRead, BytesWritten, BytesBounced                       uint64
}

// Identity is what Identify Controller and Identify Namespace reported.
type Identity struct {
	VendorID           uint16
	ControllerID       uint16
	Serial             string
	Model              string
	Firmware           string
	Version            uint32 // VS: major<<16 | minor<<8 | tertiary
	Namespaces         uint32 // NN
	VolatileWriteCache bool   // VWC bit 0: Flush issues a Flush command
	MaxTransfer        int    // bytes per command the driver uses (MDTS, options)
	LBASize            int
	Blocks             uint64 // NSZE
}

// extent is n bytes of physically contiguous memory at physical address pa.
type extent struct {
	pa uint64
	n  int
}

// slot is one command the driver may have in flight.
type slot struct {
	busy bool
	bg   bool   // a flush FlushAsync started: Sync does not wait for it
	gen  uint16 // bumped on each use; the high bits of the command ID
	op   uint8
	lba  uint64
	n    int
}

// Device is one namespace of an NVMe controller. Its methods are safe for
// concurrent use, except while an idle hook is set (SetIdle): the hook
// runs with the lock released in the middle of a request, and the device
// must then be used from one goroutine only.
type Device struct {
	mu       sync.Mutex
	r        Regs
	dma      DMA
	opt      Options
	cap      uint64
	toWait   time.Duration // CAP.TO
	admin    *queue
	io       *queue
	adminCID uint16
	id       Identity
	lbaShift uint
	size     int64
	reqLen   int
	slots    []slot
	free     []int
	prpPA    uint64 // slot i's PRP list page at prpPA + i*pageSize
	prp      []byte
	idPA     uint64 // Identify data buffer
	idBuf    []byte
	bounce   []byte
	bouncePA uint64
	broken   error             // reinitialisation failed; retried on the next request
	inflight int               // I/O commands submitted and not completed
	flushing int               // of them, flushes FlushAsync started
	ioErr    error             // the first error status of the commands of the current operation
	errs     blkio.AsyncErrors // failures of requests started asynchronously, each reported once
	idle     func()            // called while waiting for a completion (SetIdle)
	stats    Stats
}

var (
	_ snapshot.BlockDevice  = (*Device)(nil)
	_ snapshot.AsyncWriter  = (*Device)(nil)
	_ snapshot.VectorWriter = (*Device)(nil)
	_ snapshot.VectorReader = (*Device)(nil)
	_ snapshot.AsyncReader  = (*Device)(nil)
	_ snapshot.AsyncFlusher = (*Device)(nil)
	_ snapshot.Idler        = (*Device)(nil)
)

// New brings up the controller behind r and returns namespace
// opt.Namespace (default 1) as a block device.
func New(r Regs, dma DMA, opt Options) (*Device, error) {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Now == nil {
		start := time.Now()
		opt.Now = func() time.Duration { return time.Since(start) }
	}
	if opt.QueueSize <= 0 {
		opt.QueueSize = DefaultQueueSize
	}
	if opt.MaxRequest <= 0 {
		opt.MaxRequest = DefaultMaxRequest
	}
	opt.MaxRequest = max(opt.MaxRequest, pageSize) // commands split at page multiples
	if opt.BounceSize <= 0 {
		opt.BounceSize = DefaultBounceSize
	}
	if opt.Namespace == 0 {
		opt.Namespace = DefaultNamespace
	}
	d := &Device{r: r, dma: dma, opt: opt}
	if err := d.probe(); err != nil {
		return nil, err
	}
	if err := d.start(true); err != nil {
		d.quiesce(err)
		return nil, err
	}
	return d, nil
}

// probe reads CAP, checks what the driver needs and allocates memory.
func (d *Device) probe() error {
	d.cap = d.r.Read64(CAP)
	if d.cap == 1<<64-1 {
		return ErrGone
	}
	if !bit(d.cap, CAP_CSS) {
		return errors.New("nvme: controller does not support the NVM Command Set (CAP.CSS bit 0)")
	}
	if mps := field(d.cap, CAP_MPSMIN, capMPSBits); mps != 0 {
		return fmt.Errorf("nvme: controller's smallest memory page is %d bytes (CAP.MPSMIN); the driver uses 4 KiB pages", pageSize<<mps)
	}
	d.toWait = time.Duration(max(field(d.cap, CAP_TO, capTOBits), 1)) * toUnit
	mqes := int(field(d.cap, CAP_MQES, capMQESBits)) + 1
	if mqes < minQueue {
		return fmt.Errorf("nvme: CAP.MQES %d: queues of %d entry", mqes-1, mqes)
	}
	var err error
	if d.admin, err = newQueue(d.dma, 0, adminEntries); err != nil {
		return err
	}
	if d.io, err = newQueue(d.dma, ioQueueID, min(d.opt.QueueSize, mqes, AdminQueueMaxEntries)); err != nil {
		return err
	}
	dstrd := uint(field(d.cap, CAP_DSTRD, capDSTRDBits))
	d.admin.setDoorbells(dstrd)
	d.io.setDoorbells(dstrd)
	n := min(d.io.size-1, maxSlots)
	d.slots = make([]slot, n)
	if d.prpPA, d.prp, err = d.dma.Alloc(n*pageSize, pageSize); err != nil {
		return fmt.Errorf("nvme: PRP lists: %w", err)
	}
	if d.idPA, d.idBuf, err = d.dma.Alloc(identifySize, pageSize); err != nil {
		return fmt.Errorf("nvme: Identify buffer: %w", err)
	}
	return nil
}

// disable clears CC.EN and waits for CSTS.RDY to clear (section 3.7.2,
// controller reset): after that the controller no longer accesses host
// memory and has forgotten all queues.
func (d *Device) disable() error {
	cc := d.r.Read32(CC)
	if bit(uint64(cc), CC_EN) {
		d.r.Write32(CC, cc&^(1<<CC_EN))
	}
	if err := d.waitReady(false); err != nil {
		return fmt.Errorf("%w: %w (the controller may still access memory it was given)", errStuck, err)
	}
	return nil
}

// quiesce leaves a controller whose bring-up failed disabled, unless
// disabling it is what failed.
func (d *Device) quiesce(err error) {
	if !errors.Is(err, errStuck) && !errors.Is(err, ErrGone) {
		d.disable()
	}
}

// waitReady waits up to CAP.TO for CSTS.RDY to equal want.
func (d *Device) waitReady(want bool) error {
	start := d.opt.Now()
	for {
		csts := d.r.Read32(CSTS)
		switch {
		case csts == cstsGone:
			return ErrGone
		case bit(uint64(csts), CSTS_RDY) == want:
			return nil
		case want && bit(uint64(csts), CSTS_CFS):
			return fmt.Errorf("%w while enabling", ErrFatal)
		}
		if d.opt.Now()-start > d.toWait {
			verb := "set"
			if !want {
				verb = "clear"
			}
			return fmt.Errorf("%w: CSTS.RDY did not %s within CAP.TO (%v) after CC.EN=%d", ErrNotReady, verb, d.toWait, b2u(want))
		}
	}
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// start (re)initialises the controller: reset, admin queue, enable, and on
// the first call Identify; then the I/O queue pair (section 3.5.1).
func (d *Device) start(first bool) error {
	if err := d.disable(); err != nil {
		return err
	}
	d.admin.reset()
	d.io.reset()
	d.forget()
	d.r.Write32(AQA, uint32(d.admin.size-1)<<AQA_ACQS|uint32(d.admin.size-1)<<AQA_ASQS)
	d.r.Write64(ASQ, d.admin.sqPA)
	d.r.Write64(ACQ, d.admin.cqPA)
	cc := uint32(sqesLog2)<<CC_IOSQES | uint32(cqesLog2)<<CC_IOCQES // CSS, MPS, AMS, SHN = 0
	d.r.Write32(CC, cc|1<<CC_EN)
	if err := d.waitReady(true); err != nil {
		return err
	}
	if first {
		if err := d.identifyController(); err != nil {
			return err
		}
	}
	if err := d.identifyNamespace(first); err != nil {
		return err
	}
	if _, err := d.adminCmd("Set Features (Number of Queues)", adminSetFeatures, 0, 0, featNumberOfQueue, 0); err != nil {
		return err
	}
	qsize := uint32(d.io.size-1) << createQSizeShift
	if _, err := d.adminCmd("Create I/O Completion Queue", adminCreateIOCQ, 0, d.io.cqPA,
		qsize|ioQueueID, 1<<createPC); err != nil {
		return err
	}
	if _, err := d.adminCmd("Create I/O Submission Queue", adminCreateIOSQ, 0, d.io.sqPA,
		qsize|ioQueueID, ioQueueID<<createCQIDShift|1<<createPC); err != nil {
		return err
	}
	return nil
}

func (d *Device) identifyController() error {
	clear(d.idBuf)
	if _, err := d.adminCmd("Identify Controller", adminIdentify, 0, d.idPA, cnsController, 0); err != nil {
		return err
	}
	b, le := d.idBuf, binary.LittleEndian
	sq, cq := uint64(b[idSQES]), uint64(b[idCQES])
	if field(sq, esRequired, esBits) > sqesLog2 || field(sq, esMaximum, esBits) < sqesLog2 ||
		field(cq, esRequired, esBits) > cqesLog2 || field(cq, esMaximum, esBits) < cqesLog2 {
		return fmt.Errorf("nvme: controller's queue entry sizes (SQES %#x, CQES %#x) exclude 64-byte SQ and 16-byte CQ entries", sq, cq)
	}
	d.id = Identity{
		VendorID:           le.Uint16(b[idVID:]),
		ControllerID:       le.Uint16(b[idCNTLID:]),
		Serial:             ascii(b[idSN : idSN+snLen]),
		Model:              ascii(b[idMN : idMN+mnLen]),
		Firmware:           ascii(b[idFR : idFR+frLen]),
		Version:            d.r.Read32(VS),
		Namespaces:         le.Uint32(b[idNN:]),
		VolatileWriteCache: b[idVWC]&1 != 0,
	}
	if d.opt.Namespace > d.id.Namespaces {
		return fmt.Errorf("nvme: namespace %d does not exist (the controller has %d)", d.opt.Namespace, d.id.Namespaces)
	}
	d.reqLen = min(d.opt.MaxRequest, maxPRPData)
	if mdts := b[idMDTS]; mdts != 0 && mdts < maxMDTS {
		d.reqLen = min(d.reqLen, pageSize<<mdts)
	}
	return nil
}

// ascii trims an Identify string (ASCII, space padded).
func ascii(b []byte) string {
	return strings.TrimRight(strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, string(b)), " ")
}

// identifyNamespace reads the LBA format and size of the namespace. After
// a reset (first false) it checks that they did not change.
func (d *Device) identifyNamespace(first bool) error {
	clear(d.idBuf)
	if _, err := d.adminCmd("Identify Namespace", adminIdentify, d.opt.Namespace, d.idPA, cnsNamespace, 0); err != nil {
		return err
	}
	b, le := d.idBuf, binary.LittleEndian
	nsze := le.Uint64(b[nsNSZE:])
	if nsze == 0 {
		return fmt.Errorf("nvme: namespace %d is not active (NSZE 0)", d.opt.Namespace)
	}
	flbas := uint64(b[nsFLBAS])
	idx := field(flbas, flbasLo, flbasLoLen) | field(flbas, flbasHi, flbasHiLen)<<flbasLoLen
	if nlbaf := uint64(b[nsNLBAF]); idx > nlbaf || idx > maxLBAF {
		return fmt.Errorf("nvme: namespace %d uses LBA format %d of %d (FLBAS %#x)", d.opt.Namespace, idx, nlbaf+1, flbas)
	}
	lbaf := uint64(le.Uint32(b[nsLBAF0+lbafSize*idx:]))
	if ms := field(lbaf, lbafMS, lbafMSBits); ms != 0 {
		return fmt.Errorf("nvme: namespace %d has %d bytes of metadata per block (LBA format %d); only formats without metadata are supported", d.opt.Namespace, ms, idx)
	}
	shift := uint(field(lbaf, lbafLBADS, lbafLBADSBits))
	if shift < minLBAShift || shift > maxLBAShift {
		return fmt.Errorf("nvme: namespace %d: logical block of 2^%d bytes (LBADS); 512 to 4096 supported", d.opt.Namespace, shift)
	}
	if nsze > 1<<(maxSizeLog2-shift) {
		return fmt.Errorf("nvme: namespace %d: size of %d blocks out of range", d.opt.Namespace, nsze)
	}
	if !first {
		if shift != d.lbaShift || nsze != d.id.Blocks {
			return fmt.Errorf("nvme: namespace %d changed across reset (%d blocks of %d bytes, was %d of %d)",
				d.opt.Namespace, nsze, 1<<shift, d.id.Blocks, d.id.LBASize)
		}
		return nil
	}
	d.lbaShift, d.size = shift, int64(nsze<<shift)
	d.id.LBASize, d.id.Blocks = 1<<shift, nsze
	d.reqLen = min(d.reqLen, maxNLB<<shift) &^ (pageSize - 1)
	if d.reqLen < 1<<shift {
		return fmt.Errorf("nvme: maximum transfer of %d bytes is below one block", d.reqLen)
	}
	d.id.MaxTransfer = d.reqLen
	return nil
}

// adminCmd runs one admin command and returns its dword 0. prp1 is a
// page-aligned buffer of at most one page. A timeout or protocol violation
// leaves the controller for the caller to reset.
func (d *Device) adminCmd(what string, op uint8, nsid uint32, prp1 uint64, cdw10, cdw11 uint32) (uint32, error) {
	q := d.admin
	if q.full() {
		return 0, fmt.Errorf("%w: admin submission queue full (SQ head %d never advanced)", ErrProtocol, q.head)
	}
	d.adminCID++
	cid := d.adminCID
	e := q.next()
	le := binary.LittleEndian
	le.PutUint32(e[sqeCDW0:], uint32(op)|uint32(cid)<<sqeCIDShift)
	le.PutUint32(e[sqeNSID:], nsid)
	le.PutUint64(e[sqePRP1:], prp1)
	le.PutUint32(e[sqeCDW10:], cdw10)
	le.PutUint32(e[sqeCDW11:], cdw11)
	q.ring(d.r)
	start := d.opt.Now()
	for {
		c, ok, err := q.pop()
		if err != nil {
			q.ack(d.r)
			return 0, err
		}
		if ok {
			q.ack(d.r)
			if c.cid != cid {
				return 0, fmt.Errorf("%w: admin completion for command ID %#x, expected %#x (%s)", ErrProtocol, c.cid, cid, what)
			}
			if c.status != 0 {
				return 0, &StatusError{Cmd: what, Field: c.status}
			}
			return c.dw0, nil
		}
		if d.opt.Now()-start > d.opt.Timeout {
			return 0, d.withCSTS(fmt.Errorf("%w after %v (%s)", ErrTimeout, d.opt.Timeout, what))
		}
	}
}

// withCSTS adds a fatal or vanished controller to err (a timeout).
func (d *Device) withCSTS(err error) error {
	switch csts := d.r.Read32(CSTS); {
	case csts == cstsGone:
		return fmt.Errorf("%w; %w", err, ErrGone)
	case bit(uint64(csts), CSTS_CFS):
		return fmt.Errorf("%w; %w", err, ErrFatal)
	}
	return err
}

// SectorSize is the namespace's logical block size.
func (d *Device) SectorSize() int { return 1 << d.lbaShift }

// Size is the namespace's capacity in bytes.
func (d *Device) Size() int64 { return d.size }

// Identity returns what the controller reported at bring-up.
func (d *Device) Identity() Identity { return d.id }

// Stats returns a copy of the activity counters.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

func (d *Device) ReadAt(p []byte, off int64) (int, error) { return d.rw(ioRead, p, off) }

func (d *Device) WriteAt(p []byte, off int64) (int, error) { return d.rw(ioWrite, p, off) }

// Flush issues a Flush command if the controller has a volatile write
// cache (Identify Controller VWC). Without one, a completed write is
// already on non-volatile media and Flush only waits for the writes
// WriteAsync started (their errors are kept for Sync). With one, it first
// waits for every command in flight, the flushes FlushAsync started
// included, and returns the error of a failed one of those flushes (once)
// rather than its own.
func (d *Device) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.id.VolatileWriteCache {
		d.drain(true)
		return nil
	}
	d.stats.Flushes++
	err := d.run(ioFlush, 0)
	if f := d.errs.TakeFlush(); f != nil {
		err = f
	}
	return err
}

// FlushAsync starts a Flush command and returns without waiting for it
// (snapshot.AsyncFlusher): the caller writes on while the controller makes
// the writes completed before it durable. A Flush covers only the commands
// completed before it was submitted (Base 2.0 section 7.1; the controller
// orders nothing else), so the caller Syncs first. Sync does not wait for
// it; Flush, Shutdown and every synchronous request do. Each call starts a
// Flush of its own, even while another is in flight (which does not cover
// the writes completed since it was submitted); it waits only while every
// slot or SQ entry is taken. Without a volatile write cache it does
// nothing, as Flush.
//
// Each error is reported once: a failed earlier flush's is returned here
// (without starting one) or by the next Sync or Flush; a timeout or
// protocol violation is returned by the call that waited for it, which
// reset the controller.
func (d *Device) FlushAsync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.id.VolatileWriteCache {
		return nil
	}
	if err := d.ready(true); err != nil {
		return err
	}
	d.stats.Flushes++
	q := d.io
	for len(d.free) == 0 || q.full() {
		q.ack(d.r)
		if d.inflight == 0 {
			return d.abort(fmt.Errorf("%w: every command completed but the SQ head (%d) lags the tail (%d)", ErrProtocol, q.head, q.tail))
		}
		if err := d.reap(); err != nil {
			return err
		}
	}
	q.ack(d.r) // as in transfer: completions are returned before their slots are reused
	d.submit(ioFlush, 0, nil, 0, true)
	q.ring(d.r)
	return nil
}

// Shutdown tells the controller that power goes away (CC.SHN normal,
// section 3.6) and waits for CSTS.SHST to report completion, after the
// writes WriteAsync started (their errors are kept for Sync). A later
// request reinitialises the controller.
func (d *Device) Shutdown() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drain(true)
	cc := d.r.Read32(CC)
	d.r.Write32(CC, cc&^((1<<ccSHNBits-1)<<CC_SHN)|CC_SHN_NORMAL<<CC_SHN)
	d.broken = errShutdown
	start := d.opt.Now()
	for {
		csts := d.r.Read32(CSTS)
		if csts == cstsGone {
			return ErrGone
		}
		if field(uint64(csts), CSTS_SHST, cstsSHSTBits) == CSTS_SHST_COMPLETE {
			return nil
		}
		if d.opt.Now()-start > defaultShutdownTimeout {
			return fmt.Errorf("nvme: shutdown not complete (CSTS.SHST %d) after %v", field(uint64(csts), CSTS_SHST, cstsSHSTBits), defaultShutdownTimeout)
		}
	}
}

func (d *Device) rw(op uint8, p []byte, off int64) (int, error) {
	if err := snapshot.CheckRequest(d.SectorSize(), d.size, len(p), off); err != nil {
		return 0, fmt.Errorf("nvme: %w", err)
	}
	if len(p) == 0 {
		return 0, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Writes WriteAsync started complete before the bounce buffer is
	// filled (run would complete them too, but only after the copy).
	if err := d.settle(); err != nil {
		return 0, err
	}
	lba := uint64(off) >> d.lbaShift
	if pa, ok := d.phys(p); ok {
		if err := d.run(op, lba, extent{pa, len(p)}); err != nil {
			return 0, err
		}
		d.count(op, len(p))
		return len(p), nil
	}
	if d.bounce == nil {
		pa, buf, err := d.dma.Alloc(d.opt.BounceSize, pageSize)
		if err != nil {
			return 0, fmt.Errorf("nvme: bounce buffer: %w", err)
		}
		n := len(buf) &^ (pageSize - 1)
		if n == 0 || pa%pageSize != 0 {
			return 0, errors.New("nvme: bounce buffer smaller than a page or misaligned")
		}
		d.bouncePA, d.bounce = pa, buf[:n]
	}
	for done := 0; done < len(p); {
		chunk := p[done:min(len(p), done+len(d.bounce))]
		if op == ioWrite {
			copy(d.bounce, chunk)
		}
		if err := d.run(op, lba+uint64(done>>d.lbaShift), extent{d.bouncePA, len(chunk)}); err != nil {
			return done, err
		}
		if op == ioRead {
			copy(chunk, d.bounce)
		}
		done += len(chunk)
		d.count(op, len(chunk))
		d.stats.BytesBounced += uint64(len(chunk))
	}
	return len(p), nil
}

func (d *Device) phys(p []byte) (uint64, bool) {
	if d.opt.Phys == nil {
		return 0, false
	}
	pa, ok := d.opt.Phys(p)
	return pa, ok && pa%prpAlign == 0
}

func (d *Device) count(op uint8, n int) {
	if op == ioRead {
		d.stats.BytesRead += uint64(n)
	} else {
		d.stats.BytesWritten += uint64(n)
	}
}

// run transfers the memory xs describes from or to the blocks starting
// at lba, as commands of at most reqLen bytes with up to len(d.slots) in
// flight, and waits for them. No memory issues one command without data
// (Flush). On an error status it stops submitting, waits for
// the commands in flight and returns the first error. On a timeout or a
// protocol violation it resets and reinitialises the controller, so that
// no buffer is accessed after return. Writes started by WriteAsync, and
// flushes FlushAsync started, are completed first (their errors are kept
// for Sync, and for Sync, FlushAsync or Flush).
func (d *Device) run(op uint8, lba uint64, xs ...extent) error {
	if err := d.settle(); err != nil {
		return err
	}
	err := d.transfer(op, lba, xs)
	for err == nil && d.inflight > 0 {
		err = d.reap()
	}
	if err == nil {
		d.io.ack(d.r)
		err = d.ioErr
	}
	d.ioErr = nil // this operation's: returned, or superseded by err
	return err
}

// drain waits for the reads and writes started asynchronously and, if
// flushes, for the flushes FlushAsync started; it moves the first error
// status of the reads and writes to errs (reap keeps a flush's there
// too). A timeout or protocol violation while waiting resets the
// controller, which drops every command in flight (see lost), so drain
// ends even if the reinitialisation fails.
func (d *Device) drain(flushes bool) {
	for d.inflight > 0 && (flushes || d.inflight > d.flushing) {
		rw := d.inflight > d.flushing
		if err := d.reap(); err != nil {
			d.errs.Lost(err, rw)
		}
	}
	if d.broken == nil { // else the CQ is the one of before a failed reset
		d.io.ack(d.r)
	}
	d.errs.Keep(d.ioErr)
	d.ioErr = nil
}

// settle drains every command, the flushes FlushAsync started included
// (see drain), and reinitialises a controller a failure or Shutdown left
// broken.
func (d *Device) settle() error {
	d.drain(true)
	if d.broken != nil {
		return d.restart()
	}
	return nil
}

// transfer submits the commands of a transfer (see run) and rings the SQ
// tail doorbell, reaping completions while no slot or SQ entry is free.
// It returns when the last command is submitted, or an error status
// stopped it (ioErr), or with the error of a timeout or protocol violation
// (the controller was reset: nothing is in flight). It does not wait for
// the commands it submitted. The commands split xs at multiples of reqLen
// bytes; each must be describable by PRP entries (prpFit), as that of a
// single dword-aligned extent always is. transfer consumes xs (it changes
// its elements).
func (d *Device) transfer(op uint8, lba uint64, xs []extent) error {
	q := d.io
	n := 0
	for _, x := range xs {
		n += x.n
	}
	cmds := max(1, (n+d.reqLen-1)/d.reqLen)
	for next := 0; next < cmds && d.ioErr == nil; {
		// Completions consumed so far are returned to the controller
		// before their slots are reused: a CQ holds at most size-1
		// entries, in flight or unacknowledged.
		q.ack(d.r)
		submitted := false
		for next < cmds && len(d.free) > 0 && !q.full() {
			pos := next * d.reqLen
			l := min(n-pos, d.reqLen)
			d.submit(op, lba+uint64(pos>>d.lbaShift), xs, l, false)
			xs = advance(xs, l)
			next++
			submitted = true
		}
		if submitted {
			q.ring(d.r)
		}
		if next == cmds {
			break
		}
		if d.inflight == 0 {
			return d.abort(fmt.Errorf("%w: every command completed but the SQ head (%d) lags the tail (%d)", ErrProtocol, q.head, q.tail))
		}
		if err := d.reap(); err != nil {
			return err
		}
	}
	return nil
}

// reap waits for one I/O completion, frees its slot and records an error
// status in ioErr, or in errs for a flush FlushAsync started. While
// the CQ is empty it calls the idle hook, with the lock released. A
// timeout (Options.Timeout without a completion), a fatal or vanished
// controller, or a protocol violation resets the controller (every
// command in flight is dropped) and is returned.
func (d *Device) reap() error {
	q := d.io
	last := d.opt.Now()
	for empty := 1; ; empty++ {
		c, ok, err := q.pop()
		if err != nil {
			return d.abort(err)
		}
		if !ok {
			q.ack(d.r)
			if empty%cfsPollPeriod == 0 {
				if err := d.withCSTS(errPolling); err != errPolling {
					return d.abort(fmt.Errorf("nvme: %s: %w", d.describe(d.busySlot()), err))
				}
			}
			if d.opt.Now()-last > d.opt.Timeout {
				d.stats.Timeouts++
				return d.abort(d.withCSTS(fmt.Errorf("%w after %v (%s)", ErrTimeout, d.opt.Timeout, d.describe(d.busySlot()))))
			}
			if idle := d.idle; idle != nil {
				d.mu.Unlock()
				idle()
				d.mu.Lock()
			}
			continue
		}
		s := int(c.cid & cidSlotMask)
		if s >= len(d.slots) || !d.slots[s].busy || d.slots[s].gen != c.cid>>cidSlotBits {
			return d.abort(fmt.Errorf("%w: completion for command ID %#x, which is not in flight", ErrProtocol, c.cid))
		}
		d.inflight--
		d.slots[s].busy = false
		d.free = append(d.free, s)
		if d.slots[s].bg {
			d.flushing--
			if c.status != 0 {
				d.stats.Errors++
				d.errs.KeepFlush(&StatusError{Cmd: d.describe(s), Field: c.status})
			}
			return nil
		}
		if c.status != 0 && d.ioErr == nil {
			d.stats.Errors++
			d.ioErr = &StatusError{Cmd: d.describe(s), Field: c.status}
		}
		return nil
	}
}

// SetIdle makes waits for the controller call f between polls, with the
// device's lock released (snapshot.Idler): a live save runs the guest
// there. f must not use the device. nil stops it.
func (d *Device) SetIdle(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.idle = f
}

// WriteAsync starts writing p at off and returns while the controller
// works: the caller hashes or fills another buffer meanwhile (the snapshot
// store's pipelined writes, snapshot.AsyncWriter). p must not change until
// Sync returns. It waits only while every slot or SQ entry is taken. A
// buffer the controller cannot reach directly is written synchronously
// through the bounce buffer instead.
//
// Each error is reported once: one of an earlier write that is already
// known is returned here, without starting p; this write's own failures
// to start (a timeout or protocol violation) are returned here; the rest
// are returned by Sync.
func (d *Device) WriteAsync(p []byte, off int64) error {
	if err := snapshot.CheckRequest(d.SectorSize(), d.size, len(p), off); err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	if len(p) == 0 {
		return nil
	}
	pa, ok := d.phys(p)
	if !ok {
		_, err := d.WriteAt(p, off)
		return err
	}
	return d.writeAsync(off, extent{pa, len(p)})
}

// WriteVAsync starts writing the concatenation of segs at off, as WriteAsync
// does (off and the total length aligned as for WriteAt; no segment may change
// until Sync; errors reported once, as WriteAsync). started is false, with a
// nil error, when the segments cannot be described by PRP entries (below):
// nothing was started, and the caller writes a copy instead. Otherwise
// started is true and err is as WriteAsync's.
//
// Each segment must have a physical address (Options.Phys); segments that
// are physically adjacent are joined into one extent. The data of each
// command (the transfer split at multiples of the maximum transfer size,
// Identity.MaxTransfer) must be PRP1 then whole memory pages (Base 2.0
// "Physical Region Page Entry and List"): its first extent starts
// dword-aligned, every other one on a page boundary, and every extent but
// its last ends on a page boundary.
func (d *Device) WriteVAsync(segs [][]byte, off int64) (started bool, err error) {
	xs, n, ok, err := d.segments(segs, off)
	if !ok || err != nil || n == 0 {
		return ok, err
	}
	return true, d.writeAsync(off, xs...)
}

// ReadV reads the bytes at off into the concatenation of segs, in place
// (snapshot.VectorReader), the segments described as for WriteVAsync: a
// restore reads a block's partial sectors and its guest pages in one
// transfer. done is false, with nothing read, when the segments cannot be
// described by PRP entries.
func (d *Device) ReadV(segs [][]byte, off int64) (done bool, err error) {
	xs, n, ok, err := d.segments(segs, off)
	if !ok || err != nil || n == 0 {
		return ok, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// As rw: writes WriteAsync started complete first.
	if err := d.settle(); err != nil {
		return true, err
	}
	if err := d.run(ioRead, uint64(off)>>d.lbaShift, xs...); err != nil {
		return true, err
	}
	d.count(ioRead, n)
	return true, nil
}

// segments returns the physical extents of segs and their length n,
// checked as a request at off; ok is false, with no error, when PRP
// entries cannot describe them (WriteVAsync), and true for n = 0.
func (d *Device) segments(segs [][]byte, off int64) (xs []extent, n int, ok bool, err error) {
	for _, s := range segs {
		n += len(s)
	}
	if err := snapshot.CheckRequest(d.SectorSize(), d.size, n, off); err != nil {
		return nil, 0, false, fmt.Errorf("nvme: %w", err)
	}
	if n == 0 {
		return nil, 0, true, nil
	}
	xs, ok = d.extents(segs)
	if !ok || !d.prpFit(xs) {
		return nil, 0, false, nil
	}
	return xs, n, true, nil
}

// extents returns the physical extents of segs, without empty segments
// and with physically adjacent ones joined, or false if a segment has no
// physical address.
func (d *Device) extents(segs [][]byte) ([]extent, bool) {
	if d.opt.Phys == nil {
		return nil, false
	}
	var xs []extent
	for _, s := range segs {
		if len(s) == 0 {
			continue
		}
		pa, ok := d.opt.Phys(s)
		if !ok {
			return nil, false
		}
		if k := len(xs) - 1; k >= 0 && xs[k].pa+uint64(xs[k].n) == pa {
			xs[k].n += len(s)
			continue
		}
		xs = append(xs, extent{pa, len(s)})
	}
	return xs, true
}

// prpFit reports whether every command of a transfer of xs (split at
// multiples of reqLen bytes, as transfer does) can be described by PRP
// entries (Base 2.0 "Physical Region Page Entry and List"): PRP1 at a
// dword-aligned offset, then whole memory pages, one list page of them.
// It walks the pieces of xs that each command gets: a command's first
// piece starts dword-aligned, every other one on a page boundary, and
// every one but its last ends on a page boundary.
func (d *Device) prpFit(xs []extent) bool {
	n := 0
	for _, x := range xs {
		n += x.n
	}
	pos, pages := 0, 0 // pages: memory pages of the current command
	for _, x := range xs {
		for pa, rest := x.pa, x.n; rest > 0; {
			l := min(rest, d.reqLen-pos%d.reqLen)
			first := pos%d.reqLen == 0
			last := (pos+l)%d.reqLen == 0 || pos+l == n
			end := pa + uint64(l)
			switch {
			case first && pa%prpAlign != 0,
				!first && pa&pageMask != 0,
				!last && end&pageMask != 0:
				return false
			}
			if first {
				pages = 0
			}
			pages += int((end-1)>>pageShift - pa>>pageShift + 1)
			// Pages after the first need one list entry each; with the
			// rules above and reqLen <= maxPRPData they always fit.
			if pages-1 > prpPerPage {
				return false
			}
			pa, rest, pos = end, rest-l, pos+l
		}
	}
	return true
}

// ReadVAsync starts reading the bytes at off into the concatenation of
// segs and may return before they are there (snapshot.AsyncReader): they
// are after Sync returns nil. The segments are described as for ReadV
// (done false, nothing started: PRP entries cannot describe them); errors
// are reported once, as for WriteAsync.
func (d *Device) ReadVAsync(segs [][]byte, off int64) (started bool, err error) {
	xs, n, ok, err := d.segments(segs, off)
	if !ok || err != nil || n == 0 {
		return ok, err
	}
	return true, d.startAsync(ioRead, off, xs...)
}

// writeAsync starts writing xs at off (see WriteAsync).
func (d *Device) writeAsync(off int64, xs ...extent) error {
	return d.startAsync(ioWrite, off, xs...)
}

// startAsync starts the transfer op of xs at off without waiting for it
// (WriteAsync, ReadVAsync): Sync waits.
func (d *Device) startAsync(op uint8, off int64, xs ...extent) error {
	n := 0
	for _, x := range xs {
		n += x.n
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.errs.Keep(d.ioErr)
	d.ioErr = nil
	if err := d.ready(false); err != nil {
		return err
	}
	if err := d.transfer(op, uint64(off)>>d.lbaShift, xs); err != nil {
		return err
	}
	d.count(op, n)
	return nil
}

// Sync waits for every read and write started asynchronously (WriteAsync,
// WriteVAsync, ReadVAsync), not for the flushes FlushAsync started, and
// returns the first error among them, else that of a failed flush
// FlushAsync started; each once (a flush's error that comes with a
// write's is dropped: the Sync failed anyway).
func (d *Device) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drain(false)
	return d.errs.TakeAll()
}

// submit fills one I/O command for the first n bytes of xs into the SQ;
// the caller rings the doorbell. bg marks a flush FlushAsync started.
func (d *Device) submit(op uint8, lba uint64, xs []extent, n int, bg bool) {
	s := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	sl := &d.slots[s]
	sl.busy, sl.bg, sl.op, sl.lba, sl.n = true, bg, op, lba, n
	sl.gen = (sl.gen + 1) & (1<<(16-cidSlotBits) - 1)
	cid := sl.gen<<cidSlotBits | uint16(s)
	d.inflight++
	if bg {
		d.flushing++
	}
	e := d.io.next()
	le := binary.LittleEndian
	le.PutUint32(e[sqeCDW0:], uint32(op)|uint32(cid)<<sqeCIDShift)
	le.PutUint32(e[sqeNSID:], d.opt.Namespace)
	if n > 0 {
		prp1, prp2 := d.prps(s, xs, n)
		le.PutUint64(e[sqePRP1:], prp1)
		le.PutUint64(e[sqePRP2:], prp2)
		le.PutUint64(e[sqeCDW10:], lba) // CDW10-11: SLBA
		le.PutUint32(e[sqeCDW12:], uint32(n>>d.lbaShift-1))
	}
	d.stats.Commands++
}

// prps describes the first n bytes of xs (Base 2.0 "Physical Region Page
// Entry and List"; prpFit holds): PRP1 is the first extent's address,
// followed by one entry per further memory page, those of the first
// extent after its first page, then every page of the next extents. PRP2
// is unused without further pages, the page itself if there is one, else
// a PRP list of them in slot s's page.
func (d *Device) prps(s int, xs []extent, n int) (prp1, prp2 uint64) {
	list := d.prp[s*pageSize : (s+1)*pageSize]
	entries := 0
	for i, rest := 0, n; rest > 0; i++ {
		x := xs[i]
		l := min(x.n, rest)
		page := x.pa &^ pageMask
		if i == 0 {
			page += pageSize // PRP1's page
		}
		for ; page < x.pa+uint64(l); page += pageSize {
			if entries == 0 {
				prp2 = page
			}
			binary.LittleEndian.PutUint64(list[prpEntrySize*entries:], page)
			entries++
		}
		rest -= l
	}
	if entries > 1 {
		prp2 = d.prpPA + uint64(s*pageSize)
	}
	return xs[0].pa, prp2
}

// advance returns xs after its first n bytes, cutting its first extent
// there if need be.
func advance(xs []extent, n int) []extent {
	for n > 0 && n >= xs[0].n {
		n -= xs[0].n
		xs = xs[1:]
	}
	if n > 0 {
		xs[0].pa += uint64(n)
		xs[0].n -= n
	}
	return xs
}

func (d *Device) busySlot() int {
	for i := range d.slots {
		if d.slots[i].busy {
			return i
		}
	}
	return -1
}

func (d *Device) describe(s int) string {
	if s < 0 {
		return "no command"
	}
	sl := &d.slots[s]
	switch sl.op {
	case ioFlush:
		return "flush"
	case ioRead, ioWrite:
		op := "read"
		if sl.op == ioWrite {
			op = "write"
		}
		return fmt.Sprintf("%s of LBAs %d-%d", op, sl.lba, sl.lba+uint64(sl.n>>d.lbaShift)-1)
	}
	return fmt.Sprintf("opcode %#x", sl.op)
}

// abort resets and reinitialises the controller after a timeout or
// protocol violation and returns err (joined with any reinit error).
func (d *Device) abort(err error) error {
	d.stats.Errors++
	if errors.Is(err, ErrProtocol) {
		d.stats.ProtocolErrors++
	}
	if rerr := d.restart(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// forget drops every command in flight: all slots free.
func (d *Device) forget() {
	d.inflight, d.flushing = 0, 0
	d.free = d.free[:0]
	for i := len(d.slots) - 1; i >= 0; i-- {
		d.slots[i].busy = false
		d.free = append(d.free, i)
	}
}

// ready begins an operation started asynchronously: it returns the error
// kept for this call to report (a flush's for FlushAsync, else a read's
// or write's: blkio.AsyncErrors), else restarts a device a failure left
// broken.
func (d *Device) ready(flush bool) error {
	var err error
	if flush {
		err = d.errs.TakeFlush()
	} else {
		err = d.errs.Take()
	}
	if err == nil && d.broken != nil {
		err = d.restart()
	}
	return err
}

func (d *Device) restart() error {
	d.stats.Resets++
	// Whatever start gets to, no command of before the reset is in flight
	// any more: a failed reinitialisation (a controller that does not
	// stop, or does not come back) must not leave them counted, or a wait
	// for them would never end. Nothing is submitted while the controller
	// is broken.
	d.forget()
	if err := d.start(false); err != nil {
		d.quiesce(err)
		d.broken = fmt.Errorf("nvme: reinitialisation failed: %w", err)
		return d.broken
	}
	d.broken = nil
	return nil
}
