//go:build tamago && amd64

package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"tamavisor/boot"
	"tamavisor/boot/fwcfg"
	"tamavisor/kernel"
	"tamavisor/kernel/fuzzguest"
)

// The hostile-guest runs (docs/security.md, `make test`, `make
// fuzz-guests`): many guests in one boot, each run to a classified end
// (kernel.Class*), the hypervisor carrying on with the next. A recovered
// hypervisor error (kernel.ClassCrash) fails the run.
//
//	mode hostile      every fw_cfg file under opt/tamavisor/suite/, in name order;
//	                  a name ending in @<duration> sets that guest's time budget
//	mode fuzz-guests  the random guests of opt/tamavisor/seeds ("216,1000+500")
const (
	cfgSuitePrefix = "opt/tamavisor/suite/"
	cfgSeeds       = "opt/tamavisor/seeds"
	cfgBudget      = "opt/tamavisor/budget"
	maxBudgetLen   = 32
	maxSeedsLen    = 1024

	// suiteBudget and suiteExits bound each hostile guest (a name's
	// @<duration> overrides the time): a stop for the guests that never
	// end; the million-exit storm gets more.
	suiteBudget = 2 * time.Second
	suiteExits  = 3_000_000
	// fuzzBudget and fuzzExits bound each random guest.
	fuzzBudget = 20 * time.Millisecond
	fuzzExits  = 20_000
	// maxFuzzSeeds bounds one run's seed count.
	maxFuzzSeeds = 1_000_000
)

// guestBudget is the time budget of the guest of a normal run
// (opt/tamavisor/budget), 0 for none.
var guestBudget time.Duration

// readBudget reads opt/tamavisor/budget, a Go duration ("30s", "2m").
func readBudget(cfg *fwcfg.Device) (time.Duration, error) {
	if _, ok := cfg.Lookup(cfgBudget); !ok {
		return 0, nil // none given
	}
	b, err := cfg.ReadFile(cfgBudget, maxBudgetLen)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", cfgBudget, err)
	}
	d, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive duration such as 30s", cfgBudget, b)
	}
	return d, nil
}

// tally counts the classes of the VMs' ends.
type tally map[string]int

func (t tally) String() string {
	var keys []string
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, t[k]))
	}
	return strings.Join(parts, ", ")
}

