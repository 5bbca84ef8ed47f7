// Command tamavisor-snap inspects, verifies and extracts tamavisor
// snapshots stored on a disk image, writes a demo disk, and benchmarks the
// snapshot codec. It decodes tamavisor's chunks with the hypervisor's own
// decoders (kernel.Registry), and verify runs the hypervisor's own restore
// (kernel.Restore) on a scratch machine.
//
// Usage (tamavisor-snap help prints the flags):
//
//	tamavisor-snap inspect [--json] [--key-file F] [--sector N] DISK
//	tamavisor-snap verify [--generation N] [--key-file F] [--sector N] DISK
//	tamavisor-snap extract-ram [--generation N] [--key-file F] [--sector N] DISK OUT
//	tamavisor-snap bench [--size 256MiB] [--dir DIR]
//	tamavisor-snap demo [--size 8MiB] [--force] DISK
//	tamavisor-snap help [COMMAND]
//
// Flags may come before or after the arguments. Exit status: 0 ok, 1 a
// check or an operation failed, 2 usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"tamavisor/cmd/internal/cli"
	"tamavisor/kernel"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses (cli).
const (
	exitOK     = cli.ExitOK
	exitFailed = cli.ExitFailed
	exitUsage  = cli.ExitUsage
)

const tool = "tamavisor-snap"

// options are the flags of all commands; each command defines its own.
type options struct {
	json       bool
	keyFile    string
	sector     int
	generation uint64
	size       string
	dir        string
	force      bool
}

// command is one subcommand: its positional arguments, what it does, its
// flags and how it runs.
type command struct {
	name  string
	args  []string
	about string
	flags func(fs *flag.FlagSet, o *options)
	run   func(o *options, keys [][]byte, pos []string, stdout, stderr io.Writer) int
}

func diskFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.keyFile, "key-file", "", "read the snapshot HMAC key from file `F`: its bytes as they are, as make qemu KEYFILE=F gives them to tamavisor, "+
		"or without a trailing newline (a note then says so)")
	fs.IntVar(&o.sector, "sector", 512, "sector size `N` of the disk image: 512, 1024, 2048 or 4096")
}

