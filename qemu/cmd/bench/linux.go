package main

// The Linux section of `make bench`: the cached Debian kernel and busybox
// initramfs (guests/linux/fetch.sh, in LINUX_DIR) booted to the shell under
// tamavisor and, in the same run, directly by QEMU on its q35 machine,
// alternately; then the exit profile of one boot under tamavisor.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"tamavisor/qemu"
)

// linuxRuns is the number of boots of each kind per CPU model and command
// line (the medians of `make bench`).
const linuxRuns = 3

// tamavisorCmdline is tamavisor's default Linux command line,
// defaultLinuxCmdline in linux.go at the repository's root. It must stay
// in step with it: the "quiet" rows pass it with " quiet" added (fw_cfg
// opt/tamavisor/cmdline replaces the default, it does not add to it).
const tamavisorCmdline = "console=ttyS0 earlyprintk=ttyS0 panic=-1 reboot=t tsc=reliable"

// directCmdline is the command line of the direct QEMU boots.
const directCmdline = "console=ttyS0 panic=-1 tsc=reliable"

// initMarker begins the line the initramfs's /init prints just before it
// starts the shell.
const initMarker = "tamavisor-linux: init"

// linuxPair is a CPU model under tamavisor and the one QEMU runs the same
// kernel on directly (the same model without SVM).
type linuxPair struct{ tamavisor, direct string }

var linuxPairs = []linuxPair{{"EPYC,+svm", "EPYC"}, {"max", "max"}}

// bootTimes is what one boot to the shell measured, from QEMU's start.
type bootTimes struct {
	ok        bool
	why       string        // why not ok
	first     time.Duration // the kernel's first line (0: none seen)
	shell     time.Duration // the init marker line
	uptime    float64       // the guest's /proc/uptime at the marker, s
	kmsgs     []string      // the kernel's lines before the marker, without timestamps
	exits     profile       // tamavisor only
	lastLines []string      // the output's tail, for a failure
}

// profile is the exit profile tamavisor prints when the VM stops.
type profile struct {
	ok                bool
	exits, irqs, mmio int
	reasons           []reasonCount
	stop              string // how the VM stopped
}

type reasonCount struct {
	name string
	n    int
}

var (
	kernelLine = regexp.MustCompile(`\[\s*[0-9]+\.[0-9]+\] |Linux version `)
	stamp      = regexp.MustCompile(`^.*?\[\s*[0-9]+\.[0-9]+\] `)
	// The terminal controls SeaBIOS and the kernel print on the direct
	// boots (ESC c, ESC [?7l, ESC [2J ...): the init line can follow them.
	escapes  = regexp.MustCompile("\x1b(\\[[0-9;?]*[A-Za-z]|[A-Za-z])")
	stopLine = regexp.MustCompile(`^tamavisor: vm linux: (.*) \(([0-9]+) exits, ([0-9]+) interrupts injected, ([0-9]+) MMIO accesses\)$`)
	uptimeRe = regexp.MustCompile(`init \(([0-9.]+) s since boot`)
)

