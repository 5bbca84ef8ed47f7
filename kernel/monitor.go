package kernel

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"tamavisor/kernel/event"
	"tamavisor/svm"
)

// EscapeByte, typed on the console (Ctrl-]), switches from the guest's
// console to the hypervisor monitor (docs/monitor.md).
const EscapeByte = 0x1d

// Console line editing keys.
const (
	keyBackspace = 0x08
	keyDelete    = 0x7f
	keyCR        = '\r'
	keyLF        = '\n'
	// keyKillLine (Ctrl-U) discards the line typed so far. The host tool
	// sends it before every command, so that bytes of an earlier command
	// that never reached its end (its client timed out and QEMU dropped
	// the rest with the connection) cannot merge with the new one.
	keyKillLine = 0x15
	maxLine     = 256
	inputQueue  = 4096 // console bytes held for the guest UART
)

// pauseReason says why the run loop left the guest (bits: several can be
// pending at once).
type pauseReason int

const (
	pauseNone      pauseReason = 0
	pauseMonitor   pauseReason = 1 << 0 // escape typed on the console
	pauseHypercall pauseReason = 1 << 1 // SNAPSHOT hypercall
	pauseControl   pauseReason = 1 << 2 // pause from the control channel
)

// service runs between exits when a pause was requested or the service
// interval passed: console and control-channel input, the monitor, and
// snapshot requests. The guest is paused at an exit boundary meanwhile: no
// I/O is half done.
func (vm *VM) service() {
	p := vm.plat
	vm.nextService = p.TSC() + p.ServiceInterval
	// A SNAPSHOT hypercall completes first: its exit is the one that was
	// just handled, and nothing else may run in between.
	if vm.pause&pauseHypercall != 0 {
		vm.pause &^= pauseHypercall
		vm.snapshotHypercall()
	}
	vm.pollConsole()
	vm.pollControl()
	if vm.pause&pauseMonitor != 0 && vm.stop == nil {
		vm.pause &^= pauseMonitor
		vm.monitor()
	}
	vm.pausedByControl()
}

// pausedByControl holds the guest while the control channel's pause is
// on: the console (and its monitor escape) and the control channel are
// still served, between Idle calls, until continue or quit.
func (vm *VM) pausedByControl() {
	if vm.pause&pauseControl != 0 {
		vm.live.finish() // a save in progress does not wait for continue
	}
	for vm.pause&pauseControl != 0 && vm.stop == nil {
		vm.pollConsole()
		vm.pollControl()
		if vm.pause&pauseMonitor != 0 && vm.stop == nil {
			vm.pause &^= pauseMonitor
			vm.monitor()
		}
		if vm.pause&pauseControl != 0 && (vm.plat.Idle == nil || !vm.plat.Idle()) {
			return // no more input can come (tests): run on
		}
	}
}

// pollConsole moves console input into the guest's input queue, watching
// for the monitor escape. Once the escape is seen, it reads nothing more
// until the monitor has run: what is typed after the escape is for the
// monitor, not for the guest.
func (vm *VM) pollConsole() {
	in := vm.plat.Input
	if in == nil || vm.pause&pauseMonitor != 0 {
		return
	}
	for {
		b, ok := in()
		if !ok {
			return
		}
		if b == EscapeByte {
			vm.pause |= pauseMonitor
			return
		}
		if len(vm.input) < inputQueue {
			vm.input = append(vm.input, b)
		} else {
			vm.inputDropped++
		}
	}
}

// pollControl reads command lines from the control channel (a second
// serial port on QEMU) and answers each (see controlLine).
func (vm *VM) pollControl() {
	in := vm.plat.ControlIn
	if in == nil {
		return
	}
	for vm.stop == nil {
		b, ok := in()
		if !ok {
			return
		}
		switch b {
		case keyKillLine:
			vm.ctlLine = vm.ctlLine[:0]
		case keyCR, keyLF:
			line := string(vm.ctlLine)
			vm.ctlLine = vm.ctlLine[:0]
			vm.controlLine(line)
		default:
			if len(vm.ctlLine) < maxLine {
				vm.ctlLine = append(vm.ctlLine, b)
			}
		}
	}
}

