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
// control channel.
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
		got <- line
		c.Write([]byte(answer))
	}()
	return path, got
}

func TestSnapshotOK(t *testing.T) {
	path, got := fakeHypervisor(t, "tamavisor: snapshot saved: generation 2\r\nok\r\n")
	var out, errb bytes.Buffer
	if rc := run([]string{"snapshot", "--socket", path}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	if line := <-got; line != "snapshot\n" {
		t.Errorf("sent %q", line)
	}
	if !strings.Contains(out.String(), "generation 2") {
		t.Errorf("output %q", out.String())
	}
}

func TestErrorAnswer(t *testing.T) {
	path, _ := fakeHypervisor(t, "error: no snapshot disk\n")
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
	if rc := run([]string{"fly"}, &out, &errb); rc != 2 {
		t.Errorf("usage: rc %d", rc)
	}
	if rc := run([]string{"info", "--socket", filepath.Join(t.TempDir(), "none")}, &out, &errb); rc != 1 {
		t.Errorf("no socket: rc %d", rc)
	}
}