// linuxBench runs the Linux section and prints its tables.
func linuxBench(qemuBin, elf string) bool {
	dir := os.Getenv("LINUX_DIR")
	if dir == "" {
		fmt.Println("== Linux guest: skipped (LINUX_DIR not set; make bench sets it)")
		return true
	}
	kernel, initrd := filepath.Join(dir, "bzImage"), filepath.Join(dir, "initramfs.cpio.gz")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench: Linux guest file missing (guests/linux/fetch.sh fetches it): %v\n", err)
			return false
		}
	}
	if qemuBin == "" {
		qemuBin = "qemu-system-x86_64"
	}
	version := "?"
	if v, err := os.ReadFile(filepath.Join(dir, "kernel-version")); err == nil {
		version = strings.TrimSpace(string(v))
	}

	type key struct {
		quiet bool
		pair  linuxPair
	}
	tv, direct := map[key][]bootTimes{}, map[key][]bootTimes{}
	ok := true
	for _, quiet := range []bool{false, true} {
		tvCmd, dCmd := tamavisorCmdline, directCmdline
		if quiet {
			tvCmd, dCmd = tvCmd+" quiet", dCmd+" quiet"
		}
		for _, p := range linuxPairs {
			k := key{quiet, p}
			for i := 0; i < linuxRuns; i++ {
				// Alternate, so that a slow spell of the host hits both.
				t := bootTamavisor(qemuBin, elf, p.tamavisor, kernel, initrd, tvCmd)
				d := bootDirect(qemuBin, p.direct, kernel, initrd, dCmd)
				for _, r := range []struct {
					what string
					b    bootTimes
				}{{"tamavisor -cpu " + p.tamavisor, t}, {"direct -cpu " + p.direct, d}} {
					if !r.b.ok {
						ok = false
						fmt.Fprintf(os.Stderr, "bench: Linux boot (%s, cmdline %q) failed: %s; last lines:\n  %s\n",
							r.what, map[bool]string{false: "default", true: "quiet"}[quiet], r.b.why,
							strings.Join(r.b.lastLines, "\n  "))
					}
				}
				tv[k] = append(tv[k], t)
				direct[k] = append(direct[k], d)
			}
		}
	}

	fmt.Printf("== Linux guest to the shell (%s, busybox initramfs; accel %s; %d boots each, alternating; median [min-max])\n",
		version, qemu.Accel(), linuxRuns)
	fmt.Printf("   from QEMU's start: tamavisor (microvm, tamavisor's loader) vs the same kernel+initramfs booted by QEMU directly (q35, -kernel)\n")
	fmt.Printf("   tamavisor cmdline: %s [+ quiet]\n", tamavisorCmdline)
	fmt.Printf("   direct cmdline:    %s [+ quiet]\n", directCmdline)
	fmt.Printf("  %-7s %-17s %-20s %-24s %-24s %7s\n", "cmdline", "-cpu tv / direct", "measure", "tamavisor", "direct", "ratio")
	for _, quiet := range []bool{false, true} {
		name := "default"
		if quiet {
			name = "quiet"
		}
		for _, p := range linuxPairs {
			k := key{quiet, p}
			cpus := p.tamavisor + " / " + p.direct
			rows := []struct {
				measure string
				get     func(bootTimes) (float64, bool)
			}{
				{"kernel's first line", func(b bootTimes) (float64, bool) { return b.first.Seconds(), b.ok && b.first > 0 }},
				{"shell (init line)", func(b bootTimes) (float64, bool) { return b.shell.Seconds(), b.ok }},
				{"  guest uptime then", func(b bootTimes) (float64, bool) { return b.uptime, b.ok && b.uptime > 0 }},
			}
			for _, r := range rows {
				ts, tsOK := stats(tv[k], r.get)
				ds, dsOK := stats(direct[k], r.get)
				ratio := "-"
				if tsOK && dsOK && ds.med > 0 {
					ratio = fmt.Sprintf("%.2fx", ts.med/ds.med)
				}
				fmt.Printf("  %-7s %-17s %-20s %-24s %-24s %7s\n", name, cpus, r.measure, ts.String(tsOK), ds.String(dsOK), ratio)
				name, cpus = "", ""
			}
		}
	}

	// The exit profile: the first boot under EPYC,+svm, with each cmdline.
	var profs []profile
	for _, quiet := range []bool{false, true} {
		var p profile
		for _, b := range tv[key{quiet, linuxPairs[0]}] {
			if b.exits.ok {
				p = b.exits
				break
			}
		}
		profs = append(profs, p)
	}
	if !printProfile(profs, []string{"default", "quiet"}) {
		ok = false
	}

	// With quiet the kernel prints only messages of loglevel <= 4
	// (warnings, errors): list them, from the first boot of each kind.
	fmt.Println("== Linux guest: what the kernel prints with quiet (warnings and errors), first boot of each")
	for _, p := range linuxPairs {
		k := key{true, p}
		for _, s := range []struct {
			what string
			bs   []bootTimes
		}{{"tamavisor -cpu " + p.tamavisor, tv[k]}, {"direct -cpu " + p.direct, direct[k]}} {
			if len(s.bs) == 0 || !s.bs[0].ok {
				fmt.Printf("  %s: (no boot to the shell)\n", s.what)
				continue
			}
			fmt.Printf("  %s: %d lines\n", s.what, len(s.bs[0].kmsgs))
			const most = 12
			for i, m := range s.bs[0].kmsgs {
				if i == most {
					fmt.Printf("    ... %d more\n", len(s.bs[0].kmsgs)-most)
					break
				}
				fmt.Printf("    %.110s\n", m)
			}
		}
	}
	return ok
}