// controlLine runs one control-channel command line. Its answer is the
// command's output and a final line "ok" or "error: <reason>". A line
// ending in a tag " #<tag>" (the host tool sends one) is answered as
// "begin #<tag>", the output, then "ok #<tag>" or "error #<tag>: <reason>",
// so a client can tell its own answer from a late answer to an earlier
// client that gave up.
func (vm *VM) controlLine(line string) {
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	out := vm.plat.ControlOut
	tag := ""
	if i := strings.LastIndex(line, " #"); i >= 0 && !strings.ContainsAny(line[i+2:], " \t") {
		line, tag = strings.TrimSpace(line[:i]), " #"+line[i+2:]
		fmt.Fprintf(out, "begin%s\n", tag)
	}
	f := strings.Fields(line)
	word := f[0]
	f[0] = expand(word)
	var err error
	switch {
	case f[0] == "pause" && len(f) == 1:
		vm.pause |= pauseControl
		fmt.Fprintf(out, "guest paused (continue resumes it)\n")
	case (f[0] == "continue" || f[0] == "c") && len(f) == 1:
		if vm.pause&pauseControl == 0 {
			err = errors.New("the guest is not paused from the control channel")
		}
		vm.pause &^= pauseControl
	case f[0] == "input":
		err = vm.controlInput(strings.TrimPrefix(line[len(word):], " "), out)
	case f[0] == "snapshot" && len(f) == 1 && vm.liveCapable() && vm.pause&pauseControl == 0:
		// The guest runs on while it is saved; the answer comes when
		// the snapshot is on disk.
		err = vm.startLive(out, false, func(err error) { answerControl(out, tag, err) })
		if err == nil {
			return
		}
	default:
		_, err = vm.command(line, out)
	}
	answerControl(out, tag, err)
}

// answerControl ends the answer to a control-channel command.
func answerControl(out io.Writer, tag string, err error) {
	if err != nil {
		fmt.Fprintf(out, "error%s: %v\n", tag, err)
	} else {
		fmt.Fprintf(out, "ok%s\n", tag)
	}
}

// controlInput queues text for the guest's console UART as if typed on
// the console. Escapes: \n, \r, \t, \\, \xHH.
func (vm *VM) controlInput(text string, out io.Writer) error {
	b, err := unescape(text)
	if err != nil {
		return err
	}
	if len(vm.input)+len(b) > inputQueue {
		return fmt.Errorf("the guest's input queue is full (%d bytes waiting)", len(vm.input))
	}
	vm.input = append(vm.input, b...)
	fmt.Fprintf(out, "%d bytes queued for the guest console\n", len(b))
	return nil
}

// unescape decodes the escapes of the input command.
func unescape(s string) ([]byte, error) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		if i+1 >= len(s) {
			return nil, errors.New("a lone \\ at the end of the input")
		}
		i++
		switch s[i] {
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case '\\':
			b = append(b, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, errors.New("\\x needs two hex digits")
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("\\x%s: not two hex digits", s[i+1:i+3])
			}
			b = append(b, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("unknown escape \\%c (use \\n \\r \\t \\\\ \\xHH)", s[i])
		}
	}
	return b, nil
}

// command runs one monitor or control-channel command; resume is true when
// the guest should run again (continue).
func (vm *VM) command(line string, out io.Writer) (resume bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false, nil
	}
	f[0] = expand(f[0])
	switch f[0] {
	case "snapshot", "s":
		_, err := vm.snapshot(out, false)
		return false, err
	case "info", "i":
		vm.info(out)
	case "continue", "c":
		return true, nil
	case "quit", "q":
		vm.stop = &Stop{Kind: StopQuit, Class: ClassQuit, Reason: "quit from the " + vm.commandSource(out)}
		return true, nil
	case "help", "h", "?":
		fmt.Fprintf(out, "commands: snapshot (save the VM to disk), info, continue, quit, help\n")
		fmt.Fprintf(out, "control channel only: pause, continue, input TEXT (typed on the guest console; \\n for Enter)\n")
	case "pause", "input":
		return false, fmt.Errorf("%s is for the control channel (go run ./cmd/tamavisor %s); the monitor has already paused the guest", f[0], f[0])
	default:
		return false, fmt.Errorf("unknown command %q (try help)", f[0])
	}
	return false, nil
}

// commandSource names where a command's output goes: the monitor or the
// control channel.
func (vm *VM) commandSource(out io.Writer) string {
	if out == vm.plat.ControlOut && out != nil {
		return "control channel"
	}
	return "monitor"
}

