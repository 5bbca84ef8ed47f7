package main

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fakeHypervisor answers one command on a unix socket like tamavisor's
// control channel; "TAG" in answer stands for the command's tag.
func fakeHypervisor(t *testing.T, answer string) (string, chan string) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		tag := ""
		if i := strings.LastIndex(line, " #"); i >= 0 {
			tag = strings.TrimSpace(line[i+2:])
			line = line[:i] + "\n"
		}
		got <- line
		c.Write([]byte(strings.ReplaceAll(answer, "TAG", tag)))
	}()
	return path, got
}

func TestSnapshotOK(t *testing.T) {
	// A late answer to an earlier client comes first: it is skipped.
	path, got := fakeHypervisor(t, "vm old: stale\r\nok\r\nbegin #TAG\r\ntamavisor: snapshot saved: generation 2\r\nok #TAG\r\n")
	var out, errb bytes.Buffer
	if rc := run([]string{"snapshot", "--socket", path}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	if line := <-got; line != "\x15snapshot\n" {
		t.Errorf("sent %q, want the line-kill byte, the command and a tag", line)
	}
	if !strings.Contains(out.String(), "generation 2") || strings.Contains(out.String(), "stale") {
		t.Errorf("output %q", out.String())
	}
}

func TestErrorAnswer(t *testing.T) {
	path, _ := fakeHypervisor(t, "begin #TAG\nerror #TAG: no snapshot disk\n")
	var out, errb bytes.Buffer
	if rc := run([]string{"snapshot", "--socket", path}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "no snapshot disk") {
		t.Errorf("rc %d, stderr %q", rc, errb.String())
	}
}

func TestClosedAndUsage(t *testing.T) {
	path, _ := fakeHypervisor(t, "partial")
	var out, errb bytes.Buffer
	if rc := run([]string{"info", "--socket", path, "--timeout", "2s"}, &out, &errb); rc != 1 {
		t.Errorf("closed channel: rc %d", rc)
	}
	// An answer that never comes: a timeout that explains itself.
	path = filepath.Join(t.TempDir(), "silent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			defer c.Close()
			bufio.NewReader(c).ReadString('\n')
			c.Read(make([]byte, 1)) // until the client hangs up
		}
	}()
	errb.Reset()
	if rc := run([]string{"info", "--socket", path, "--timeout", "200ms"}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "no answer within 200ms") {
		t.Errorf("timeout: rc %d, stderr %q", rc, errb.String())
	}
	if rc := run([]string{"fly"}, &out, &errb); rc != 2 {
		t.Errorf("usage: rc %d", rc)
	}
	if rc := run([]string{"info", "--socket", filepath.Join(t.TempDir(), "none")}, &out, &errb); rc != 1 {
		t.Errorf("no socket: rc %d", rc)
	}
}

// TestHelp: --help, -h and help print every command and flag on stdout
// and exit 0, wherever they are.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"-help"}, {"info", "--help"}, {"--socket", "x", "help"}} {
		var out, errb bytes.Buffer
		if rc := run(args, &out, &errb); rc != 0 || errb.Len() != 0 {
			t.Errorf("%q: rc %d, stderr %q", args, rc, errb.String())
		}
		for _, c := range commands {
			if !strings.Contains(out.String(), "\n  "+c.name) {
				t.Errorf("%q: usage lacks %s", args, c.name)
			}
		}
		for _, f := range []string{"--socket PATH", "--timeout D", "default " + defaultSocket, "exit status: 0"} {
			if !strings.Contains(out.String(), f) {
				t.Errorf("%q: usage lacks %q", args, f)
			}
		}
	}
}