var commands = []*command{
	{name: "inspect", args: []string{"DISK"},
		about: "show both commit records and, for each valid one, the header, manifest, vm chunk (name, RAM), vCPU registers, chunk table and RAM summary",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.BoolVar(&o.json, "json", false, "print JSON (snake_case names, numbers as numbers)")
			diskFlags(fs, o)
		},
		run: func(o *options, keys [][]byte, pos []string, stdout, stderr io.Writer) int {
			return inspect(pos[0], o.sector, keys, o.json, stdout, stderr)
		}},
	{name: "verify", args: []string{"DISK"},
		about: "exit 0 if restore will accept the newest snapshot (or generation N): its integrity, then tamavisor's own restore " +
			"(kernel.Restore) on a scratch machine, which needs memory for the guest's RAM; the host-specific checks (CPUID features, " +
			"MXCSR_MASK, XSAVE components) are made against the most capable host, not this one",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.Uint64Var(&o.generation, "generation", 0, "check generation `N`, which make qemu RESTORE_GEN=N restores (default: the newest, which RESTORE=1 restores)")
			diskFlags(fs, o)
		},
		run: func(o *options, keys [][]byte, pos []string, stdout, stderr io.Writer) int {
			return verify(pos[0], o.generation, o.sector, keys, stdout, stderr)
		}},
	{name: "extract-ram", args: []string{"DISK", "OUT"},
		about: "write a snapshot's guest RAM to OUT, byte offset = guest-physical address: the newest valid one (saying so on stderr if it is not the newest), " +
			"or generation N; integrity is checked, not whether restore accepts it",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.Uint64Var(&o.generation, "generation", 0, "extract generation `N` (default: the newest valid snapshot)")
			diskFlags(fs, o)
		},
		run: func(o *options, keys [][]byte, pos []string, stdout, stderr io.Writer) int {
			return extractRAM(pos[0], pos[1], o.generation, o.sector, keys, stdout, stderr)
		}},
	{name: "bench", args: nil,
		about: "time a plain sequential write of guest RAM, a save (the hypervisor's writer), one decode pass and a Store.Load, on a scratch file",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.StringVar(&o.size, "size", "256MiB", "guest RAM `SIZE`: bytes, or with KiB/MiB/GiB; 2MiB to 1GiB, a multiple of 4 KiB")
			fs.StringVar(&o.dir, "dir", os.TempDir(), "directory `DIR` for the scratch disk image")
		},
		run: func(o *options, _ [][]byte, _ []string, stdout, stderr io.Writer) int {
			sz, err := parseSize(o.size)
			if err != nil {
				return usageError(stderr, "bench", fmt.Errorf("--size: %w", err))
			}
			return bench(sz, o.dir, stdout, stderr)
		}},
	{name: "demo", args: []string{"DISK"},
		about: "write a disk image holding two snapshots (generations 1 and 2) of a small demo guest, made by the hypervisor's own code, " +
			"that `make qemu DISK=DISK RESTORE=1` resumes; refuses a DISK that is not empty or blank",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.StringVar(&o.size, "size", "8MiB", "guest RAM `SIZE`: bytes, or with KiB/MiB/GiB; 2MiB to 1GiB, a multiple of 4 KiB")
			fs.BoolVar(&o.force, "force", false, "overwrite DISK even if it holds snapshots or other data")
		},
		run: func(o *options, _ [][]byte, pos []string, stdout, stderr io.Writer) int {
			sz, err := parseSize(o.size)
			if err != nil {
				return usageError(stderr, "demo", fmt.Errorf("--size: %w", err))
			}
			return demo(pos[0], sz, o.force, stdout, stderr)
		}},
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (c *command) flagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs, o)
	return fs
}

// usage writes the usage of cmds.
func usage(w io.Writer, cmds ...*command) {
	all := len(cmds) == 0
	if all {
		cmds = commands
		fmt.Fprintf(w, "usage: %s COMMAND [flags] ARGS...\n\n", tool)
		fmt.Fprintf(w, "Inspects, verifies and extracts tamavisor snapshots on a disk image. Flags may\n"+
			"come before or after the arguments; \"--\" ends the flags.\n\ncommands:\n")
	}
	for _, c := range cmds {
		line := "  " + tool + " " + c.name
		var o options
		fs := c.flagSet(&o)
		fs.VisitAll(func(f *flag.Flag) {
			name, _ := flag.UnquoteUsage(f)
			if name == "" {
				line += " [--" + f.Name + "]"
			} else {
				line += " [--" + f.Name + " " + name + "]"
			}
		})
		for _, a := range c.args {
			line += " " + a
		}
		fmt.Fprintf(w, "%s\n%s", line, wrap(c.about, "      "))
		fs.VisitAll(func(f *flag.Flag) {
			name, help := flag.UnquoteUsage(f)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				help += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, "      %s\n%s", strings.TrimSpace("--"+f.Name+" "+name), wrap(help, "          "))
		})
	}
	if all {
		fmt.Fprintf(w, "  %s help [COMMAND]\n      this text, or one command's\n", tool)
		fmt.Fprintf(w, "\nexit status: 0 ok; 1 a check or an operation failed (the message says which);\n2 usage error (unknown command or flag, bad value, missing or extra argument).\n")
	}
}

// wrap breaks text into lines of at most 80 columns, each starting with
// indent.
func wrap(text, indent string) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > 80 {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}

// usageError reports a malformed command line on stderr.
func usageError(stderr io.Writer, cmd string, err error) int {
	if cmd == "" {
		fmt.Fprintf(stderr, "%s: %v\nrun '%s help' for usage\n", tool, err, tool)
	} else {
		fmt.Fprintf(stderr, "%s: %s: %v\nrun '%s help %s' for usage\n", tool, cmd, err, tool, cmd)
	}
	return exitUsage
}

