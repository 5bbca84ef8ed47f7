// Command testrun runs one stage of `make test` (unit, fuzz or e2e) and
// appends a one-line summary of it to a file, so that `make test` can end
// with one line per stage: counts and times, and which stage failed.
//
//	go run ./internal/testrun -stage unit -summary FILE
//	go run ./internal/testrun -stage fuzz -summary FILE [-budget-scale F]
//	go run ./internal/testrun -stage e2e  -summary FILE -- [go test flags]
//	go run ./internal/testrun -report FILE
//
// Tests run under `go test -json`; passing tests are listed one line
// each, a failing test's whole output is printed when it ends.
//
// Fuzz targets run with an execution-count budget (-fuzztime Nx), never a
// time budget: Go's coordinator can race its own -fuzztime deadline under
// CPU load and fail a run that found nothing ("context deadline exceeded",
// golang/go issue 75804, in every Go 1.26.x). A count has no deadline to
// race. Any failure of a counted run is real (a panic, a failing input
// written to testdata/fuzz) and fails the stage.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// fuzzBudgets is each fuzz target's execution count, sized to about the
// 20 s each target had before on the 2-core CI machine while it was busy
// (measured with -fuzztime 10s); targets not listed get defaultBudget.
var fuzzBudgets = map[string]int{
	"FuzzDecode":      300000,
	"FuzzStoreLoad":   12000,
	"FuzzManifest":    300000,
	"FuzzChain":       300000,
	"FuzzChainStore":  12000,
	"FuzzLazyOpen":    30000,
	"FuzzLazyChain":   5000,  // each run opens and decodes a chain of three streams
	"FuzzIO":          150,   // each run drives a fake device through timeouts
	"FuzzCompletions": 25000, // each run brings up a fake NVMe controller
	"FuzzParseImage":  300000,
	"FuzzExits":       500, // each run builds a VM and a snapshot store
	"FuzzLength":      25000,
	"FuzzUART16550":   300000,
}

const defaultBudget = 50000

func main() {
	stage := flag.String("stage", "", "unit, fuzz or e2e")
	summary := flag.String("summary", "", "file to append the stage's summary line to")
	report := flag.String("report", "", "print the summary file and exit 1 if a stage failed")
	scale := flag.Float64("budget-scale", 1, "multiply every fuzz budget (FUZZSCALE)")
	listFuzz := flag.Bool("list-fuzz", false, "print each fuzz target's package, name and budget, and exit")
	flag.Parse()

	if *listFuzz {
		ts, err := fuzzTargets()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testrun:", err)
			os.Exit(1)
		}
		for _, t := range ts {
			fmt.Println(t.pkg, t.name, fuzzBudget(t.name, *scale))
		}
		return
	}

	if *report != "" {
		os.Exit(printReport(*report))
	}
	start := time.Now()
	var line string
	var ok bool
	switch *stage {
	case "unit":
		line, ok = unit()
	case "fuzz":
		line, ok = fuzz(*scale)
	case "e2e":
		line, ok = e2e(flag.Args())
	default:
		fmt.Fprintln(os.Stderr, "testrun: -stage must be unit, fuzz or e2e")
		os.Exit(2)
	}
	verdict := "ok  "
	if !ok {
		verdict = "FAIL"
	}
	line = fmt.Sprintf("%s %-5s %s in %s", verdict, *stage, line, time.Since(start).Round(time.Second))
	fmt.Println("testrun:", line)
	if *summary != "" {
		f, err := os.OpenFile(*summary, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
	if !ok {
		os.Exit(1)
	}
}

// printReport prints the summary lines and returns 1 if one failed or a
// stage is missing (it did not run to its end).
func printReport(path string) int {
	b, _ := os.ReadFile(path)
	fmt.Println("== make test summary ==")
	status := 0
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		fmt.Println(l)
		if strings.HasPrefix(l, "FAIL") {
			status = 1
		}
		if f := strings.Fields(l); len(f) > 1 {
			seen[f[1]] = true
		}
	}
	for _, s := range []string{"unit", "fuzz", "e2e"} {
		if !seen[s] {
			fmt.Printf("FAIL %-5s did not run to its end\n", s)
			status = 1
		}
	}
	return status
}

func unit() (string, bool) {
	if err := run(os.Stdout, "go", "vet", "./..."); err != nil {
		return "go vet failed", false
	}
	c, err := goTestJSON(false, "./...")
	return c.String(), err == nil && c.fail == 0
}

func e2e(extra []string) (string, bool) {
	args := append([]string{"-count=1", "-tags", "e2e"}, extra...)
	c, err := goTestJSON(true, append(args, "./qemu/")...)
	return c.String(), err == nil && c.fail == 0
}

// fuzzTarget is one fuzz target of a package.
type fuzzTarget struct{ pkg, name string }

