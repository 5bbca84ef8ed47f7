package main

import (
	"bufio"
	"bytes"
	"net"
	"path/filepath"
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
