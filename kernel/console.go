package kernel

import (
	"io"
	"unicode/utf8"
)

// Guest console output filter.
//
// Guests (UART, debug port, CONSOLE_WRITE) and the hypervisor share one
// console, the operator's terminal. Everything a guest writes goes through a
// GuestConsole, which enforces two rules (docs/guest-abi.md, "Console
// output"):
//
//  1. Terminal controls: only what a line-editing shell needs reaches the
//     terminal. CSI sequences pass if whitelisted (SGR m; erase in line K;
//     erase below J/0J; cursor forward C; cursor back D; status report 5n
//     and 6n). Every other escape sequence (OSC title, hyperlink and
//     clipboard strings, DCS/APC/PM/SOS, cursor addressing and up/down,
//     save/restore cursor, erase screen, modes, reports such as DECRQSS or
//     21t, charset switches, reset) is printed visibly instead: its ESC
//     becomes "^[" and the rest shows as text. C0 controls other than NUL,
//     BEL, BS, HT, LF and CR show in caret notation ("^A", DEL as "^?");
//     bytes that are not UTF-8, C1 controls (U+0080-U+009F) and bidi
//     controls show as "?".
//
//  2. Hypervisor lines: a terminal row must never start with "tamavisor:"
//     or "tamavisor>" written by a guest. When a guest byte would complete
//     such a row start, the filter returns to the row's first column and
//     writes "guest: " then the ten characters, so the row reads
//     "guest: tamavisor: ...". This holds however the bytes arrive (one per
//     write, as the UART gives them) and whatever the guest does with
//     carriage returns, backspaces, cursor moves, line wrap and characters
//     of unknown width (see rowModel).
//
// The filter is a byte-at-a-time state machine: O(1) work and no allocation
// per byte, output gathered in a fixed buffer and written at the end of
// each Write. It is not safe for concurrent use: a VM's devices and
// hypercalls use it from the VM's goroutine.
//
// Assumptions about the terminal: UTF-8, at least minTermCols columns wide,
// default tab stops every 8 columns, rows below the cursor blank (output
// only ever goes down), LF shown as CR LF (boot.UARTWriter converts), no
// bidirectional reordering. Text that merely looks like a hypervisor line
// (homoglyphs such as a Cyrillic "а") is not caught; nor is a guest row
// after a hypervisor message the filter did not see, unless the hypervisor
// calls HostBreak before printing.
type GuestConsole struct {
	out io.Writer
	err error // first error from out since the last Write returned

	// Escape sequence parser.
	state parseState
	csi   [maxCSIBytes]byte // parameter and intermediate bytes after ESC [
	ncsi  int

	// UTF-8 decoder: a multi-byte character is held until it is complete.
	u8           [utf8.UTFMax]byte
	nu8          int
	u8need       int  // continuation bytes still expected
	u8min, u8max byte // range of the next continuation byte

	rowModel

	sgr bool // the guest left character attributes set (HostBreak resets them)

	buf  [consoleBufSize]byte
	nbuf int
}

// rowModel is what the filter knows of the terminal row the guest writes
// on. A row is exact while every column is known: the cursor column col
// and the first guardCols cells. It becomes unsure once a character of
// unknown width (any non-ASCII character: 0, 1 or 2 columns) is printed,
// or the cursor reaches minTermCols (the terminal may have wrapped). In an
// unsure row col is a lower bound and hi an upper bound of the cursor
// column; a character may land at the start of a terminal row when col is
// 0 or hi >= minTermCols, and run counts the prefix characters printed in
// order from such a place. Backward moves are refused in unsure rows (the
// filter could not tell which cells they reach); a CR makes the row exact
// again: the filter erases the rest of the row before anything else shows
// on it.
type rowModel struct {
	col    int
	hi     int
	unsure bool
	cells  [guardCols]byte // exact rows: columns 0..guardCols-1, 0 = blank
	run    int             // unsure rows: len of hostPrefix printed from a possible row start
	tail   bool            // the row may hold text at or right of the cursor
	erase  bool            // erase the row before the next thing that shows on it
	dirty  bool            // the guest wrote on this row since the last LF (MidLine)
}

const (
	// hostPrefix followed by ':' or '>' starts the hypervisor's lines
	// (main.go logf, the monitor's messages and its "tamavisor> " prompt).
	hostPrefix = "tamavisor"
	// guardCols is the length of a hypervisor line start.
	guardCols = len(hostPrefix) + 1
	// guestMarker starts a row on which a guest wrote a hypervisor line
	// start.
	guestMarker = "guest: "
	// minTermCols is the narrowest terminal assumed: below this column a
	// row cannot have wrapped (busybox and Linux assume 80 columns too).
	minTermCols    = 80
	consoleTabStop = 8
	maxCSIBytes    = 16      // longer CSI sequences are refused
	maxCSIParam    = 9999    // CSI numeric parameters saturate here
	maxConsoleCol  = 1 << 20 // column counts saturate here
	consoleBufSize = 256
)