// fuzzTargets lists every fuzz target of every package of the module.
func fuzzTargets() ([]fuzzTarget, error) {
	pkgs, err := output("go", "list", "./...")
	if err != nil {
		return nil, fmt.Errorf("go list failed")
	}
	var ts []fuzzTarget
	for _, pkg := range strings.Fields(pkgs) {
		list, err := output("go", "test", "-list", "^Fuzz", pkg)
		if err != nil {
			fmt.Print(list)
			return nil, fmt.Errorf("go test -list failed in %s", pkg)
		}
		for _, target := range strings.Fields(list) {
			if strings.HasPrefix(target, "Fuzz") {
				ts = append(ts, fuzzTarget{pkg, target})
			}
		}
	}
	return ts, nil
}

// fuzz runs every fuzz target of every package with its budget.
func fuzz(scale float64) (string, bool) {
	ts, err := fuzzTargets()
	if err != nil {
		return err.Error(), false
	}
	var n, failed int
	var failures []string
	var execs int
	for _, t := range ts {
		budget := fuzzBudget(t.name, scale)
		n++
		execs += budget
		t0 := time.Now()
		fmt.Printf("fuzz %s %s (%d execs)\n", t.pkg, t.name, budget)
		if err := run(os.Stdout, "go", fuzzArgs(t.pkg, t.name, budget)...); err != nil {
			failed++
			failures = append(failures, t.name)
			fmt.Printf("fuzz %s: FAIL after %s\n", t.name, time.Since(t0).Round(time.Second))
		}
	}
	s := fmt.Sprintf("%d targets, %d failed, %d execs", n, failed, execs)
	if failed > 0 {
		s += " (" + strings.Join(failures, ", ") + ")"
	}
	return s, failed == 0 && n > 0
}

// fuzzBudget is target's execution count, scaled (at least 1).
func fuzzBudget(target string, scale float64) int {
	budget, ok := fuzzBudgets[target]
	if !ok {
		budget = defaultBudget
	}
	return max(1, int(float64(budget)*scale))
}

// fuzzArgs is the go command line fuzzing target with a budget of execs
// runs: counts for both the run and the minimization, no deadline.
func fuzzArgs(pkg, target string, execs int) []string {
	return []string{"test", "-run", "^$", "-fuzz", "^" + target + "$",
		"-fuzztime", fmt.Sprintf("%dx", execs), "-fuzzminimizetime", fmt.Sprintf("%dx", minimizeExecs), pkg}
}

// minimizeExecs bounds the minimization of a new input or a crasher.
const minimizeExecs = 2000

// counts of test results.
type counts struct{ pass, fail, skip, pkgFail int }

func (c counts) String() string {
	s := fmt.Sprintf("%d passed, %d failed, %d skipped", c.pass, c.fail, c.skip)
	if c.pkgFail > 0 {
		s += fmt.Sprintf(", %d packages failed to build or run", c.pkgFail)
	}
	return s
}

// testEvent is one line of `go test -json` (cmd/test2json).
type testEvent struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// goTestJSON runs go test -json with args, printing a line per passed test
// (verbose) or per package, and the whole output of each failure.
func goTestJSON(verbose bool, args ...string) (counts, error) {
	var c counts
	cmd := exec.Command("go", append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return c, err
	}
	if err := cmd.Start(); err != nil {
		return c, err
	}
	logs := map[string][]string{}   // package/test -> output so far
	testFailed := map[string]bool{} // packages with a failed test
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e testEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Println(sc.Text()) // build errors come as plain text
			continue
		}
		key := e.Package + "/" + e.Test
		switch e.Action {
		case "output":
			logs[key] = append(logs[key], e.Output)
		case "pass", "fail", "skip":
			if e.Test == "" {
				if e.Action == "fail" && !testFailed[e.Package] {
					// Failed without a failing test: build error, panic, timeout.
					c.pkgFail++
					fmt.Printf("FAIL %s\n%s", e.Package, strings.Join(logs[key], ""))
				} else if e.Action == "fail" {
					fmt.Printf("FAIL %s\n", e.Package)
				} else if !verbose {
					fmt.Printf("ok   %s (%.1fs)\n", e.Package, e.Elapsed)
				}
				delete(logs, key)
				continue
			}
			switch e.Action {
			case "pass":
				c.pass++
				if verbose {
					fmt.Printf("--- PASS: %s (%.1fs)\n", e.Test, e.Elapsed)
				}
			case "skip":
				c.skip++
				if verbose {
					fmt.Printf("--- SKIP: %s\n", e.Test)
				}
			case "fail":
				c.fail++
				testFailed[e.Package] = true
				fmt.Printf("--- FAIL: %s %s (%.1fs)\n%s", e.Package, e.Test, e.Elapsed, strings.Join(logs[key], ""))
			}
			delete(logs, key)
		}
	}
	err = cmd.Wait()
	// A package that failed without a failing test (a build error, a
	// timeout panic) still fails the stage through pkgFail and err.
	if err != nil && c.fail == 0 && c.pkgFail == 0 {
		c.pkgFail++
		keys := make([]string, 0, len(logs))
		for k := range logs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Print(strings.Join(logs[k], ""))
		}
	}
	return c, err
}

func run(w io.Writer, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	return cmd.Run()
}

func output(name string, args ...string) (string, error) {
	b, err := exec.Command(name, args...).CombinedOutput()
	return string(b), err
}
