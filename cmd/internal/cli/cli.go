// Package cli holds the command-line conventions of tamavisor's host tools
// (tamavisor, tamavisor-snap): flags may come before, between or after the
// positional arguments, "--" ends the flags, and the exit status is ExitOK,
// ExitFailed or ExitUsage.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit statuses, the same for every host tool.
const (
	ExitOK     = 0 // done; for a check: it passed
	ExitFailed = 1 // a check failed, or the operation failed (including files that cannot be read or written)
	ExitUsage  = 2 // a malformed command line: unknown command or flag, bad value, missing or extra argument
)

// ErrHelp is returned by Parse for -h, -help or --help.
var ErrHelp = flag.ErrHelp

// Parse parses args with fs, which must use flag.ContinueOnError, and
// returns the positional arguments. Unlike fs.Parse it does not stop at the
// first positional argument: flags may follow it. After "--" everything is
// positional. Errors name the flag and say what is wrong; fs prints nothing.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, ErrHelp
			}
			return nil, flagError(fs, err)
		}
		rest := fs.Args()
		// fs.Parse stops at the first non-flag argument, or after "--".
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagError rewords the flag package's errors with the flags spelled as
// the usage spells them (--name) and, for an unknown flag, the known ones.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		var known []string
		fs.VisitAll(func(f *flag.Flag) { known = append(known, "--"+f.Name) })
		if len(known) == 0 {
			return fmt.Errorf("unknown flag --%s (this command has no flags)", name)
		}
		return fmt.Errorf("unknown flag --%s (flags: %s)", name, strings.Join(known, ", "))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("--%s needs a value", name)
	}
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		// invalid value "v" for flag -name: why
		if val, rest, ok := strings.Cut(rest, " for flag -"); ok {
			if name, why, ok := strings.Cut(rest, ": "); ok {
				switch why {
				case "parse error":
					why = "not a valid value"
				case "value out of range":
					why = "out of range"
				}
				return fmt.Errorf("--%s %s: %s", name, val, why)
			}
		}
	}
	return err
}

// IsHelp reports whether arg asks for help: "help", "-h", "-help" or
// "--help".
func IsHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// Args checks the number of positional arguments against names (the
// arguments a command takes, in order): it names a missing one, or the
// first extra one.
func Args(pos []string, names ...string) error {
	switch {
	case len(pos) < len(names):
		return fmt.Errorf("missing %s", names[len(pos)])
	case len(pos) > len(names):
		if len(names) == 0 {
			return fmt.Errorf("unexpected argument %q (this command takes none)", pos[len(names)])
		}
		return fmt.Errorf("unexpected argument %q (the arguments are %s)", pos[len(names)], strings.Join(names, " "))
	}
	return nil
}