// runHostile runs every guest under opt/tamavisor/suite/ and returns the
// power-off status: 0 when no guest made the hypervisor fail and the
// health-check guest still runs after them all.
func runHostile(plat *kernel.Platform, cfg *fwcfg.Device) int {
	var names []string
	for _, f := range cfg.Files() {
		if strings.HasPrefix(f.Name, cfgSuitePrefix) {
			names = append(names, f.Name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		logf("error: mode hostile: no guests under %s", cfgSuitePrefix)
		return boot.StatusBadImage
	}
	t, crashed := tally{}, 0
	for _, name := range names {
		short := strings.TrimPrefix(name, cfgSuitePrefix)
		budget := suiteBudget
		if base, b, ok := strings.Cut(short, "@"); ok {
			d, err := time.ParseDuration(b)
			if err != nil || d <= 0 {
				logf("error: %s: %q is not a duration", name, b)
				return boot.StatusBadImage
			}
			short, budget = base, d
		}
		class, why := runOne(plat, cfg, name, budget, suiteExits)
		t[class]++
		if class == kernel.ClassCrash || class == "internal" {
			crashed++
		}
		logf("hostile %s: %s: %s", short, class, why)
	}
	return suiteEnd(plat, "hostile", len(names), t, crashed)
}

// runOne runs the guest image in fw_cfg file name with a budget and
// returns its class and what happened.
func runOne(plat *kernel.Platform, cfg *fwcfg.Device, name string, budget time.Duration, exits uint64) (class, why string) {
	b, err := cfg.ReadFile(name, maxImage)
	if err != nil {
		return "refused", err.Error()
	}
	img, err := kernel.ParseImage(b)
	if err != nil {
		return "refused", err.Error()
	}
	return runImage(plat, img, budget, exits)
}

// runImage runs one guest to its end with a budget.
func runImage(plat *kernel.Platform, img *kernel.Image, budget time.Duration, exits uint64) (class, why string) {
	vm, err := kernel.NewVM(plat, img)
	if err != nil {
		return "internal", err.Error()
	}
	if err := vm.SetBudget(budget, exits); err != nil {
		vm.Destroy()
		return "internal", err.Error()
	}
	stop := vm.Run()
	n := vm.VCPU.Exits
	vm.Destroy()
	return stop.Class, fmt.Sprintf("%v (%d exits)", stop, n)
}

// runFuzzGuests runs the random guests of the seeds in opt/tamavisor/seeds
// with their console output discarded, printing one line per guest, and
// returns the power-off status as runHostile does.
func runFuzzGuests(plat *kernel.Platform, cfg *fwcfg.Device) int {
	ranges, err := readSeeds(cfg)
	if err != nil {
		logf("error: %v", err)
		return boot.StatusBadImage
	}
	console := plat.GuestOutput
	plat.GuestOutput = io.Discard
	t, crashed, n := tally{}, 0, 0
	start := time.Now()
	for _, r := range ranges {
		for seed := r.first; seed < r.first+r.count; seed++ {
			img := fuzzguest.Image(seed)
			class, why := runImage(plat, img, fuzzBudget, fuzzExits)
			t[class]++
			n++
			if class == kernel.ClassCrash || class == "internal" {
				crashed++
				logf("fuzz-guests seed %d (%d-bit): HYPERVISOR FAILURE: %s: %s", seed, img.Mode, class, why)
			} else {
				logf("fuzz-guests seed %d (%d-bit): %s: %s", seed, img.Mode, class, why)
			}
		}
	}
	plat.GuestOutput = console
	logf("fuzz-guests: seeds %v in %v", ranges, time.Since(start).Round(time.Millisecond))
	return suiteEnd(plat, "fuzz-guests", n, t, crashed)
}

// seedRange is count seeds from first.
type seedRange struct{ first, count uint64 }

// readSeeds reads a comma-separated list of "first+count" ranges (count
// defaults to 1), e.g. "216,417,1000+500".
func readSeeds(cfg *fwcfg.Device) ([]seedRange, error) {
	b, err := cfg.ReadFile(cfgSeeds, maxSeedsLen)
	if err != nil {
		return nil, fmt.Errorf("mode fuzz-guests needs %s (first+count): %v", cfgSeeds, err)
	}
	s := strings.TrimSpace(string(b))
	var rs []seedRange
	total := uint64(0)
	for _, item := range strings.Split(s, ",") {
		f, c, ok := strings.Cut(strings.TrimSpace(item), "+")
		if !ok {
			c = "1"
		}
		first, err1 := strconv.ParseUint(f, 10, 64)
		count, err2 := strconv.ParseUint(c, 10, 64)
		if err1 != nil || err2 != nil || count == 0 || count > maxFuzzSeeds-total || first+count < first {
			return nil, fmt.Errorf("%s: %q is not a list of first+count (at most %d seeds)", cfgSeeds, s, maxFuzzSeeds)
		}
		total += count
		rs = append(rs, seedRange{first, count})
	}
	return rs, nil
}

// suiteEnd prints the summary line, runs the health-check guest and
// returns the run's status.
func suiteEnd(plat *kernel.Platform, what string, n int, t tally, crashed int) int {
	status := 0
	if crashed > 0 {
		status = boot.StatusInternal
	}
	logf("%s: %d guests: %v; hypervisor failures %d", what, n, t, crashed)
	return healthCheck(plat, status)
}

func (r seedRange) String() string { return fmt.Sprintf("%d+%d", r.first, r.count) }
