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
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the answer")
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

// converse sends one command line and copies the answer until the final
// "ok" or "error: ..." line.
func converse(conn net.Conn, cmd string, timeout time.Duration, stdout, stderr io.Writer) int {
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "%s\n", cmd); err != nil {
		fmt.Fprintf(stderr, "tamavisor: %v\n", err)
		return 1
	}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case line == "ok":
			return 0
		case strings.HasPrefix(line, "error: "):
			fmt.Fprintln(stderr, "tamavisor:", strings.TrimPrefix(line, "error: "))
			return 1
		case line != "":
			fmt.Fprintln(stdout, line)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "tamavisor: %v\n", err)
	} else {
		fmt.Fprintf(stderr, "tamavisor: control channel closed before an answer\n")
	}
	return 1
}