// TestFlagsAnywhere: flags before the command work as after it.
func TestFlagsAnywhere(t *testing.T) {
	for _, order := range []func(path string) []string{
		func(path string) []string { return []string{"--socket", path, "info"} },
		func(path string) []string { return []string{"info", "--socket", path, "--timeout", "5s"} },
		func(path string) []string { return []string{"--timeout=5s", "info", "--socket=" + path} },
	} {
		path, got := fakeHypervisor(t, "begin #TAG\nvm x\nok #TAG\n")
		var out, errb bytes.Buffer
		if rc := run(order(path), &out, &errb); rc != 0 || out.String() != "vm x\n" {
			t.Errorf("%q: rc %d, stdout %q, stderr %q", order(path), rc, out.String(), errb.String())
		}
		if line := <-got; line != "\x15info\n" {
			t.Errorf("sent %q", line)
		}
	}
}

// TestInput sends the text as one command line.
func TestInput(t *testing.T) {
	path, got := fakeHypervisor(t, "begin #TAG\nok #TAG\n")
	var out, errb bytes.Buffer
	if rc := run([]string{"input", `ls -l\n`, "--socket", path}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	if line := <-got; line != "\x15input ls -l\\n\n" {
		t.Errorf("sent %q", line)
	}
}

// TestUsageErrors: a malformed command line exits 2 and says which
// argument is wrong and why, on stderr.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage: tamavisor COMMAND"},
		{[]string{"fly"}, `unknown command "fly" (commands: snapshot, info, pause, continue, input, quit, help)`},
		{[]string{"info", "extra"}, `info: unexpected argument "extra" (info takes none)`},
		{[]string{"input"}, "input: missing TEXT"},
		{[]string{"input", "a", "b"}, `input: unexpected argument "b" (input takes one TEXT`},
		{[]string{"input", "a\nb"}, "TEXT must be one line"},
		{[]string{"info", "--timeout", "soon"}, `--timeout "soon": not a valid value`},
		{[]string{"info", "--timeout", "0s"}, "--timeout 0s: must be more than 0"},
		{[]string{"info", "--sock", "x"}, "unknown flag --sock (flags: --socket, --timeout)"},
		{[]string{"info", "--socket"}, "--socket needs a value"},
	} {
		var out, errb bytes.Buffer
		if rc := run(tc.args, &out, &errb); rc != 2 || out.Len() != 0 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: rc %d, stdout %q, stderr %q; want 2 and %q", tc.args, rc, out.String(), errb.String(), tc.want)
		}
	}
}

// TestDefaultSocketIsREADMEs: the README starts QEMU with CTL=path and
// runs this command on that path: that path is the default, so the
// command works without --socket too.
func TestDefaultSocketIsREADMEs(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The walkthrough's commands: indented lines.
	ctl := regexp.MustCompile(`(?m)^\s+make qemu .*CTL=(\S+)`).FindSubmatch(readme)
	sock := regexp.MustCompile(`(?m)^\s+go run \./cmd/tamavisor \w+ --socket (\S+)`).FindSubmatch(readme)
	if ctl == nil || sock == nil {
		t.Fatal("README.md has no make qemu ... CTL= and tamavisor --socket")
	}
	if string(ctl[1]) != defaultSocket || string(sock[1]) != defaultSocket {
		t.Errorf("README uses CTL=%s and --socket %s; the default socket is %s", ctl[1], sock[1], defaultSocket)
	}
}

// TestDialError: no control channel: exit 1, and how to get one.
func TestDialError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	var out, errb bytes.Buffer
	if rc := run([]string{"snapshot", "--socket", path}, &out, &errb); rc != 1 ||
		!strings.Contains(errb.String(), "cannot reach the control channel at "+path) ||
		!strings.Contains(errb.String(), "make qemu CTL="+path) {
		t.Errorf("rc %d, stderr %q", rc, errb.String())
	}
}

// TestErrorNotDoubled: an error answer that starts with "tamavisor:" is
// not printed as "tamavisor: tamavisor: ...".
func TestErrorNotDoubled(t *testing.T) {
	path, _ := fakeHypervisor(t, "begin #TAG\nerror #TAG: tamavisor: snapshot failed: disk full\n")
	var out, errb bytes.Buffer
	if rc := run([]string{"snapshot", "--socket", path}, &out, &errb); rc != 1 || errb.String() != "tamavisor: snapshot failed: disk full\n" {
		t.Errorf("rc %d, stderr %q", rc, errb.String())
	}
}
