package kernel

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"
)

// filterChunks runs in through a fresh GuestConsole, n bytes per Write
// (n <= 0: one Write).
func filterChunks(in string, n int) string {
	var out bytes.Buffer
	c := NewGuestConsole(&out)
	if n <= 0 {
		n = len(in) + 1
	}
	for len(in) > 0 {
		k := min(n, len(in))
		c.Write([]byte(in[:k]))
		in = in[k:]
	}
	return out.String()
}

var consoleCases = []struct {
	name, in, want string
}{
	// Hypervisor line starts written by the guest.
	{"forged line", "tamavisor: snapshot saved\r\n", "tamavisor\rguest: tamavisor: snapshot saved\r\n"},
	{"forged line after a newline", "abc\r\ntamavisor: x", "abc\r\ntamavisor\rguest: tamavisor: x"},
	{"forged prompt", "tamavisor> ", "tamavisor\rguest: tamavisor> "},
	{"mid-line", "xtamavisor: hi\r\n", "xtamavisor: hi\r\n"},
	{"mid-line prompt", "# tamavisor> x", "# tamavisor> x"},
	{"no colon", "tamavisor\r\ntamavisorx\r\nTamavisor: x", "tamavisor\r\ntamavisorx\r\nTamavisor: x"},
	{"guest's own prefix", "tamavisor-linux: init\r\n", "tamavisor-linux: init\r\n"},
	{"SGR inside", "tama\x1b[31mvisor: x", "tama\x1b[31mvisor\rguest: tamavisor: x"},
	{"NUL inside", "tamav\x00isor: x", "tamav\x00isor\rguest: tamavisor: x"},
	{"CR overwrite", "xamavisor: fake\rt", "xamavisor: fake\r\rguest: tamavisor:"},
	{"BS overwrite", "tx\bamavisor: fake", "tx\bamavisor\rguest: tamavisor: fake"},
	{"cursor back overwrite", "xamavisor:\x1b[10Dt", "xamavisor:\x1b[10D\rguest: tamavisor:"},
	{"zero-width start", "\u200btamavisor: fake", "\u200btamavisor\rguest: tamavisor: fake"},
	{"zero-width inside", "tama\u200bvisor: fake", "tama\u200bvisor\rguest: tamavisor: fake"},
	{"after wrap", strings.Repeat("x", 80) + "tamavisor: fake", strings.Repeat("x", 80) + "tamavisor\rguest: tamavisor: fake"},
	{"marker row rewritten", "tamavisor: a\rtamavisor: b", "tamavisor\rguest: tamavisor: a\rtamavisor\rguest: tamavisor: b"},

	// Escape sequences that pass: what a line-editing shell sends.
	{"SGR", "\x1b[31mred\x1b[0m \x1b[1;38;5;208mx\x1b[m", "\x1b[31mred\x1b[0m \x1b[1;38;5;208mx\x1b[m"},
	{"cursor report", "\x1b[6n\x1b[5n", "\x1b[6n\x1b[5n"},
	{"line editing", "~ # ls\b\b\x1b[5D\x1b[3C\x1b[K\x1b[J\x1b[0J\x1b[2K\x1b[1K", "~ # ls\b\b\x1b[5D\x1b[3C\x1b[K\x1b[J\x1b[0J\x1b[2K\x1b[1K"},
	{"controls", "a\tb\r\nc\bd\x07\x00\x00", "a\tb\r\nc\bd\x07\x00\x00"},
	{"UTF-8", "héllo wörld ✓ 日本 😀\r\n", "héllo wörld ✓ 日本 😀\r\n"},

	// Escape sequences that are shown instead.
	{"OSC title", "\x1b]0;pwned\x07", "^[]0;pwned\x07"},
	{"OSC 52 clipboard", "\x1b]52;c;ZXZpbA==\x1b\\", "^[]52;c;ZXZpbA==^[\\"},
	{"OSC 8 hyperlink", "\x1b]8;;http://x\x1b\\y", "^[]8;;http://x^[\\y"},
	{"DCS DECRQSS", "\x1bP$qm\x1b\\", "^[P$qm^[\\"},
	{"APC PM SOS", "\x1b_a\x1b^b\x1bXc", "^[_a^[^b^[Xc"},
	{"erase display", "\x1b[2J\x1b[3J\x1b[1J", "^[[2J^[[3J^[[1J"},
	{"cursor addressing", "\x1b[H\x1b[1;1f\x1b[A\x1b[2B\x1b[F\x1b[E\x1b[5G\x1b[3d", "^[[H^[[1;1f^[[A^[[2B^[[F^[[E^[[5G^[[3d"},
	{"save restore", "\x1b7\x1b8\x1b[s\x1b[u", "^[7^[8^[[s^[[u"},
	{"reverse index, reset", "\x1bM\x1bc\x1b[!p", "^[M^[c^[[!p"},
	{"reports", "\x1b[21t\x1b[c\x1b[>c\x1b[?6n\x1b[n", "^[[21t^[[c^[[>c^[[?6n^[[n"},
	{"modes", "\x1b[?1049h\x1b[?7l\x1b[4h\x1b[?25l", "^[[?1049h^[[?7l^[[4h^[[?25l"},
	{"scroll, insert, delete", "\x1b[2r\x1b[S\x1b[L\x1b[P\x1b[@\x1b[X", "^[[2r^[[S^[[L^[[P^[[@^[[X"},
	{"charset", "\x1b(0q\x0e\x0f", "^[(0q^N^O"},
	{"bad SGR", "\x1b[?31m\x1b[31 m", "^[[?31m^[[31 m"},
	{"bad parameters", "\x1b[3KK\x1b[1;2C\x1b[5;D\x1b[1J", "^[[3KK^[[1;2C^[[5;D^[[1J"},
	{"control inside CSI", "\x1b[1\nA", "^[[1\nA"},
	{"ESC ESC", "\x1b\x1b[31m", "^[\x1b[31m"},
	{"long CSI", "\x1b[" + strings.Repeat("1", 20) + "m", "^[[" + strings.Repeat("1", 20) + "m"},
	{"C0 controls", "\x01\x05\x0b\x0c\x18\x1a\x7f", "^A^E^K^L^X^Z^?"},
	{"C1 controls", "\x9b31m\xc2\x9b31m\xc2\x9d0;x\xc2\x85", "?31m?31m?0;x?"},
	{"bad UTF-8", "\xe0\x80\xaf|\xed\xa0\x80|\xff|\xc3|\xf4\x90\x80\x80", "???|???|?|?|????"},
	{"bidi", "a\u202eb\u2066c\u200fd", "a?b?c?d"},

	// Backward moves where the filter cannot tell the column.
	{"BS on a long row", strings.Repeat("x", 85) + "\b", strings.Repeat("x", 85) + "^H"},
	{"cursor back on a long row", strings.Repeat("x", 85) + "\x1b[3D", strings.Repeat("x", 85) + "^[[3D"},
	{"BS after UTF-8", "é\bx", "é^Hx"},
	{"BS after wrap", strings.Repeat("x", 80) + "xamavisor:" + strings.Repeat("\b", 10) + "t", strings.Repeat("x", 80) + "xamavisor:" + strings.Repeat("^H", 10) + "t"},
	{"cursor back after wrap", strings.Repeat("x", 80) + "xamavisor:\x1b[10Dt", strings.Repeat("x", 80) + "xamavisor:^[[10Dt"},
	{"CR after wrap", strings.Repeat("x", 80) + "xamavisor:\rt", strings.Repeat("x", 80) + "xamavisor:\r\x1b[Kt"},
	{"zero-width over old text", "xamavisor:\r\u200bt", "xamavisor:\r\x1b[K\u200bt"},
	{"CR after UTF-8", "é abc\r\n✓ ok\rdone\r\n", "é abc\r\n✓ ok\r\x1b[Kdone\r\n"},
	{"UTF-8 after overwrite", "abcdef\rab✓", "abcdef\rab\x1b[K✓"},
}

