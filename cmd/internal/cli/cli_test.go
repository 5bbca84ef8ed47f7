package cli

import (
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		json bool
		n    int
	}{
		{[]string{"--json", "a", "b"}, []string{"a", "b"}, true, 0},
		{[]string{"a", "--json", "b", "--n", "3"}, []string{"a", "b"}, true, 3},
		{[]string{"a", "b", "-n=4", "-json"}, []string{"a", "b"}, true, 4},
		{[]string{"a", "--", "--json", "-n"}, []string{"a", "--json", "-n"}, false, 0},
		{[]string{"-", "x"}, []string{"-", "x"}, false, 0},
		{nil, nil, false, 0},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		j := fs.Bool("json", false, "")
		n := fs.Int("n", 0, "")
		pos, err := Parse(fs, tc.args)
		if err != nil || !reflect.DeepEqual(pos, tc.pos) || *j != tc.json || *n != tc.n {
			t.Errorf("Parse(%q) = %q, %v, json %v, n %d; want %q, json %v, n %d", tc.args, pos, err, *j, *n, tc.pos, tc.json, tc.n)
		}
	}
}

func TestParseErrors(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Int("n", 0, "")
	for args, want := range map[string]string{
		"a --nope":  "unknown flag --nope (flags: --n)",
		"a -n x":    `--n "x": not a valid value`,
		"a -n":      "--n needs a value",
		"-n 1e99 a": `--n "1e99": not a valid value`,
	} {
		if _, err := Parse(fs, strings.Fields(args)); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
	for _, h := range []string{"-h", "--help", "-help"} {
		if _, err := Parse(fs, []string{"a", h}); !errors.Is(err, ErrHelp) {
			t.Errorf("%s: %v", h, err)
		}
	}
}

func TestArgs(t *testing.T) {
	if err := Args([]string{"d"}, "DISK"); err != nil {
		t.Error(err)
	}
	if err := Args(nil, "DISK", "OUT"); err == nil || err.Error() != "missing DISK" {
		t.Errorf("missing: %v", err)
	}
	if err := Args([]string{"d"}, "DISK", "OUT"); err == nil || err.Error() != "missing OUT" {
		t.Errorf("missing second: %v", err)
	}
	if err := Args([]string{"d", "e"}, "DISK"); err == nil || !strings.Contains(err.Error(), `unexpected argument "e"`) {
		t.Errorf("extra: %v", err)
	}
	if err := Args([]string{"e"}); err == nil || !strings.Contains(err.Error(), "takes none") {
		t.Errorf("extra, none taken: %v", err)
	}
}