// span is a median with its range.
type span struct{ med, min, max float64 }

func (s span) String(ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%6.2f s [%.2f-%.2f]", s.med, s.min, s.max)
}

// stats is the median, min and max of get over the boots where it is
// known; ok is false when there is none.
func stats(bs []bootTimes, get func(bootTimes) (float64, bool)) (s span, ok bool) {
	var v []float64
	for _, b := range bs {
		if x, ok := get(b); ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return s, false
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return span{med, v[0], v[len(v)-1]}, true
}

// printProfile prints the exit profiles side by side, one column pair
// (count, share of all exits) per boot.
func printProfile(ps []profile, names []string) bool {
	fmt.Printf("== Linux guest under tamavisor, -cpu %s: exit profile of one boot to the shell and poweroff\n", linuxPairs[0].tamavisor)
	ok := true
	var order []string
	counts := make([]map[string]int, len(ps))
	for i, p := range ps {
		if !p.ok {
			ok = false
			fmt.Printf("  (%s: no exit profile printed)\n", names[i])
		}
		counts[i] = map[string]int{}
		for _, r := range p.reasons {
			if _, seen := counts[0][r.name]; !seen && !slices.Contains(order, r.name) {
				order = append(order, r.name)
			}
			counts[i][r.name] = r.n
		}
	}
	// Largest first, by the first boot's counts, then the others'.
	slices.SortStableFunc(order, func(a, b string) int {
		for i := range ps {
			if d := counts[i][b] - counts[i][a]; d != 0 {
				return d
			}
		}
		return 0
	})
	fmt.Printf("  %-26s", "cmdline")
	for _, n := range names {
		fmt.Printf(" %19s", n)
	}
	fmt.Println()
	cell := func(n, total int) string {
		if total == 0 {
			return fmt.Sprintf("%19d", n)
		}
		return fmt.Sprintf("%11d %6.1f%%", n, 100*float64(n)/float64(total))
	}
	for _, r := range order {
		fmt.Printf("  %-26s", "exits: "+r)
		for i, p := range ps {
			fmt.Printf(" %s", cell(counts[i][r], p.exits))
		}
		fmt.Println()
	}
	for _, row := range []struct {
		name string
		get  func(profile) int
	}{
		{"exits, all", func(p profile) int { return p.exits }},
		{"interrupts injected", func(p profile) int { return p.irqs }},
		{"MMIO accesses (emulated)", func(p profile) int { return p.mmio }},
	} {
		fmt.Printf("  %-26s", row.name)
		for _, p := range ps {
			fmt.Printf(" %19d", row.get(p))
		}
		fmt.Println()
	}
	for i, p := range ps {
		if p.ok && !strings.HasPrefix(p.stop, "the guest powered off by ACPI S5") {
			fmt.Printf("  (%s: the VM stopped with: %s)\n", names[i], p.stop)
		}
		sum := 0
		for _, r := range p.reasons {
			sum += r.n
		}
		if p.ok && sum != p.exits {
			fmt.Printf("  (%s: the reasons add up to %d exits, not %d)\n", names[i], sum, p.exits)
		}
	}
	return ok
}

// bootTamavisor boots the Linux guest under tamavisor to the init marker,
// types poweroff there, and parses the exit profile printed at the end.
func bootTamavisor(qemuBin, elf, cpu, kernel, initrd, cmdline string) bootTimes {
	var typed bool
	start := time.Now()
	r, err := qemu.Run(qemu.Config{QEMU: qemuBin, ELF: elf, CPU: cpu, Kernel: kernel, Initrd: initrd,
		Cmdline: cmdline, Timeout: 4 * time.Minute,
		Respond: func(l qemu.Line) string {
			if !typed && isMarker(l.Text) {
				typed = true
				return "poweroff\n"
			}
			return ""
		}})
	if err != nil {
		return bootTimes{why: err.Error()}
	}
	b := measure(r.Lines, start)
	for i, l := range r.Lines {
		if m := stopLine.FindStringSubmatch(l.Text); m != nil {
			p := &b.exits
			p.stop = m[1]
			p.exits, _ = strconv.Atoi(m[2])
			p.irqs, _ = strconv.Atoi(m[3])
			p.mmio, _ = strconv.Atoi(m[4])
			if i+1 < len(r.Lines) {
				if s, found := strings.CutPrefix(r.Lines[i+1].Text, "tamavisor: vm linux: exits by reason: "); found {
					p.reasons = parseReasons(s)
					p.ok = true
				}
			}
		}
	}
	if s, ok := r.Status(); b.ok && (!ok || s != 0) {
		b.ok, b.why = false, fmt.Sprintf("QEMU exited with %d (timed out %v), not tamavisor status 0", r.ExitCode, r.TimedOut)
	}
	return b
}

// parseReasons parses "IOIO 123, NPF 45, ...".
func parseReasons(s string) []reasonCount {
	var rs []reasonCount
	for _, f := range strings.Split(s, ", ") {
		i := strings.LastIndexByte(f, ' ')
		if i < 0 {
			continue
		}
		n, err := strconv.Atoi(f[i+1:])
		if err != nil {
			continue
		}
		rs = append(rs, reasonCount{f[:i], n})
	}
	return rs
}

// bootDirect boots the kernel and initramfs directly in QEMU's q35 machine
// to the init marker and types poweroff there.
func bootDirect(qemuBin, cpu, kernel, initrd, cmdline string) bootTimes {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin, "-M", "q35", "-accel", qemu.Accel(), "-cpu", cpu, "-m", "256M",
		"-nographic", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return bootTimes{why: err.Error()}
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return bootTimes{why: err.Error()}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return bootTimes{why: err.Error()}
	}
	var lines []qemu.Line
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	typed := false
	for sc.Scan() {
		l := qemu.Line{Text: strings.TrimRight(sc.Text(), "\r"), At: time.Now()}
		lines = append(lines, l)
		if !typed && isMarker(l.Text) {
			typed = true
			io.WriteString(stdin, "poweroff\n")
		}
	}
	err = cmd.Wait()
	b := measure(lines, start)
	if b.ok && (err != nil || ctx.Err() != nil) {
		b.ok, b.why = false, fmt.Sprintf("QEMU: %v (timed out %v) %s", err, ctx.Err() != nil, strings.TrimSpace(stderr.String()))
	}
	return b
}

// isMarker reports whether a console line holds the init marker (after
// terminal controls or the rest of a line, on the direct boots).
func isMarker(text string) bool {
	return strings.Contains(escapes.ReplaceAllString(text, ""), initMarker)
}

// measure finds the kernel's first line and the init marker.
func measure(lines []qemu.Line, start time.Time) bootTimes {
	var b bootTimes
	for _, l := range lines {
		text := escapes.ReplaceAllString(l.Text, "")
		if kernelLine.MatchString(text) {
			if b.first == 0 {
				b.first = l.At.Sub(start)
			}
			b.kmsgs = append(b.kmsgs, stamp.ReplaceAllString(text, ""))
		}
		if isMarker(l.Text) {
			b.ok, b.shell = true, l.At.Sub(start)
			if m := uptimeRe.FindStringSubmatch(text); m != nil {
				b.uptime, _ = strconv.ParseFloat(m[1], 64)
			}
			break
		}
	}
	if !b.ok {
		b.why = "no init line (" + initMarker + ")"
		n := max(0, len(lines)-15)
		for _, l := range lines[n:] {
			b.lastLines = append(b.lastLines, l.Text)
		}
	}
	return b
}
