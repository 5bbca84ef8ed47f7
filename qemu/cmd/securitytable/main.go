// Command securitytable runs the hostile-guest suite and the random guests
// under each CPU model, lists the host fuzz targets with their budgets,
// and prints the table of attack classes tested (docs/security.md); with
// -write it replaces the table between the markers of that file. Run by
// `make security-table`.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"tamavisor/qemu"
)

const (
	beginMarker = "<!-- attack-table:begin -->"
	endMarker   = "<!-- attack-table:end -->"
)

var cpus = []string{"EPYC,+svm", "max"}

func main() {
	write := flag.String("write", "", "file whose table between the attack-table markers is replaced")
	nFuzz := flag.Int("fuzz", 1000, "random guests per CPU model")
	seed := flag.Uint64("seed", 0, "first random guest seed")
	flag.Parse()
	elf, guests := os.Getenv("TAMAVISOR_ELF"), os.Getenv("GUESTS_DIR")
	if elf == "" || guests == "" {
		fail("set TAMAVISOR_ELF and GUESTS_DIR (make security-table does)")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Generated %s by `make security-table` (QEMU %s, accel %s): one boot per CPU model for the suite,\n",
		time.Now().UTC().Format("2006-01-02"), qemuVersion(), qemu.Accel())
	fmt.Fprintf(&b, "one for the random guests. A cell is how the guest ended (tamavisor's stop class); every run ended\nwith the health-check guest passing and a clean power-off, or the table says otherwise.\n\n")
	fmt.Fprintf(&b, "| attack | cases per CPU model | -cpu EPYC,+svm (no NRIP) | -cpu max (NRIP) |\n|---|---|---|---|\n")

	suite := map[string]map[string]qemu.Outcome{}
	for _, cpu := range cpus {
		r, err := qemu.Run(qemu.Config{QEMU: os.Getenv("QEMU"), ELF: elf, CPU: cpu, Mode: "hostile",
			Extra: qemu.HostileArgs(guests), Timeout: 10 * time.Minute})
		if err != nil {
			fail(err.Error())
		}
		if s, ok := r.Status(); !ok || s != 0 || !strings.Contains(r.Output(), "hypervisor failures 0") {
			fail(fmt.Sprintf("hostile suite under %s failed (QEMU exit %d):\n%s", cpu, r.ExitCode, r.Output()))
		}
		suite[cpu] = qemu.HostileOutcomes(r)
	}
	for _, g := range qemu.HostileSuite {
		fmt.Fprintf(&b, "| %s (`%s`) | 1 |", g.Attack, g.Name)
		for _, cpu := range cpus {
			o := suite[cpu][g.Name]
			cell := o.Result()
			if o.Exits > 1000 {
				cell += fmt.Sprintf(", %d exits", o.Exits)
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}

	// Random guests: the regression seeds and nFuzz new ones per model.
	byMode := map[string]map[int]map[string]int{}
	counts := map[int]int{}
	for i, cpu := range cpus {
		var list []string
		for _, s := range qemu.RegressionSeeds {
			list = append(list, strconv.FormatUint(s, 10))
		}
		list = append(list, fmt.Sprintf("%d+%d", *seed+uint64(i**nFuzz), *nFuzz))
		r, err := qemu.Run(qemu.Config{QEMU: os.Getenv("QEMU"), ELF: elf, CPU: cpu, Mode: "fuzz-guests", Timeout: 20 * time.Minute,
			Extra: []string{"-fw_cfg", "name=opt/tamavisor/seeds,string=" + strings.ReplaceAll(strings.Join(list, ","), ",", ",,")}})
		if err != nil {
			fail(err.Error())
		}
		if s, ok := r.Status(); !ok || s != 0 {
			fail(fmt.Sprintf("random guests under %s failed (QEMU exit %d)", cpu, r.ExitCode))
		}
		byMode[cpu] = map[int]map[string]int{}
		for _, o := range qemu.FuzzOutcomes(r) {
			if byMode[cpu][o.Mode] == nil {
				byMode[cpu][o.Mode] = map[string]int{}
			}
			byMode[cpu][o.Mode][o.Class]++
			if i == 0 {
				counts[o.Mode]++
			}
		}
	}
	for _, mode := range []int{16, 32, 64} {
		fmt.Fprintf(&b, "| random %d-bit guests (`kernel/fuzzguest`, seeds from %d and the regression seeds) | %d |", mode, *seed, counts[mode])
		for _, cpu := range cpus {
			fmt.Fprintf(&b, " %s |", classes(byMode[cpu][mode]))
		}
		b.WriteString("\n")
	}

	// Host fuzz targets.
	out, err := exec.Command("go", "run", "./internal/testrun", "-list-fuzz").Output()
	if err != nil {
		fail("go run ./internal/testrun -list-fuzz: " + err.Error())
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		fmt.Fprintf(&b, "| host fuzz target `%s` (`%s`) | %s executions per `make test` | no failure (the fuzz stage fails otherwise) | (host code, no CPU model) |\n",
			f[1], strings.TrimPrefix(f[0], "tamavisor/"), f[2])
	}
	table := b.String()
	fmt.Print(table)
	if *write != "" {
		doc, err := os.ReadFile(*write)
		if err != nil {
			fail(err.Error())
		}
		i, j := bytes.Index(doc, []byte(beginMarker)), bytes.Index(doc, []byte(endMarker))
		if i < 0 || j < i {
			fail(*write + ": no attack-table markers")
		}
		var nb bytes.Buffer
		nb.Write(doc[:i+len(beginMarker)])
		nb.WriteString("\n" + table)
		nb.Write(doc[j:])
		if err := os.WriteFile(*write, nb.Bytes(), 0o644); err != nil {
			fail(err.Error())
		}
	}
}

// classes formats class counts, most frequent first.
func classes(m map[string]int) string {
	type kv struct {
		k string
		n int
	}
	var s []kv
	for k, n := range m {
		s = append(s, kv{k, n})
	}
	sort.Slice(s, func(i, j int) bool { return s[i].n > s[j].n || s[i].n == s[j].n && s[i].k < s[j].k })
	var parts []string
	for _, e := range s {
		parts = append(parts, fmt.Sprintf("%s %d", e.k, e.n))
	}
	return strings.Join(parts, ", ")
}

func qemuVersion() string {
	bin := os.Getenv("QEMU")
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	out, _ := exec.Command(bin, "--version").Output()
	f := strings.Fields(string(out))
	if len(f) >= 4 {
		return f[3]
	}
	return "?"
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "securitytable:", msg)
	os.Exit(1)
}