// Control characters.
const (
	ctlNUL = 0x00
	ctlBEL = 0x07
	ctlBS  = 0x08
	ctlHT  = 0x09
	ctlLF  = 0x0a
	ctlCR  = 0x0d
	ctlESC = 0x1b
	ctlDEL = 0x7f
)

// Sequences the filter writes itself.
const (
	seqEraseLine = "\x1b[K"  // erase from the cursor to the end of the row
	seqResetSGR  = "\x1b[0m" // default character attributes
	refusedESC   = "^["      // shown instead of the ESC of a refused sequence
)

type parseState uint8

const (
	parseGround parseState = iota // text
	parseEsc                      // after ESC
	parseCSI                      // after ESC [, until the final byte
)

// NewGuestConsole returns a filter writing to out (nil discards).
func NewGuestConsole(out io.Writer) *GuestConsole {
	if out == nil {
		out = io.Discard
	}
	return &GuestConsole{out: out}
}

// Write filters p to the console. It consumes all of p and returns the
// console's first write error, if any.
func (c *GuestConsole) Write(p []byte) (int, error) {
	for _, b := range p {
		c.feed(b)
	}
	c.flush()
	err := c.err
	c.err = nil
	return len(p), err
}

// MidLine reports whether the guest's current row holds guest output: a
// hypervisor message printed now would not start at the beginning of a
// row.
func (c *GuestConsole) MidLine() bool { return c.dirty }

// HostBreak prepares the console for a hypervisor message that ends with a
// newline: it resets the character attributes the guest set, ends the
// guest's unfinished row with a newline, and starts the guest's next
// output on a fresh row. A held partial escape sequence or character stays
// held and completes with the guest's next bytes.
func (c *GuestConsole) HostBreak() {
	if c.sgr {
		c.emitString(seqResetSGR)
		c.sgr = false
	}
	if c.dirty {
		c.emit(ctlLF)
	}
	c.rowModel = rowModel{}
	c.flush()
}

// HostWrote tells the filter that the hypervisor wrote a line of its own
// to the console (ending in a newline): the guest's next byte lands at the
// start of a row, and the attributes the guest set are reset so the
// hypervisor's next line is shown plainly. Unlike HostBreak it writes no
// line break: a guest line cut by a hypervisor message stays as it was.
func (c *GuestConsole) HostWrote() {
	if c.sgr {
		c.emitString(seqResetSGR)
		c.sgr = false
	}
	c.rowModel = rowModel{}
	c.flush()
}

// hostWriter is the console as the hypervisor writes to it while a VM
// runs (monitor, snapshot progress): after each complete line it tells the
// VM's guest console filter, so that a guest cannot write a forged
// hypervisor line right after a real one.
type hostWriter struct{ vm *VM }

func (w hostWriter) Write(p []byte) (int, error) {
	n, err := w.vm.plat.Console.Write(p)
	if len(p) > 0 && p[len(p)-1] == '\n' && w.vm.console != nil {
		w.vm.console.HostWrote()
	}
	return n, err
}

// hostOut is the console for the hypervisor's own messages about vm.
func (vm *VM) hostOut() io.Writer { return hostWriter{vm} }

// GuestConsole returns the filter the VM's console output goes through.
func (vm *VM) GuestConsole() *GuestConsole { return vm.console }

// feed runs the escape sequence parser on one byte.
func (c *GuestConsole) feed(b byte) {
	switch c.state {
	case parseEsc:
		c.state = parseGround
		if b == '[' {
			c.state, c.ncsi = parseCSI, 0
			return
		}
		// Only CSI sequences may pass: show this one, b as text.
		c.printString(refusedESC)
	case parseCSI:
		switch {
		case b >= 0x40 && b <= 0x7e: // final byte
			c.state = parseGround
			c.endCSI(b)
			return
		case b >= 0x20 && b <= 0x3f && c.ncsi < len(c.csi): // parameter, intermediate
			c.csi[c.ncsi] = b
			c.ncsi++
			return
		}
		// A control, a non-ASCII byte or too long: show what was held,
		// then b as text.
		c.state = parseGround
		c.refuseCSI()
	}
	c.ground(b)
}

