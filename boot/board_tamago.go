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

// COM1 is the console UART.
const COM1 = 0x3f8

var (
	// CPU is the bootstrap processor. tamavisor runs on it alone.
	CPU = &amd64.CPU{TimerMultiplier: 1}

	// UART0 is the console.
	UART0 = &uart.UART{Index: 1, Base: COM1}

	// TSCHz is the calibrated TSC frequency (0 if calibration failed).
	TSCHz uint64
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
	TSCHz = Calibrate(pitCounter, x86.RDTSC, PITFreq/20)
	if TSCHz == 0 {
		print("boot: PIT does not count, TSC not calibrated: time is wrong\n")
		return
	}
	now := CPU.GetTime()
	CPU.TimerMultiplier = 1e9 / float64(TSCHz)
	CPU.SetTime(now)
}

// RAMEnd returns the end of RAM below 4 GiB as QEMU reports it in CMOS.
func RAMEnd() uint64 {
	read := func(reg uint8) uint8 {
		x86.Out8(CMOSIndex, cmosNMIDisable|reg)
		return x86.In8(CMOSData)
	}
	return LowRAMEnd(read(CMOSExtMemLow), read(CMOSExtMemHigh))
}

// PowerOff ends the machine with a status: under QEMU through
// isa-debug-exit (QEMU exits with status*2+1); without that device the
// write is ignored and a triple fault resets the machine (QEMU with
// -no-reboot then exits with status 0).
func PowerOff(status int) {
	x86.Out32(DebugExitPort, uint32(status))
	for {
		amd64.Fault()
	}
}

// ConsoleRead returns a byte typed on the console, if any.
func ConsoleRead() (byte, bool) {
	return UART0.Rx()
}

// Console writes to the console UART.
type Console struct{}

func (Console) Write(p []byte) (int, error) {
	for _, c := range p {
		printk(c)
	}
	return len(p), nil
}