func TestGuestConsole(t *testing.T) {
	for _, tc := range consoleCases {
		for _, n := range []int{0, 1, 2, 3, 7} {
			if got := filterChunks(tc.in, n); got != tc.want {
				t.Errorf("%s (%d bytes per write): %q\n got %q\nwant %q", tc.name, n, tc.in, got, tc.want)
			}
		}
	}
}

// TestGuestConsoleScreen replays every case on a terminal model: no row
// ever starts with a hypervisor line start, the escapes are whitelisted.
func TestGuestConsoleScreen(t *testing.T) {
	for _, tc := range consoleCases {
		checkConsoleOutput(t, tc.name, tc.in, filterChunks(tc.in, 0))
	}
}

func TestGuestConsoleHostBreak(t *testing.T) {
	var out bytes.Buffer
	c := NewGuestConsole(&out)
	if c.MidLine() {
		t.Error("MidLine on a fresh console")
	}
	c.Write([]byte("abc\r\n"))
	if c.MidLine() {
		t.Error("MidLine after CR LF")
	}
	c.HostBreak()
	if got := out.String(); got != "abc\r\n" {
		t.Errorf("HostBreak at a row start wrote %q", got[5:])
	}
	// A partial line and attributes: ended and reset.
	out.Reset()
	c.Write([]byte("\x1b[8mx"))
	if !c.MidLine() {
		t.Error("no MidLine after x")
	}
	c.HostBreak()
	out.WriteString("tamavisor: snapshot saved\n") // the hypervisor's message
	// The guest's next line is at a row start again: marked.
	c.Write([]byte("tamavisor: fake\r\n"))
	want := "\x1b[8mx\x1b[0m\ntamavisor: snapshot saved\ntamavisor\rguest: tamavisor: fake\r\n"
	if got := out.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	// A CR leaves the row's text: still mid-line.
	out.Reset()
	c.Write([]byte("abc\r"))
	if !c.MidLine() {
		t.Error("no MidLine after abc CR")
	}
	// A partial escape sequence stays held across the break.
	c.Write([]byte("\n\x1b[3"))
	c.HostBreak()
	c.Write([]byte("1mX"))
	if got, want := out.String(), "abc\r\n\x1b[31mX"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestGuestConsoleNoAllocs: the UART's one-byte writes cost no allocation.
func TestGuestConsoleNoAllocs(t *testing.T) {
	c := NewGuestConsole(discard{})
	in := []byte("tamavisor: x\x1b[31m\x1b]0;t\x07é✓\u200b\r\n" + strings.Repeat("y", 90) + "\b\r\n")
	one := make([]byte, 1)
	allocs := testing.AllocsPerRun(20, func() {
		for _, b := range in {
			one[0] = b
			c.Write(one)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per stream", allocs)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestGuestConsoleRandom: long random streams of shell-like and hostile
// tokens, written in random chunks.
func TestGuestConsoleRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		var in strings.Builder
		for j := rng.Intn(600); j > 0; j-- {
			if rng.Intn(8) == 0 {
				in.WriteByte(byte(rng.Intn(256)))
			} else {
				in.WriteString(consoleTokens[rng.Intn(len(consoleTokens))])
			}
		}
		s := in.String()
		whole := filterChunks(s, 0)
		if got := filterChunks(s, 1+rng.Intn(5)); got != whole {
			t.Fatalf("stream %d: output depends on the write sizes: %q", i, s)
		}
		checkConsoleOutput(t, fmt.Sprintf("stream %d", i), s, whole)
	}
}

// consoleTokens are what the random test and the fuzz target build
// streams from.
var consoleTokens = []string{
	"t", "a", "m", "v", "i", "s", "o", "r", ":", ">", "x", " ", "tamavisor", "tamavisor:", "amavisor:",
	"\r", "\n", "\r\n", "\b", "\t", "\x00", "\x07", "\x1b", "[", "]", "\x1b[", "\x1b]0;",
	"\x1b[D", "\x1b[3D", "\x1b[9D", "\x1b[C", "\x1b[4C", "\x1b[K", "\x1b[1K", "\x1b[2K", "\x1b[J",
	"\x1b[31m", "\x1b[0m", "\x1b[6n", "\x1b[2J", "\x1b[H", "\x1b[A", "\x1b7", "\x1b8", "\x1b[?7l",
	"é", "✓", "日", "\u200b", "\u0301", "\u202e", "\xc2", "\x9b", "\xe2\x9c",
	strings.Repeat("x", 10), strings.Repeat("y", 70), strings.Repeat("z", 79),
}

func FuzzGuestConsole(f *testing.F) {
	for _, tc := range consoleCases {
		f.Add([]byte(tc.in), uint8(0))
	}
	f.Add([]byte{12, 0, 1, 2, 3, 4, 5, 6, 7, 8}, uint8(1))
	f.Add([]byte{14, 15, 16, 12, 8}, uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		if len(data) > 1024 {
			return
		}
		in := string(data)
		if mode&1 != 0 { // data picks tokens
			var b strings.Builder
			for _, x := range data {
				b.WriteString(consoleTokens[int(x)%len(consoleTokens)])
			}
			in = b.String()
		}
		whole := filterChunks(in, 0)
		if got := filterChunks(in, 1+int(mode>>1)%4); got != whole {
			t.Fatalf("output depends on the write sizes")
		}
		checkConsoleOutput(t, "fuzz", in, whole)
	})
}

// checkConsoleOutput checks the filter's output out for input in: every
// escape sequence is one the filter lets through, no C1 or bidi control,
// and on terminals of several widths, with non-ASCII characters 0, 1 or 2
// columns wide, no row ever starts with "tamavisor:" or "tamavisor>".
func checkConsoleOutput(t *testing.T, name, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: output is not UTF-8: %q -> %q", name, in, out)
		return
	}
	for i := 0; i < len(out); i++ {
		b := out[i]
		if b < 0x20 && !strings.ContainsRune("\x00\x07\b\t\n\r\x1b", rune(b)) || b == 0x7f {
			t.Errorf("%s: control %#x in the output: %q -> %q", name, b, in, out)
			return
		}
		if b != 0x1b {
			continue
		}
		j := i + 1
		if j >= len(out) || out[j] != '[' {
			t.Errorf("%s: ESC not starting a CSI at %d: %q -> %q", name, i, in, out)
			return
		}
		j++
		for j < len(out) && out[j] >= 0x20 && out[j] <= 0x3f {
			j++
		}
		if j >= len(out) || !allowedCSI(out[i+2:j], out[j]) {
			t.Errorf("%s: escape sequence %q in the output: %q -> %q", name, out[i:min(j+1, len(out))], in, out)
			return
		}
		i = j
	}
	for _, r := range out {
		if r >= 0x80 && r <= 0x9f || isBidiControl(r) {
			t.Errorf("%s: %U in the output: %q -> %q", name, r, in, out)
			return
		}
	}
	for _, cols := range []int{80, 97} {
		for wname, width := range runeWidths {
			term := &screen{cols: cols, width: width}
			if row, ok := term.run(out); !ok {
				t.Errorf("%s: %d columns, %s: a row reads %q: %q -> %q", name, cols, wname, row, in, out)
				return
			}
		}
	}
}

func allowedCSI(p string, f byte) bool {
	n, num := csiParam([]byte(p))
	switch f {
	case 'm':
		return isSGRParams([]byte(p))
	case 'K':
		return num && n <= 2
	case 'J':
		return num && n == 0
	case 'n':
		return num && (n == 5 || n == 6)
	case 'C', 'D':
		return num
	}
	return false
}

// runeWidths are the widths a terminal might give non-ASCII characters.
var runeWidths = map[string]func(rune) int{
	"all 0": func(rune) int { return 0 },
	"all 1": func(rune) int { return 1 },
	"all 2": func(rune) int { return 2 },
	"mixed": func(r rune) int { return int(r % 3) },
}

// screen is a terminal model for the row the cursor is on (output never
// moves up: the rows above cannot change, rows below are blank): xterm
// rules for wrap (pending at the last column), BS, HT, CR, LF as CR LF
// (the console converts), and the CSI sequences the filter passes.
type screen struct {
	cols    int
	width   func(rune) int
	row     []rune
	col     int
	pending bool
}

// run feeds out to the screen; it returns false and the row at the first
// moment a row starts with a hypervisor line start.
func (s *screen) run(out string) (string, bool) {
	s.row = make([]rune, s.cols)
	for i := 0; i < len(out); {
		b := out[i]
		switch {
		case b == 0x1b:
			j := i + 2
			for out[j] >= 0x20 && out[j] <= 0x3f {
				j++
			}
			s.csi(out[i+2:j], out[j])
			i = j + 1
			continue
		case b == '\r':
			s.col, s.pending = 0, false
		case b == '\n':
			s.newRow()
		case b == '\b':
			s.col, s.pending = max(s.col-1, 0), false
		case b == '\t':
			s.col, s.pending = min((s.col/8+1)*8, s.cols-1), false
		case b < 0x20:
		default:
			r, n := utf8.DecodeRuneInString(out[i:])
			w := 1
			if r >= 0x80 {
				w = s.width(r)
			}
			s.print(r, w)
			i += n
			if row := string(s.row[:guardCols]); row == "tamavisor:" || row == "tamavisor>" {
				return row, false
			}
			continue
		}
		i++
	}
	return "", true
}

func (s *screen) newRow() {
	clear(s.row)
	s.col, s.pending = 0, false
}

func (s *screen) print(r rune, w int) {
	if w == 0 {
		return
	}
	if s.pending || w == 2 && s.col == s.cols-1 {
		s.newRow()
	}
	s.row[s.col] = r
	if w == 2 {
		s.row[s.col+1] = -1
	}
	s.col += w
	if s.col >= s.cols {
		s.col, s.pending = s.cols-1, true
	}
}

func (s *screen) csi(p string, f byte) {
	n, _ := csiParam([]byte(p))
	switch f {
	case 'C':
		s.col, s.pending = min(s.col+max(n, 1), s.cols-1), false
	case 'D':
		s.col, s.pending = max(s.col-max(n, 1), 0), false
	case 'K':
		switch n {
		case 0:
			clear(s.row[s.col:])
		case 1:
			clear(s.row[:s.col+1])
		case 2:
			clear(s.row)
		}
	case 'J':
		clear(s.row[s.col:])
	}
}

// TestGuestConsoleVM: the UART, the debug port and CONSOLE_WRITE all go
// through the VM's filter.
func TestGuestConsoleVM(t *testing.T) {
	e := newEnv(t, featNRIP)
	vm := e.boot(Mode64)
	if err := vm.Mem.WriteGPA(0x20000, []byte("amavisor: fake\n")); err != nil {
		t.Fatal(err)
	}
	var steps []step
	for _, b := range []byte("\x1b[2J") {
		steps = append(steps, ioStep(COM1Base, 1, false, uint64(b)))
	}
	steps = append(steps, ioStep(DebugPort, 1, false, '\n'), ioStep(DebugPort, 1, false, 't'))
	steps = append(steps, e.hcStep(HCConsoleWrite, 0x20000, 15, 0))
	e.resume(steps...)
	if got, want := e.console.String(), "^[[2J\ntamavisor\rguest: tamavisor: fake\n"; got != want {
		t.Errorf("console %q, want %q", got, want)
	}
	if vm.GuestConsole().MidLine() {
		t.Error("MidLine after a newline")
	}
}

// TestHostWroteClosesTheGap: the hypervisor prints a line while the guest
// is mid-row (a snapshot message after the guest wrote "x"); the guest's
// next "tamavisor:" starts a terminal row and must be marked.
func TestHostWroteClosesTheGap(t *testing.T) {
	var out bytes.Buffer
	c := NewGuestConsole(&out)
	c.Write([]byte("x"))
	out.WriteString("tamavisor: snapshot saved\n") // the hypervisor, unfiltered
	c.HostWrote()
	for _, b := range []byte("tamavisor: fake\n") {
		c.Write([]byte{b})
	}
	if got := out.String(); !strings.Contains(got, "guest: tamavisor: fake") {
		t.Errorf("console shows %q: the forged line after a hypervisor line is not marked", got)
	}
}