// ground handles a byte outside escape sequences.
func (c *GuestConsole) ground(b byte) {
	if c.u8need > 0 {
		if b >= c.u8min && b <= c.u8max {
			c.u8[c.nu8] = b
			c.nu8++
			c.u8need--
			c.u8min, c.u8max = 0x80, 0xbf
			if c.u8need == 0 {
				c.char()
			}
			return
		}
		c.u8need, c.nu8 = 0, 0
		c.print('?') // truncated character; b starts afresh
	}
	switch {
	case b >= 0x20 && b < ctlDEL:
		c.print(b)
	case b == ctlESC:
		c.state = parseEsc
	case b == ctlLF:
		c.emit(ctlLF)
		c.rowModel = rowModel{}
	case b == ctlCR:
		c.carriageReturn()
	case b == ctlBS:
		if c.unsure {
			c.printString("^H")
			return
		}
		c.emit(ctlBS)
		c.col = max(c.col-1, 0)
		c.tail = true
	case b == ctlHT:
		c.tab()
	case b == ctlNUL || b == ctlBEL:
		c.emit(b) // no effect on the screen
	case b < 0x20 || b == ctlDEL:
		c.print('^')
		c.print(b ^ 0x40)
	default:
		c.startChar(b)
	}
}

// startChar starts a UTF-8 character with lead byte b (RFC 3629: no
// overlong forms, surrogates or values above U+10FFFF).
func (c *GuestConsole) startChar(b byte) {
	need, lo, hi := 0, byte(0x80), byte(0xbf)
	switch {
	case b >= 0xc2 && b <= 0xdf:
		need = 1
	case b == 0xe0:
		need, lo = 2, 0xa0
	case b == 0xed:
		need, hi = 2, 0x9f
	case b >= 0xe1 && b <= 0xef:
		need = 2
	case b == 0xf0:
		need, lo = 3, 0x90
	case b >= 0xf1 && b <= 0xf3:
		need = 3
	case b == 0xf4:
		need, hi = 3, 0x8f
	default: // a continuation byte out of place, 0xC0, 0xC1, 0xF5-0xFF
		c.print('?')
		return
	}
	c.u8[0], c.nu8 = b, 1
	c.u8need, c.u8min, c.u8max = need, lo, hi
}

// char prints the complete UTF-8 character held in u8.
func (c *GuestConsole) char() {
	r, _ := utf8.DecodeRune(c.u8[:c.nu8])
	n := c.nu8
	c.nu8 = 0
	if r <= 0x9f || isBidiControl(r) {
		c.print('?') // C1 controls act like ESC sequences on some terminals
		return
	}
	c.show()
	if !c.unsure {
		run := 0
		if c.col < guardCols {
			// Text at an unsure column must not combine with older
			// cells of the guarded columns: clear them.
			if c.tail {
				c.emitString(seqEraseLine)
			}
			run = c.prefixRun()
		}
		c.toUnsure()
		c.run = run
	}
	c.hi = min(c.hi+2, maxConsoleCol)
	for _, b := range c.u8[:n] {
		c.emit(b)
	}
	// run is unchanged: the character may be invisible (zero width).
}

