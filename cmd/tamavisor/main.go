// Command tamavisor talks to a running tamavisor through its control
// channel, the second serial port of the QEMU machine, as bhyvectl talks to
// bhyve. Start QEMU with
//
//	-serial stdio -serial unix:/tmp/tamavisor.sock,server=on,wait=off
//
// (make qemu CTL=/tmp/tamavisor.sock does), then:
//
//	tamavisor snapshot --socket /tmp/tamavisor.sock
//
// Commands: snapshot (save the running guest to the snapshot disk), info,
// quit. The exit status is 0 when tamavisor answered ok, 1 on an error
// answer or a broken channel, 2 on bad usage.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

var commands = map[string]bool{"snapshot": true, "info": true, "quit": true}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tamavisor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "/tmp/tamavisor.sock", "control channel: QEMU's -serial unix socket")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tamavisor snapshot|info|quit [--socket PATH] [--timeout D]\n")
	}
	if len(args) == 0 || !commands[args[0]] {
		fs.Usage()
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	conn, err := net.Dial("unix", *socket)
	if err != nil {
		fmt.Fprintf(stderr, "tamavisor: %v (is QEMU running with -serial unix:%s,server=on,wait=off?)\n", err, *socket)
		return 1
	}
	defer conn.Close()
	return converse(conn, args[0], *timeout, stdout, stderr)
}

// killLine (Ctrl-U) makes tamavisor discard a partial command line: bytes
// of an earlier command whose client gave up (QEMU drops the rest of it
// with the connection) cannot merge with this one.
const killLine = "\x15"

// converse sends one tagged command line and copies the answer between
// "begin #tag" and the final "ok #tag" or "error #tag: ..." line. Lines
// before "begin #tag" are late answers to earlier clients: skipped.
func converse(conn net.Conn, cmd string, timeout time.Duration, stdout, stderr io.Writer) int {
	conn.SetDeadline(time.Now().Add(timeout))
	tag := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff)
	if _, err := fmt.Fprintf(conn, "%s%s #%s\n", killLine, cmd, tag); err != nil {
		fmt.Fprintf(stderr, "tamavisor: %v\n", err)
		return 1
	}
	sc := bufio.NewScanner(conn)
	begun := false
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case line == "begin #"+tag:
			begun = true
		case !begun:
		case line == "ok #"+tag:
			return 0
		case strings.HasPrefix(line, "error #"+tag+": "):
			fmt.Fprintln(stderr, "tamavisor:", strings.TrimPrefix(line, "error #"+tag+": "))
			return 1
		case line != "":
			fmt.Fprintln(stdout, line)
		}
	}
	var ne net.Error
	switch err := sc.Err(); {
	case errors.As(err, &ne) && ne.Timeout():
		fmt.Fprintf(stderr, "tamavisor: no answer within %v: tamavisor reads the control channel between guest exits "+
			"and while its console monitor is open; a guest that runs without exits, or a long snapshot, delays it "+
			"(--timeout sets the wait)\n", timeout)
	case err != nil:
		fmt.Fprintf(stderr, "tamavisor: %v\n", err)
	default:
		fmt.Fprintf(stderr, "tamavisor: control channel closed before an answer\n")
	}
	return 1
}