func (vm *VM) info(out io.Writer) {
	s := &vm.VCPU.vmcb.State
	fmt.Fprintf(out, "vm %s: %d KiB RAM, %d exits, RIP %#x, CR0 %#x, EFER %#x\n",
		vm.Name, vm.Mem.Size>>10, vm.VCPU.Exits, s.RIP, s.CR0, s.EFER&^uint64(1<<12))
	r := &vm.VCPU.Regs
	fmt.Fprintf(out, "id %s, CPL %d, RFLAGS %#x, CR2 %#x, CR3 %#x, CR4 %#x, DR6 %#x, DR7 %#x, XCR0 %#x\n",
		UUID(vm.ID), s.CPL, s.RFLAGS, s.CR2, s.CR3, s.CR4, s.DR6, s.DR7, vm.VCPU.xcr0)
	fmt.Fprintf(out, "RAX %#x RBX %#x RCX %#x RDX %#x RSI %#x RDI %#x RBP %#x RSP %#x\n",
		s.RAX, r.RBX, r.RCX, r.RDX, r.RSI, r.RDI, r.RBP, s.RSP)
	fmt.Fprintf(out, "R8 %#x R9 %#x R10 %#x R11 %#x R12 %#x R13 %#x R14 %#x R15 %#x\n",
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15)
	for _, sg := range []struct {
		name string
		seg  *svm.Segment
	}{{"CS", &s.CS}, {"SS", &s.SS}, {"DS", &s.DS}, {"ES", &s.ES}, {"FS", &s.FS}, {"GS", &s.GS},
		{"TR", &s.TR}, {"LDTR", &s.LDTR}, {"GDTR", &s.GDTR}, {"IDTR", &s.IDTR}} {
		fmt.Fprintf(out, "%s %#x base %#x limit %#x attr %#x; ", sg.name, sg.seg.Selector, sg.seg.Base, sg.seg.Limit, sg.seg.Attrib)
	}
	fmt.Fprintln(out)
	if pc := vm.PC; pc != nil {
		v, c := vm.VCPU, &vm.VCPU.vmcb.Control
		next := "none"
		if n := vm.clock.Next(); n != event.Never {
			next = fmt.Sprintf("at %d ns", n)
		}
		fmt.Fprintf(out, "interrupts: IF %d, shadow %d, halted %v, EVENTINJ %#x, V_INTR %#x, deferred %#x, %d injected; VM time %d ns, next event %s\n",
			s.RFLAGS>>9&1, c.InterruptShadow&svm.InterruptShadowMask, v.halted, c.EventInj, c.VIntr, v.deferred,
			vm.IRQsInjected, vm.now(), next)
		fmt.Fprintf(out, "local APIC: %s\n", pc.LAPIC.Summary())
	}
	if vm.plat.Store == nil {
		fmt.Fprintf(out, "snapshot disk: none\n")
	} else {
		fmt.Fprintf(out, "snapshot disk: %d MiB per slot\n", vm.plat.Store.SlotSize()>>20)
	}
}

// monitor runs the tamavisor> prompt on the console until continue or quit.
func (vm *VM) monitor() {
	con := vm.hostOut()
	vm.live.finish() // a save in progress does not wait for the monitor
	fmt.Fprintf(con, "\ntamavisor: monitor, guest paused (snapshot, info, continue, quit, help)\n")
	for vm.stop == nil {
		fmt.Fprintf(con, "tamavisor> ")
		line, ok := vm.readLine()
		if !ok {
			fmt.Fprintf(con, "\ntamavisor: no console input, back to the guest\n")
			return
		}
		resume, err := vm.command(line, con)
		if err != nil {
			fmt.Fprintf(con, "error: %v\n", err)
		}
		if resume {
			break
		}
	}
	if vm.stop == nil {
		fmt.Fprintf(con, "tamavisor: back to the guest console\n")
	}
}

// readLine reads an edited line from the console, echoing it. ok is false
// when the platform says no input will come (Idle returned false).
func (vm *VM) readLine() (string, bool) {
	con := vm.hostOut()
	var line []byte
	for {
		b, ok := vm.plat.Input()
		if !ok {
			// The control channel stays live while the monitor waits.
			vm.pollControl()
			if vm.stop != nil {
				return "", true
			}
			if vm.plat.Idle == nil || !vm.plat.Idle() {
				return "", false
			}
			continue
		}
		switch b {
		case keyKillLine:
			for range line {
				con.Write([]byte("\b \b"))
			}
			line = line[:0]
		case keyCR, keyLF:
			con.Write([]byte{'\n'})
			return strings.TrimSpace(string(line)), true
		case keyBackspace, keyDelete:
			if len(line) > 0 {
				line = line[:len(line)-1]
				con.Write([]byte("\b \b"))
			}
		default:
			if b >= 0x20 && b < 0x7f && len(line) < maxLine {
				line = append(line, b)
				con.Write([]byte{b})
			}
		}
	}
}

// commandNames are the monitor's commands; any unique prefix of one
// names it (s, sn, snap..., i, c, q, h).
var commandNames = []string{"snapshot", "info", "continue", "quit", "help", "pause", "input"}

// expand returns the command a word abbreviates, or the word itself.
func expand(word string) string {
	match := ""
	for _, c := range commandNames {
		if strings.HasPrefix(c, word) {
			if match != "" {
				return word // ambiguous
			}
			match = c
		}
	}
	if match == "" {
		return word
	}
	return match
}
