package qemu

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// The hostile-guest runs (docs/security.md): the suite of hand-written
// attacks, and the random guests. Shared by the end-to-end tests and the
// security table (qemu/cmd/securitytable).

// HostileGuest is one guest of the suite: its image (guests/build/hostile),
// its time budget ("" for tamavisor's default) and the stop classes that
// count as the attack being contained (kernel.Class* names).
type HostileGuest struct {
	Name, Budget string
	Attack       string   // what it does, for the table
	Want         []string // acceptable classes
}

// HostileSuite is every hostile guest, in run order.
var HostileSuite = []HostileGuest{
	{"gpa-ramend-r", "", "read just past guest RAM", []string{"outside-ram"}},
	{"gpa-hv-w", "", "write at the hypervisor's code (GPA 0x10010000)", []string{"outside-ram"}},
	{"gpa-dma-r", "", "read at the hypervisor's DMA region", []string{"outside-ram"}},
	{"gpa-pool-w", "", "write at the guest pool (VMCBs, page tables)", []string{"outside-ram"}},
	{"gpa-top-w", "", "write at the top of the 4 GiB space", []string{"outside-ram"}},
	{"gpa-lapic-cross-r", "", "dword read across the end of the local APIC page", []string{"not-emulated"}},
	{"gpa64-4g", "", "64-bit read at 4 GiB through its own page tables", []string{"outside-ram"}},
	{"gpa64-512g", "", "64-bit read at 512 GiB", []string{"outside-ram"}},
	{"gpa64-beyond", "", "64-bit read beyond the physical address width", []string{"outside-ram", "triple-fault"}},
	{"svm", "", "VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA, MONITOR, MWAIT (all must #UD)", []string{"exited 0"}},
	{"msr", "", "read, write all ones and zero to 83 host-critical MSRs; EFER.SVME", []string{"exited 0"}},
	{"io", "60s", "IN of 1, 2, 4 bytes and OUT to all 65536 ports", []string{"exited 0"}},
	{"iostr", "", "REP INSB and OUTSW (string port I/O)", []string{"not-emulated"}},
	{"dbstorm", "", "#DB on every instruction (TF), CVE-2015-8104 pattern", []string{"budget"}},
	{"dfstorm", "", "endless #DF delivery inside the CPU, no intercepted event", []string{"budget"}},
	{"acloop", "", "#AC on every user-mode load (CR0.AM, EFLAGS.AC, CPL 3), CVE-2015-5307 pattern; QEMU TCG raises no #AC, so there it only spins", []string{"budget"}},
	{"storm", "120s", "exit storm: a million CPUID exits", []string{"exited 0"}},
	{"ptdecode", "", "page-table chain outside RAM during instruction decoding", []string{"undecodable", "outside-ram"}},
	{"spin", "", "never exits (jmp $ with interrupts off)", []string{"budget"}},
	{"triple", "", "triple fault", []string{"triple-fault"}},
}

// HostileArgs are the QEMU arguments that give tamavisor the suite as
// fw_cfg files opt/tamavisor/suite/NN-name[@budget]; guests is the
// guests/build directory.
func HostileArgs(guests string) []string {
	var args []string
	for i, g := range HostileSuite {
		file := filepath.Join(guests, "hostile", g.Name+".bin")
		if g.Name == "spin" || g.Name == "triple" {
			file = filepath.Join(guests, g.Name+".bin")
		}
		name := fmt.Sprintf("opt/tamavisor/suite/%02d-%s", i, g.Name)
		if g.Budget != "" {
			name += "@" + g.Budget
		}
		args = append(args, "-fw_cfg", "name="+name+",file="+file)
	}
	return args
}

// Outcome is how one guest of a run ended, as tamavisor printed it.
type Outcome struct {
	Name, Class, Why string
	Exits            int
}

var (
	hostileLine = regexp.MustCompile(`tamavisor: hostile \d+-([^:]+): ([a-z-]+): (.*)$`)
	fuzzLine    = regexp.MustCompile(`tamavisor: fuzz-guests seed (\d+) \((\d+)-bit\): (?:HYPERVISOR FAILURE: )?([a-z-]+): (.*)$`)
	exitsOf     = regexp.MustCompile(`\((\d+) exits\)$`)
	exitStatus  = regexp.MustCompile(`^exited with status (\d+)`)
)

// Result is the outcome's class, with the status for exits ("exited 0").
func (o Outcome) Result() string {
	if o.Class == "exited" {
		if m := exitStatus.FindStringSubmatch(o.Why); m != nil {
			return "exited " + m[1]
		}
	}
	return o.Class
}

func parseExits(why string) int {
	if m := exitsOf.FindStringSubmatch(why); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return -1
}

// HostileOutcomes reads the suite's per-guest lines from a run.
func HostileOutcomes(r *Result) map[string]Outcome {
	out := map[string]Outcome{}
	for _, l := range r.Lines {
		if m := hostileLine.FindStringSubmatch(strings.TrimRight(l.Text, "\r")); m != nil {
			out[m[1]] = Outcome{Name: m[1], Class: m[2], Why: m[3], Exits: parseExits(m[3])}
		}
	}
	return out
}

// FuzzOutcome is one random guest's end.
type FuzzOutcome struct {
	Seed  uint64
	Mode  int
	Class string
	Why   string
}

// FuzzOutcomes reads the random guests' lines from a run.
func FuzzOutcomes(r *Result) []FuzzOutcome {
	var out []FuzzOutcome
	for _, l := range r.Lines {
		if m := fuzzLine.FindStringSubmatch(strings.TrimRight(l.Text, "\r")); m != nil {
			seed, _ := strconv.ParseUint(m[1], 10, 64)
			mode, _ := strconv.Atoi(m[2])
			out = append(out, FuzzOutcome{Seed: seed, Mode: mode, Class: m[3], Why: m[4]})
		}
	}
	return out
}

// Classes are the stop classes tamavisor reports (kernel.Class*); a
// random guest must end in one of these but "hypervisor-error", and
// "internal" (a VM that could not be built) is a failure too.
var Classes = []string{"exited", "poweroff", "reset", "quit", "suspended", "budget", "triple-fault",
	"outside-ram", "not-emulated", "undecodable", "dead-halt", "machine-check", "invalid-state",
	"unexpected-exit"}

// RegressionSeeds are random guests that once broke the hypervisor or
// QEMU under it; every fuzz run includes them.
//
//	216  MOV DR7 arming host breakpoints in QEMU TCG (assertion failure)
//	417  MOV DR5 (DR7 alias), the same
//	665  MOV CR0 clearing PG in 64-bit mode (QEMU hang)
//	852  MOV CR4 with reserved bits (VMRUN refused the state)
//	453  INVD reported as a WBINVD exit
var RegressionSeeds = []uint64{216, 417, 665, 852, 453, 265, 368}
