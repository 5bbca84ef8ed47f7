//go:build e2e

package qemu

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHostileGuests runs the hostile-guest suite in one boot per CPU
// model: every attack must end in the class that contains it, with the
// hypervisor running the next guest, the health-check guest at the end,
// and a clean power-off.
func TestHostileGuests(t *testing.T) {
	for _, cpu := range cpus {
		t.Run(cpu, func(t *testing.T) {
			r := boot(t, Config{CPU: cpu, Mode: "hostile", Extra: HostileArgs(os.Getenv("GUESTS_DIR")),
				Timeout: 8 * time.Minute})
			got := HostileOutcomes(r)
			for _, g := range HostileSuite {
				o, ok := got[g.Name]
				switch {
				case !ok:
					t.Errorf("%s: no outcome line", g.Name)
				case !slices.Contains(g.Want, o.Result()):
					t.Errorf("%s (%s): %s: %s; want %v", g.Name, g.Attack, o.Result(), o.Why, g.Want)
				}
			}
			if o := got["storm"]; o.Exits < 1_000_000 {
				t.Errorf("storm: %d exits, want a million", o.Exits)
			}
			expect(t, r, 0, fmt.Sprintf("hostile: %d guests:", len(HostileSuite)), "hypervisor failures 0",
				"alive: ok", "vm alive: exited with status 0")
		})
	}
}

// fuzzGuestsPerModel is how many new random guests each CPU model runs per
// `make test` (with the regression seeds: over 500 per run).
const fuzzGuestsPerModel = 500

// TestFuzzGuests runs random guests (kernel/fuzzguest) in 16-, 32- and
// 64-bit mode under each CPU model: the regression seeds, then new seeds
// from TAMAVISOR_FUZZ_SEED (default: from the clock, printed). Every guest
// must end in a classified stop, none in a hypervisor failure, and the
// hypervisor must run the health-check guest after them all.
func TestFuzzGuests(t *testing.T) {
	start := uint64(time.Now().UnixNano()%1_000_000) * 1000
	if s := os.Getenv("TAMAVISOR_FUZZ_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TAMAVISOR_FUZZ_SEED=%q: %v", s, err)
		}
		start = v
	}
	perModel := fuzzGuestsPerModel
	if s := os.Getenv("TAMAVISOR_FUZZ_COUNT"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("TAMAVISOR_FUZZ_COUNT=%q: want a positive count", s)
		}
		perModel = v
	}
	for i, cpu := range cpus {
		first := start + uint64(i*perModel)
		var seeds []string
		for _, s := range RegressionSeeds {
			seeds = append(seeds, strconv.FormatUint(s, 10))
		}
		seeds = append(seeds, fmt.Sprintf("%d+%d", first, perModel))
		list := strings.Join(seeds, ",")
		t.Run(cpu, func(t *testing.T) {
			t.Logf("seeds %s (TAMAVISOR_FUZZ_SEED=%d repeats this run)", list, start)
			r := boot(t, Config{CPU: cpu, Mode: "fuzz-guests", Timeout: 5*time.Minute + time.Duration(perModel)*50*time.Millisecond,
				Extra: []string{"-fw_cfg", "name=opt/tamavisor/seeds,string=" + strings.ReplaceAll(list, ",", ",,")}})
			outs := FuzzOutcomes(r)
			want := len(RegressionSeeds) + perModel
			if len(outs) != want {
				t.Errorf("%d guests reported, want %d", len(outs), want)
			}
			modes := map[int]int{}
			for _, o := range outs {
				modes[o.Mode]++
				if !slices.Contains(Classes, o.Class) {
					t.Errorf("seed %d (%d-bit) broke the hypervisor: %s: %s (keep it in RegressionSeeds)", o.Seed, o.Mode, o.Class, o.Why)
				}
			}
			if len(modes) != 3 {
				t.Errorf("modes run: %v, want 16, 32 and 64", modes)
			}
			expect(t, r, 0, fmt.Sprintf("fuzz-guests: %d guests:", want), "hypervisor failures 0",
				"alive: ok", "vm alive: exited with status 0")
		})
	}
}
