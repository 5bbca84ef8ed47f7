// Command tamavisor talks to a running tamavisor through its control
// channel, the second serial port of the QEMU machine, as bhyvectl talks to
// bhyve. Start tamavisor with a control channel (make qemu CTL=out/tv.sock
// starts QEMU with -chardev socket,path=out/tv.sock,server=on,wait=off on
// COM2), then, in the repository:
//
//	go run ./cmd/tamavisor snapshot --socket out/tv.sock
//
// (out/tv.sock is the default socket).
//
// Commands: snapshot (save the running guest to the snapshot disk), info,
// pause, continue, input TEXT, quit; tamavisor help lists them with their
// flags. Flags may come before or after the command. The exit status is 0
// when tamavisor answered ok, 1 on an error answer or a broken channel, 2
// on bad usage.
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

	"tamavisor/cmd/internal/cli"
)

// defaultSocket is the control-channel socket README.md uses (make qemu
// ... CTL=out/tv.sock, relative to the repository, where make and go run
// run).
const defaultSocket = "out/tv.sock"

// commands are the control-channel commands this client sends.
var commands = []struct {
	name, arg, about string
}{
	{"snapshot", "", "save the guest to the snapshot disk, then let it run on"},
	{"info", "", "show the VM: name, RAM, exits, registers, interrupts, disk"},
	{"pause", "", "pause the guest until continue"},
	{"continue", "", "resume a guest paused with pause"},
	{"input", "TEXT", `type TEXT on the guest's console (\n for Enter; \r \t \\ \xHH)`},
	{"quit", "", "stop the VM; tamavisor powers off with status 0"},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func flags(socket *string, timeout *time.Duration) *flag.FlagSet {
	fs := flag.NewFlagSet("tamavisor", flag.ContinueOnError)
	fs.StringVar(socket, "socket", defaultSocket, "the control channel: the unix socket `PATH` given to make qemu CTL=PATH")
	fs.DurationVar(timeout, "timeout", time.Minute, "how long to wait for the answer: a duration `D` such as 30s or 5m")
	return fs
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: tamavisor COMMAND [--socket PATH] [--timeout D]\n\n"+
		"Sends one command to a running tamavisor over its control channel and prints\n"+
		"the answer. Flags may come before or after the command.\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-16s %s\n", strings.TrimSpace(c.name+" "+c.arg), c.about)
	}
	fmt.Fprintf(w, "  %-16s %s\n\nflags:\n", "help", "this text")
	var s string
	var d time.Duration
	flags(&s, &d).VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s %s\n        %s\n        (default %s)\n", f.Name, name, help, f.DefValue)
	})
	fmt.Fprintf(w, "\nexit status: 0 tamavisor answered ok; 1 it answered an error, or the channel\n"+
		"failed; 2 usage error (unknown command or flag, bad value, missing or extra\nargument).\n")
}

func usageError(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "tamavisor: %v\nrun 'tamavisor help' for usage\n", err)
	return cli.ExitUsage
}

func run(args []string, stdout, stderr io.Writer) int {
	var socket string
	var timeout time.Duration
	fs := flags(&socket, &timeout)
	pos, err := cli.Parse(fs, args)
	switch {
	case errors.Is(err, cli.ErrHelp), err == nil && len(pos) > 0 && cli.IsHelp(pos[0]):
		usage(stdout)
		return cli.ExitOK
	case err != nil:
		return usageError(stderr, err)
	case len(pos) == 0:
		usage(stderr)
		return cli.ExitUsage
	}
	var names []string
	line := ""
	for _, c := range commands {
		names = append(names, c.name)
		if c.name != pos[0] {
			continue
		}
		switch {
		case c.arg != "" && len(pos) == 1:
			return usageError(stderr, fmt.Errorf("%s: missing %s", c.name, c.arg))
		case c.arg != "" && len(pos) > 2:
			return usageError(stderr, fmt.Errorf("%s: unexpected argument %q (%s takes one %s: quote it if it has spaces)", c.name, pos[2], c.name, c.arg))
		case c.arg == "" && len(pos) > 1:
			return usageError(stderr, fmt.Errorf("%s: unexpected argument %q (%s takes none)", c.name, pos[1], c.name))
		}
		line = c.name
		if c.arg != "" {
			if strings.ContainsAny(pos[1], "\r\n\x15") {
				return usageError(stderr, fmt.Errorf("input: TEXT must be one line: write \\n for Enter"))
			}
			line += " " + pos[1]
		}
	}
	if line == "" {
		return usageError(stderr, fmt.Errorf("unknown command %q (commands: %s, help)", pos[0], strings.Join(names, ", ")))
	}
	if timeout <= 0 {
		return usageError(stderr, fmt.Errorf("--timeout %v: must be more than 0", timeout))
	}
	conn, err := net.Dial("unix", socket)
	if err != nil {
		var why error = err
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			why = oe.Err // "connect: no such file or directory"
		}
		fmt.Fprintf(stderr, "tamavisor: cannot reach the control channel at %s: %v\n"+
			"start tamavisor with a control channel there: make qemu CTL=%s (or give --socket PATH)\n", socket, why, socket)
		return cli.ExitFailed
	}
	defer conn.Close()
	return converse(conn, line, timeout, stdout, stderr)
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
		return cli.ExitFailed
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
			return cli.ExitOK
		case strings.HasPrefix(line, "error #"+tag+": "):
			// The reason may say "tamavisor:" itself: once is enough.
			why := strings.TrimPrefix(strings.TrimPrefix(line, "error #"+tag+": "), "tamavisor: ")
			fmt.Fprintln(stderr, "tamavisor:", why)
			return cli.ExitFailed
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
	return cli.ExitFailed
}