// run executes one command and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name, args := splitCommand(args)
	if cli.IsHelp(name) {
		switch {
		case len(args) == 0:
			usage(stdout)
			return exitOK
		case lookup(args[0]) == nil:
			return usageError(stderr, "help", fmt.Errorf("no command %q (commands: %s)", args[0], names()))
		case len(args) > 1:
			return usageError(stderr, "help", fmt.Errorf("unexpected argument %q (help takes one COMMAND)", args[1]))
		}
		usage(stdout, lookup(args[0]))
		return exitOK
	}
	c := lookup(name)
	if c == nil {
		return usageError(stderr, "", fmt.Errorf("unknown command %q (commands: %s)", name, names()))
	}
	o := options{sector: 512}
	fs := c.flagSet(&o)
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, cli.ErrHelp) {
		usage(stdout, c)
		return exitOK
	}
	if err == nil {
		err = cli.Args(pos, c.args...)
	}
	if err == nil && (o.sector < 512 || o.sector > 4096 || o.sector&(o.sector-1) != 0) {
		err = fmt.Errorf("--sector %d: must be 512, 1024, 2048 or 4096", o.sector)
	}
	if err == nil && o.generation == 0 && flagSet(fs, "generation") {
		err = errors.New("--generation 0: generations start at 1")
	}
	if err != nil {
		return usageError(stderr, c.name, err)
	}
	var keys [][]byte
	if o.keyFile != "" {
		b, err := os.ReadFile(o.keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s: --key-file: %v\n", tool, c.name, err)
			return exitFailed
		}
		if len(b) == 0 {
			fmt.Fprintf(stderr, "%s: %s: --key-file %s is empty\n", tool, c.name, o.keyFile)
			return exitFailed
		}
		keys = keyFileKeys(b)
	}
	return c.run(&o, keys, pos, stdout, stderr)
}

// splitCommand returns the command name and the other arguments: flags may
// come before the command too (tamavisor-snap --sector 4096 inspect DISK).
func splitCommand(args []string) (string, []string) {
	valued := map[string]bool{}
	var o options
	for _, c := range commands {
		c.flagSet(&o).VisitAll(func(f *flag.Flag) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				valued[f.Name] = true
			}
		})
	}
	i := 0
	for i < len(args) && len(args[i]) > 1 && args[i][0] == '-' && args[i] != "--" && !cli.IsHelp(args[i]) {
		name := strings.TrimLeft(args[i], "-")
		if _, _, hasValue := strings.Cut(name, "="); !hasValue && valued[name] {
			i++ // its value
		}
		i++
	}
	if i >= len(args) {
		return args[0], args[1:] // no command: the first flag is reported as one
	}
	rest := append(append([]string{}, args[:i]...), args[i+1:]...)
	return args[i], rest
}

func names() string {
	var n []string
	for _, c := range commands {
		n = append(n, c.name)
	}
	return strings.Join(append(n, "help"), ", ")
}

// flagSet reports whether flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// parseSize parses a guest RAM size: "256MiB", "1GiB", "4M", "2097152"
// (bytes). It must be a multiple of 4 KiB from 2 MiB to the hypervisor's
// largest guest (kernel.MaxGuestRAM).
func parseSize(s string) (uint64, error) {
	num, mult := s, uint64(1)
	for _, u := range []struct {
		suffix string
		m      uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSuffix(num, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 8MiB, 1GiB, 4194304)", s)
	}
	if n > kernel.MaxGuestRAM/mult {
		return 0, fmt.Errorf("%q is more than tamavisor's largest guest (%d MiB)", s, kernel.MaxGuestRAM>>20)
	}
	n *= mult
	if n%4096 != 0 || n < 2<<20 {
		return 0, fmt.Errorf("%q (%d bytes) must be a multiple of 4096 and at least 2MiB", s, n)
	}
	return n, nil
}
