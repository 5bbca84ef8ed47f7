// Command tamavisor-snap inspects, verifies and extracts tamavisor
// snapshots stored on a disk image, and benchmarks the snapshot codec.
//
// Usage:
//
//	tamavisor-snap inspect [--json] [--key-file F] [--sector N] DISK
//	tamavisor-snap verify [--key-file F] [--sector N] DISK
//	tamavisor-snap extract-ram [--key-file F] [--sector N] DISK OUT
//	tamavisor-snap bench [--size 256MiB] [--dir DIR]
//	tamavisor-snap demo [--size 8MiB] DISK
//
// verify exits 0 if the newest committed snapshot and the commit records are
// valid, 1 if something is corrupt (the message names the chunk), 2 on
// usage errors. demo writes a sample disk image with two snapshots.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  tamavisor-snap inspect [--json] [--key-file F] [--sector N] DISK
  tamavisor-snap verify [--key-file F] [--sector N] DISK
  tamavisor-snap extract-ram [--key-file F] [--sector N] DISK OUT
  tamavisor-snap bench [--size 256MiB] [--dir DIR]
  tamavisor-snap demo [--size 8MiB] DISK
`

// Exit statuses.
const (
	exitOK      = 0
	exitCorrupt = 1
	exitUsage   = 2
)

// run executes one command and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "inspect: print JSON")
	keyFile := fs.String("key-file", "", "file holding the HMAC key")
	sector := fs.Int("sector", 512, "sector size of the disk image")
	size := fs.String("size", "", "bench/demo: guest RAM size (e.g. 256MiB)")
	dir := fs.String("dir", os.TempDir(), "bench: directory for the scratch disk image")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	var key []byte
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		key = []byte(strings.TrimRight(string(b), "\r\n"))
	}
	pos := fs.Args()
	want := map[string]int{"inspect": 1, "verify": 1, "extract-ram": 2, "bench": 0, "demo": 1}
	n, ok := want[cmd]
	if !ok || len(pos) != n {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch cmd {
	case "inspect":
		return inspect(pos[0], *sector, key, *jsonOut, stdout, stderr)
	case "verify":
		return verify(pos[0], *sector, key, stdout, stderr)
	case "extract-ram":
		return extractRAM(pos[0], pos[1], *sector, key, stdout, stderr)
	case "bench":
		sz, err := parseSize(*size, 256<<20)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		return bench(sz, *dir, stdout, stderr)
	case "demo":
		sz, err := parseSize(*size, 8<<20)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		if err := writeDemo(pos[0], sz); err != nil {
			fmt.Fprintln(stderr, err)
			return exitCorrupt
		}
		return exitOK
	}
	return exitUsage
}

// parseSize parses "256MiB", "1GiB", "4096" (bytes); def if s is empty.
// The result is a multiple of 4096 and at least 2 MiB.
func parseSize(s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	n *= mult
	if n%4096 != 0 || n < 2<<20 {
		return 0, fmt.Errorf("size %d must be a multiple of 4096 and at least 2MiB", n)
	}
	return n, nil
}