// isBidiControl reports the Unicode bidirectional formatting characters,
// which can reorder what a terminal shows.
func isBidiControl(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// print shows the ASCII character b, marking the row first if b would
// complete a hypervisor line start.
func (c *GuestConsole) print(b byte) {
	c.show()
	if !c.unsure {
		if c.col < guardCols {
			c.cells[c.col] = b
			if isHostLineStart(&c.cells) {
				c.mark(c.cells)
				return
			}
		}
		c.emit(b)
		c.col++
		if c.col >= minTermCols {
			c.toUnsure()
		}
		return
	}
	rowStart := c.col == 0 || c.hi >= minTermCols
	switch {
	case c.run == len(hostPrefix) && (b == ':' || b == '>'):
		var text [guardCols]byte
		copy(text[:], hostPrefix)
		text[len(hostPrefix)] = b
		c.mark(text)
		return
	case c.run < len(hostPrefix) && b == hostPrefix[c.run] && (c.run > 0 || rowStart):
		c.run++
	case b == hostPrefix[0] && rowStart:
		c.run = 1
	default:
		c.run = 0
	}
	c.emit(b)
	c.col = min(c.col+1, maxConsoleCol)
	c.hi = min(c.hi+1, maxConsoleCol)
}

// isHostLineStart reports whether cells read "tamavisor:" or "tamavisor>".
func isHostLineStart(cells *[guardCols]byte) bool {
	last := cells[len(hostPrefix)]
	return (last == ':' || last == '>') && string(cells[:len(hostPrefix)]) == hostPrefix
}

// prefixRun is how much of hostPrefix an exact row shows from its first
// column up to the cursor (0 if it shows something else).
func (c *GuestConsole) prefixRun() int {
	if c.col > len(hostPrefix) || string(c.cells[:c.col]) != hostPrefix[:c.col] {
		return 0
	}
	return c.col
}

// mark writes text, a hypervisor line start the guest was completing, at
// the start of the current row after guestMarker. The cursor ends after
// it, on a row that is exact again.
func (c *GuestConsole) mark(text [guardCols]byte) {
	c.emit(ctlCR)
	c.emitString(guestMarker)
	for _, b := range text {
		c.emit(b)
	}
	c.rowModel = rowModel{col: len(guestMarker) + guardCols, tail: true, dirty: true}
	n := copy(c.cells[:], guestMarker)
	copy(c.cells[n:], text[:])
}

// toUnsure makes an exact row unsure.
func (c *GuestConsole) toUnsure() {
	c.unsure, c.hi, c.run = true, c.col, 0
}

// show is called before anything that shows on the row (text, a move to
// the right): it does the pending erase.
func (c *GuestConsole) show() {
	c.dirty = true
	if c.erase {
		c.erase, c.tail = false, false
		c.emitString(seqEraseLine)
	}
}

// carriageReturn moves to column 0. The cells of an unsure row are
// unknown: it is erased before anything else shows on it.
func (c *GuestConsole) carriageReturn() {
	c.emit(ctlCR)
	if c.unsure {
		c.unsure, c.erase = false, true
		c.cells = [guardCols]byte{}
	}
	c.col, c.hi, c.run = 0, 0, 0
	c.tail = true
}

// tab moves to the next tab stop.
func (c *GuestConsole) tab() {
	c.show()
	c.emit(ctlHT)
	if !c.unsure {
		c.col = (c.col/consoleTabStop + 1) * consoleTabStop
		if c.col >= minTermCols {
			c.toUnsure()
		}
		return
	}
	c.col = min(c.col+1, maxConsoleCol)
	c.hi = min((c.hi/consoleTabStop+1)*consoleTabStop, maxConsoleCol)
	c.run = 0
}

// endCSI passes the CSI sequence held in csi with final byte f if it is
// whitelisted, else shows it as text.
func (c *GuestConsole) endCSI(f byte) {
	p := c.csi[:c.ncsi]
	n, num := csiParam(p)
	switch {
	case f == 'm' && isSGRParams(p): // character attributes
		c.emitCSI(f)
		c.sgr = !(len(p) == 0 || string(p) == "0")
		return
	case f == 'K' && num && n <= 2: // erase in line
		c.emitCSI(f)
		return
	case f == 'J' && num && n == 0: // erase below
		c.emitCSI(f)
		return
	case f == 'n' && num && (n == 5 || n == 6): // status, cursor position report
		c.emitCSI(f)
		return
	case f == 'C' && num: // cursor forward
		n = max(n, 1)
		c.show()
		c.emitCSI(f)
		c.col = min(c.col+n, maxConsoleCol)
		if !c.unsure {
			if c.col >= minTermCols {
				c.toUnsure()
			}
			return
		}
		c.hi = min(c.hi+n, maxConsoleCol)
		c.run = 0
		return
	case f == 'D' && num && !c.unsure: // cursor back, in an exact row
		c.emitCSI(f)
		c.col = max(c.col-max(n, 1), 0)
		c.tail = true
		return
	}
	c.refuseCSI()
	c.print(f)
}

// csiParam parses a CSI parameter string of at most one number (empty is
// 0); num is false for anything else.
func csiParam(p []byte) (n int, num bool) {
	for _, b := range p {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = min(n*10+int(b-'0'), maxCSIParam)
	}
	return n, true
}

// isSGRParams reports whether p is a plain SGR parameter list: numbers
// separated by ';' or ':', no private markers or intermediates.
func isSGRParams(p []byte) bool {
	for _, b := range p {
		if (b < '0' || b > '9') && b != ';' && b != ':' {
			return false
		}
	}
	return true
}

// refuseCSI shows the held CSI sequence as text ("^[[" and its bytes).
func (c *GuestConsole) refuseCSI() {
	c.printString(refusedESC)
	c.print('[')
	for _, b := range c.csi[:c.ncsi] {
		c.print(b)
	}
	c.ncsi = 0
}

// emitCSI writes the held CSI sequence with final byte f unchanged.
func (c *GuestConsole) emitCSI(f byte) {
	c.emit(ctlESC)
	c.emit('[')
	for _, b := range c.csi[:c.ncsi] {
		c.emit(b)
	}
	c.emit(f)
	c.ncsi = 0
}

func (c *GuestConsole) printString(s string) {
	for i := 0; i < len(s); i++ {
		c.print(s[i])
	}
}

// emit appends b to the output buffer.
func (c *GuestConsole) emit(b byte) {
	if c.nbuf == len(c.buf) {
		c.flush()
	}
	c.buf[c.nbuf] = b
	c.nbuf++
}

func (c *GuestConsole) emitString(s string) {
	for i := 0; i < len(s); i++ {
		c.emit(s[i])
	}
}

// flush writes the output buffer to the console.
func (c *GuestConsole) flush() {
	if c.nbuf == 0 {
		return
	}
	if _, err := c.out.Write(c.buf[:c.nbuf]); err != nil && c.err == nil {
		c.err = err
	}
	c.nbuf = 0
}
