package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFuzzBudgetsAreCounts: every fuzz run has an execution-count budget
// for both fuzzing and minimization, never a duration. A duration makes
// Go's coordinator race its own deadline (golang/go issue 75804: under CPU
// load it fails a run that found nothing with "context deadline
// exceeded"); internal/fuzz sets no deadline at all for a count.
func TestFuzzBudgetsAreCounts(t *testing.T) {
	targets := []string{"FuzzNotListed"}
	for k := range fuzzBudgets {
		targets = append(targets, k)
	}
	for _, target := range targets {
		for _, scale := range []float64{1, 0.0001, 4} {
			n := fuzzBudget(target, scale)
			if n < 1 {
				t.Fatalf("%s scale %v: budget %d", target, scale, n)
			}
			args := fuzzArgs("tamavisor/x", target, n)
			for i, a := range args {
				if a != "-fuzztime" && a != "-fuzzminimizetime" {
					continue
				}
				v := args[i+1]
				if !strings.HasSuffix(v, "x") {
					t.Errorf("%s %s %q is not a count", target, a, v)
				}
				if _, err := time.ParseDuration(v); err == nil {
					t.Errorf("%s %s %q parses as a duration", target, a, v)
				}
			}
			if !strings.Contains(strings.Join(args, " "), "-fuzz ^"+target+"$") {
				t.Errorf("args %v do not select %s alone", args, target)
			}
		}
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.txt")
	os.WriteFile(p, []byte("ok   unit  1 passed in 1s\nok   fuzz  2 targets in 2s\nok   e2e   3 passed in 3s\n"), 0o644)
	if got := printReport(p); got != 0 {
		t.Errorf("all stages ok: status %d", got)
	}
	os.WriteFile(p, []byte("ok   unit  1 passed in 1s\nFAIL fuzz  2 targets, 1 failed in 2s\nok   e2e   3 passed in 3s\n"), 0o644)
	if got := printReport(p); got != 1 {
		t.Errorf("a failed stage: status %d", got)
	}
	os.WriteFile(p, []byte("ok   unit  1 passed in 1s\n"), 0o644)
	if got := printReport(p); got != 1 {
		t.Errorf("missing stages: status %d", got)
	}
}
