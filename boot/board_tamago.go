//go:build tamago && amd64

package boot

import (
	"runtime/goos"
	_ "unsafe"

	"github.com/usbarmory/tamago/amd64"
	"github.com/usbarmory/tamago/dma"
	"github.com/usbarmory/tamago/soc/intel/uart"

	"tamavisor/internal/x86"
)

// Serial ports: COM1 is the console, COM2 the control channel.
const (
	COM1 = 0x3f8
	COM2 = 0x2f8
	// lsrAbsent is what an unpopulated port's line status reads.
	lsrAbsent = 0xff
	uartLSR   = 5
	uartFCR   = 2    // FIFO control register (PC16550D)
	fcrEnable = 0x01 // enable the FIFOs
	fcrRX14   = 0xc0 // receive trigger level: 14 bytes
)

var (
	// CPU is the bootstrap processor. tamavisor runs on it alone.
	CPU = &amd64.CPU{TimerMultiplier: 1}

	// UART0 is the console.
	UART0 = &uart.UART{Index: 1, Base: COM1}

	// UART1 is the control channel (a second QEMU -serial).
	UART1 = &uart.UART{Index: 2, Base: COM2}

	// bootUnix is the wall time at boot from the CMOS RTC, bootNano the
	// monotonic time it was read at.
	bootUnix, bootNano int64

	// TSCHz is the calibrated TSC frequency (0 if calibration failed).
	TSCHz uint64
	// PITTSCHz is the TSC frequency measured against the PIT at boot (0
	// if the PIT did not count); TSCHz differs when SetTSCHz took an ACPI
	// timer's measurement instead.
	PITTSCHz uint64
)

//go:linkname ramSize runtime/goos.RamSize
var ramSize uint64 = RuntimeSize

//go:linkname printk runtime/goos.Printk
func printk(c byte) {
	if c == '\n' {
		UART0.Tx('\r')
	}
	UART0.Tx(c)
}

//go:linkname nanotime runtime/goos.Nanotime
func nanotime() int64 {
	return CPU.GetTime()
}

// hwinit1 runs early in runtime setup: CPU features, console, then the
// TSC calibration that time.Now and time.Sleep depend on.
//
//go:linkname hwinit1 runtime/goos.Hwinit1
func hwinit1() {
	CPU.Init()
	UART0.Init()
	calibrateTSC()
	goos.Exit = func(code int32) { PowerOff(int(code)) }
}

func init() {
	CPU.EnableExceptions()
	dma.Init(DMAStart, DMASize)
	readRTC()
}

func cmos(reg uint8) uint8 {
	x86.Out8(CMOSIndex, cmosNMIDisable|reg)
	return x86.In8(CMOSData)
}

// readRTC reads the CMOS clock once, outside an update cycle.
func readRTC() {
	for i := 0; i < 1000 && cmos(RTCStatusA)&RTCUpdating != 0; i++ {
	}
	if t, ok := RTCTime(cmos(RTCSeconds), cmos(RTCMinutes), cmos(RTCHours), cmos(RTCDay),
		cmos(RTCMonth), cmos(RTCYear), cmos(RTCCentury)); ok {
		bootUnix, bootNano = t*1e9, nanotime()
	}
}

// WallNow returns the wall time in Unix nanoseconds: the RTC at boot plus
// the calibrated TSC since (0 if the RTC was unreadable).
func WallNow() int64 {
	if bootUnix == 0 {
		return 0
	}
	return bootUnix + nanotime() - bootNano
}

// ControlPort returns the control channel, or nil when COM2 is absent or
// is the console (SPCR named it).
//
// Its receive FIFO is enabled: without it the UART holds one byte, and
// the emulator hands over the next only after that one is read, so a
// command line took one poll per byte to arrive. Enabling the FIFO
// empties it; a client writes only after tamavisor announced the channel.
func ControlPort() *ControlUART {
	if UART0.Base == COM2 || x86.In8(COM2+uartLSR) == lsrAbsent {
		return nil
	}
	UART1.Init()
	c := &ControlUART{UART: UART1}
	for i := 0; i < maxEarlyBytes; i++ { // bytes received before the FIFO was on
		b, ok := UART1.Rx()
		if !ok {
			break
		}
		c.early = append(c.early, b)
	}
	x86.Out8(COM2+uartFCR, fcrEnable|fcrRX14)
	return c
}

// maxEarlyBytes bounds the bytes kept from before the FIFO was enabled.
const maxEarlyBytes = 16

// ControlUART is the control channel's UART.
type ControlUART struct {
	*uart.UART
	early []byte
}

// Rx returns a received byte, if any.
func (c *ControlUART) Rx() (byte, bool) {
	if len(c.early) > 0 {
		b := c.early[0]
		c.early = c.early[1:]
		return b, true
	}
	return c.UART.Rx()
}

// UARTWriter writes to a UART, LF as CR LF.
type UARTWriter struct{ U *uart.UART }

func (w UARTWriter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' {
			w.U.Tx('\r')
		}
		w.U.Tx(c)
	}
	return len(p), nil
}

func pitCounter() uint16 {
	x86.Out8(PITCommand, PITSelect0|PITLatch)
	lo := x86.In8(PITChannel0)
	hi := x86.In8(PITChannel0)
	return uint16(hi)<<8 | uint16(lo)
}

// calibrateTSC starts PIT channel 0 free-running (mode 2, reload 65536) and
// measures the TSC against it for 50 ms, then rescales the clock so that
// nanotime continues from where the uncalibrated clock was.
func calibrateTSC() {
	x86.Out8(PITCommand, PITSelect0|PITAccessLoHi|PITMode2|PITBinary)
	x86.Out8(PITChannel0, 0)
	x86.Out8(PITChannel0, 0)
	PITTSCHz = Calibrate(pitCounter, x86.RDTSC, PITFreq/calibrationsPerSecond)
	if PITTSCHz == 0 {
		print("boot: PIT does not count, TSC not calibrated yet\n")
		return
	}
	SetTSCHz(PITTSCHz)
}

// PowerOff ends the machine with a status: under QEMU through
// isa-debug-exit (QEMU exits with status*2+1); without that device the
// write is ignored and a triple fault resets the machine (QEMU with
// -no-reboot then exits with status 0).
//
// Functions given to BeforePowerOff run first, newest first.
func PowerOff(status int) {
	for i := len(beforePowerOff) - 1; i >= 0; i-- {
		f := beforePowerOff[i]
		beforePowerOff = beforePowerOff[:i] // each runs once, even if it powers off itself
		f()
	}
	x86.Out32(DebugExitPort, uint32(status))
	for {
		amd64.Fault()
	}
}

// beforePowerOff are the functions PowerOff runs first.
var beforePowerOff []func()

// BeforePowerOff registers f to run when the machine powers off, such as
// a disk's shutdown notification.
func BeforePowerOff(f func()) { beforePowerOff = append(beforePowerOff, f) }

// ConsoleRead returns a byte typed on the console, if any.
func ConsoleRead() (byte, bool) {
	return UART0.Rx()
}
