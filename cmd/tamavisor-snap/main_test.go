package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"tamavisor/kernel"
	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
	"tamavisor/svm"
)

// runTool runs the tool and returns its exit status, stdout and stderr.
func runTool(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := run(args, &out, &errb)
	return rc, out.String(), errb.String()
}

const demoSize = 2 << 20

// demoDisk writes the demo disk (2 MiB guest) and returns its path.
func demoDisk(t *testing.T) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.img")
	if rc, out, errs := runTool(t, "demo", "--size", "2MiB", disk); rc != 0 {
		t.Fatalf("demo: %d %s%s", rc, out, errs)
	}
	return disk
}

// guestDisk writes a disk holding one snapshot of the demo guest saved by
// the hypervisor's VM.Save after edit changed the VM, with key (if any).
func guestDisk(t *testing.T, key []byte, edit func(vm *kernel.VM)) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.img")
	dev, err := filedev.Create(disk, snapshot.DataStart+2*(demoSize+1<<20), 512)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := demoVM(demoPlatform(demoSize), demoSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Destroy()
	if edit != nil {
		edit(vm)
	}
	if _, err := vm.Save(s, key, demoCreated, nil); err != nil {
		t.Fatal(err)
	}
	return disk
}

// TestDemoIsRestorable: demo writes what the hypervisor restores. verify
// says so, and the hypervisor's own code agrees: Store.Load with
// kernel.Registry (no inspection mode: every chunk must be known and
// decode) and kernel.Restore give the demo guest back, registers and RAM.
func TestDemoIsRestorable(t *testing.T) {
	disk := demoDisk(t)
	rc, out, errs := runTool(t, "verify", disk)
	if rc != 0 || !strings.Contains(out, "slot 1 generation 2 (newest): restore accepts it") {
		t.Fatalf("verify: %d\n%s%s", rc, out, errs)
	}

	dev, err := filedev.OpenReadOnly(disk, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snap, c, err := s.Load(snapshot.DecodeOptions{Registry: kernel.Registry()})
	if err != nil || c.Generation != 2 {
		t.Fatalf("kernel decoding: generation %v, %v", c, err)
	}
	for _, ch := range snap.Chunks {
		if !ch.Known {
			t.Errorf("chunk %q is not one tamavisor knows", ch.Type)
		}
	}
	if v, ok := snap.Find(kernel.ChunkVM, 0).Value.(kernel.VMConfig); !ok || v.Name != "demo" || v.MemSize != demoSize {
		t.Errorf("vm chunk %+v", snap.Find(kernel.ChunkVM, 0).Value)
	}
	if v, ok := snap.Find(kernel.ChunkVCPU, 0).Value.(*kernel.VCPUState); !ok || v.Save.RIP != demoLoad {
		t.Errorf("vcpu chunk %+v", snap.Find(kernel.ChunkVCPU, 0).Value)
	}

	// A real host's restore: a host CPU like the tests' (not the widest),
	// no XSAVE for guests, the default MXCSR_MASK.
	host := func(leaf, sub uint32) (a, b, c, d uint32) {
		a, b, c, d = demoPlatform(0).CPUID(leaf, sub)
		switch leaf {
		case 1:
			c |= 1<<0 | 1<<23 // SSE3, POPCNT
		case 0x80000001:
			c |= 1 << 2 // SVM
		}
		return
	}
	vm, c, err := kernel.Restore(newScratchPlatform(demoSize, host, 0, 0), s, nil)
	if err != nil {
		t.Fatalf("kernel.Restore: %v", err)
	}
	defer vm.Destroy()
	want, err := demoVM(demoPlatform(demoSize), demoSize, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Destroy()
	got, exp := make([]byte, demoSize), make([]byte, demoSize)
	vm.Mem.ReadGPA(0, got)
	want.Mem.ReadGPA(0, exp)
	if c.Generation != 2 || vm.Name != "demo" || vm.VCPU.VMCB().State.RIP != demoLoad || !bytes.Equal(got, exp) {
		t.Errorf("restored generation %d, vm %q, RIP %#x, RAM equal %v", c.Generation, vm.Name, vm.VCPU.VMCB().State.RIP, bytes.Equal(got, exp))
	}
	if !bytes.Contains(got, []byte("hello from the tamavisor-snap demo guest, generation 2")) {
		t.Error("the demo guest's message is not in its RAM")
	}
}

// TestInspectShowsTamavisorChunks: the vm and vcpu chunks are decoded by
// the hypervisor's decoders, not shown as unknown.
func TestInspectShowsTamavisorChunks(t *testing.T) {
	disk := demoDisk(t)
	rc, out, errs := runTool(t, "inspect", disk)
	if rc != 0 || errs != "" {
		t.Fatalf("inspect: %d %s%s", rc, out, errs)
	}
	for _, want := range []string{
		"slot 1: commit record valid (newest)", "generation 2", "device uart16550 instance 0 state v1 required",
		`vm "demo": 2 MiB of RAM (2097152 bytes)`,
		"vcpu 0: 64-bit mode (long mode), CPL 0",
		"rip    0x0000000000010000", "rsp    0x0000000000000000", "rax    0x0000000000000000",
		"cr0    0x0000000080000011", "cr3    0x0000000000001000", "cr4    0x0000000000000020", "efer   0x0000000000001500",
		"cs   selector 0x0008 attrib 0xa9b",
		"vm         0        1  required", "vcpu         0        2  required",
		"133 stored, 379 zero elided",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q", want)
		}
	}
	if strings.Contains(out, ",raw") {
		t.Errorf("inspect shows chunks as unknown (raw):\n%s", out)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}

	// Flags before the command, after the argument.
	if rc, out, _ := runTool(t, "--sector", "512", "--json", "inspect", disk); rc != 0 || !strings.HasPrefix(out, "{") {
		t.Errorf("flags before the command: %d %.40q", rc, out)
	}
	rc, out, _ = runTool(t, "inspect", disk, "--json")
	var rep struct {
		Slots []struct {
			Newest bool
			VM     struct {
				Name    string
				RAMSize uint64 `json:"ram_size"`
			}
			VCPUs []struct {
				Mode string
				Regs map[string]uint64
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); rc != 0 || err != nil || len(rep.Slots) != 2 || !rep.Slots[1].Newest {
		t.Fatalf("inspect --json: %d %v\n%s", rc, err, out)
	}
	s := rep.Slots[1]
	if s.VM.Name != "demo" || s.VM.RAMSize != demoSize || len(s.VCPUs) != 1 || s.VCPUs[0].Regs["rip"] != demoLoad ||
		s.VCPUs[0].Regs["cr3"] != 0x1000 || !strings.HasPrefix(s.VCPUs[0].Mode, "64-bit") {
		t.Errorf("inspect --json: %+v", s)
	}
}

// TestInspectJSONStyle: every JSON name is snake_case, and numbers are
// JSON numbers (the only strings of digits are hashes and identifiers).
func TestInspectJSONStyle(t *testing.T) {
	rc, out, _ := runTool(t, "inspect", "--json", demoDisk(t))
	var v any
	if err := json.Unmarshal([]byte(out), &v); rc != 0 || err != nil {
		t.Fatalf("inspect --json: %d %v", rc, err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	digits := regexp.MustCompile(`^(0x)?[0-9a-fA-F]+$`)
	strOK := map[string]bool{"digest": true, "vm_id": true, "value": true, "name": true}
	numbers := map[string]bool{"generation": true, "offset": true, "length": true, "ram_size": true, "rip": true,
		"size": true, "gpa": true, "crc32c": true, "vcpus": true, "leaf": true, "eax": true, "created_unix_ns": true}
	seen := map[string]bool{}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if !snake.MatchString(k) {
					t.Errorf("JSON name %q is not snake_case", k)
				}
				seen[k] = true
				walk(k, e)
			}
		case []any:
			for _, e := range x {
				walk(key, e)
			}
		case string:
			if digits.MatchString(x) && !strOK[key] || numbers[key] {
				t.Errorf("%q: %q is a string, want a number", key, x)
			}
		case float64:
		}
	}
	walk("", v)
	for k := range numbers {
		if !seen[k] {
			t.Errorf("JSON has no %q", k)
		}
	}
}

// TestVerifyRunsRestoreChecks: verify fails every snapshot restore refuses
// although its checksums and digest are valid, with restore's reason.
func TestVerifyRunsRestoreChecks(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(vm *kernel.VM)
		want string
	}{
		"ValidateState": {func(vm *kernel.VM) { vm.VCPU.VMCB().State.RFLAGS = 0 }, "saved vCPU state: RFLAGS 0x0: reserved bit 1 clear"},
		"svm.Check": {func(vm *kernel.VM) {
			vm.VCPU.VMCB().Control.EventInj = svm.EventValid | uint64(svm.EventException)<<svm.EventTypeShift | 2
		}, "VMRUN"},
		"EFER": {func(vm *kernel.VM) { vm.VCPU.VMCB().State.EFER |= 1 << 20 }, "EFER"},
		"CPUID": {func(vm *kernel.VM) {
			for i := range vm.CPUID.Entries {
				if e := &vm.CPUID.Entries[i]; e.Leaf == 1 {
					e.ECX |= 1 << 5 // VMX: never shown to a guest
				}
			}
		}, "the guest saw CPU features this host lacks: CPUID leaf 1 ECX bits 0x20"},
	} {
		t.Run(name, func(t *testing.T) {
			disk := guestDisk(t, nil, tc.edit)
			rc, out, errs := runTool(t, "verify", disk)
			if rc != 1 || !strings.Contains(out, "NOT RESTORABLE slot 0 generation 1 (newest): ") || !strings.Contains(out, tc.want) {
				t.Errorf("verify: %d, want 1 and %q:\n%s%s", rc, tc.want, out, errs)
			}
			// inspect still shows it, registers included.
			if rc, out, _ := runTool(t, "inspect", disk); rc != 0 || !strings.Contains(out, "vcpu 0:") {
				t.Errorf("inspect: %d\n%s", rc, out)
			}
		})
	}
}

// oldDemoDisk writes what tamavisor-snap demo wrote before it used the
// hypervisor's code: a vcpu chunk of version 1 whose 24-byte body tamavisor
// cannot decode, and no vm chunk.
func oldDemoDisk(t *testing.T, extra func(w *snapshot.Writer) error) string {
	disk := filepath.Join(t.TempDir(), "old.img")
	dev, err := filedev.Create(disk, snapshot.DataStart+2*(demoSize+1<<20), 512)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mem := &flatMem{b: make([]byte, demoSize)}
	m := &snapshot.Manifest{VCPUs: 1, Memory: []snapshot.MemRegion{{GPA: 0, Size: demoSize, Kind: snapshot.MemRAM, Name: "ram"}},
		Devices: []snapshot.DeviceEntry{{Name: "uart16550", StateVersion: 1, Required: true}}}
	_, err = s.Save(snapshot.SaveOptions{Header: snapshot.Header{VMName: "demo"}}, func(w *snapshot.Writer) error {
		if err := w.WriteManifest(m); err != nil {
			return err
		}
		e := snapshot.NewEncoder(24)
		e.PutU64(0x7c00)
		e.PutU64(0x1000)
		e.PutU64(123456789)
		if err := w.WriteChunk(snapshot.TypeVCPU, 0, 1, snapshot.Required, e.Bytes()); err != nil {
			return err
		}
		if err := w.WriteDevice("uart16550", 0, []byte{3, 0, 0xc1, 1}); err != nil {
			return err
		}
		if extra != nil {
			if err := extra(w); err != nil {
				return err
			}
		}
		return w.WriteRAM(memSource{mem}, []snapshot.MemRange{{GPA: 0, Size: demoSize}}, snapshot.RAMOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return disk
}

type memSource struct{ m *flatMem }

func (s memSource) ReadAt(p []byte, gpa int64) (int, error) { return copy(p, s.m.b[gpa:]), nil }

// TestVerifyRefusesUndecodable: the old demo disk (issue 11, item 6)
// verified "ok" although restore refuses it; and a required chunk
// tamavisor does not know is refused as restore refuses it.
func TestVerifyRefusesUndecodable(t *testing.T) {
	rc, out, _ := runTool(t, "verify", oldDemoDisk(t, nil))
	if rc != 1 || !strings.Contains(out, "NOT RESTORABLE slot 0 generation 1 (newest): tamavisor cannot decode it: ") ||
		!strings.Contains(out, `chunk "vcpu"`) {
		t.Errorf("verify of the old demo disk: %d\n%s", rc, out)
	}
	rc, out, _ = runTool(t, "inspect", oldDemoDisk(t, nil))
	if rc != 0 || !strings.Contains(out, "NOT RESTORABLE: ") || !strings.Contains(out, "(the rest is read without tamavisor's decoders") ||
		!strings.Contains(out, "dev:uart16550") {
		t.Errorf("inspect of the old demo disk: %d\n%s", rc, out)
	}

	// A good snapshot plus a required chunk of an unknown type: restore
	// refuses it (inspect shows it raw).
	disk := guestDisk(t, nil, nil)
	dev, _ := filedev.Open(disk, 512)
	s, _ := snapshot.Open(dev, snapshot.StoreOptions{})
	vm, err := demoVM(demoPlatform(demoSize), demoSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Save(snapshot.SaveOptions{Header: snapshot.Header{VMName: "demo"}}, func(w *snapshot.Writer) error {
		if err := vm.WriteSnapshot(w, nil); err != nil {
			return err
		}
		return w.WriteChunk("x-future", 0, 1, snapshot.Required, []byte("?"))
	})
	dev.Close()
	if err != nil {
		t.Fatal(err)
	}
	rc, out, _ = runTool(t, "verify", disk)
	if rc != 1 || !strings.Contains(out, "NOT RESTORABLE slot 1 generation 2 (newest): ") || !strings.Contains(out, "x-future") {
		t.Errorf("verify with an unknown required chunk: %d\n%s", rc, out)
	}
	if rc, out, _ := runTool(t, "inspect", disk); rc != 0 || !strings.Contains(out, "required,raw") {
		t.Errorf("inspect with an unknown required chunk: %d\n%s", rc, out)
	}
}

// TestVerifyKeyed: a keyed snapshot is verified with its key; without one
// verify cannot say (usage); a key file with a trailing newline works with
// a note, since tamavisor given that file would use the newline too.
func TestVerifyKeyed(t *testing.T) {
	key := []byte("0123456789abcdef-key")
	disk := guestDisk(t, key, nil)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exact, newline, wrong := write("k1", key), write("k2", append(key, '\n')), write("k3", []byte("another key of 16+ bytes"))
	if rc, out, _ := runTool(t, "verify", disk); rc != 2 || !strings.Contains(out, "NOT VERIFIED") || !strings.Contains(out, "--key-file") {
		t.Errorf("no key: %d\n%s", rc, out)
	}
	if rc, out, _ := runTool(t, "verify", "--key-file", exact, disk); rc != 0 || !strings.Contains(out, "HMAC verified") || strings.Contains(out, "newline") {
		t.Errorf("exact key: %d\n%s", rc, out)
	}
	if rc, out, _ := runTool(t, "verify", disk, "--key-file", newline); rc != 1 || !strings.Contains(out, "NOT RESTORABLE") || !strings.Contains(out, "without the trailing newline") {
		t.Errorf("key with a newline: %d\n%s", rc, out)
	}
	if rc, out, _ := runTool(t, "verify", "--key-file", wrong, disk); rc != 1 || !strings.Contains(out, "HMAC mismatch") && !strings.Contains(out, "authentication failed") {
		t.Errorf("wrong key: %d\n%s", rc, out)
	}
	if rc, _, errs := runTool(t, "verify", "--key-file", filepath.Join(dir, "none"), disk); rc != 1 || !strings.Contains(errs, "--key-file") {
		t.Errorf("missing key file: %d %s", rc, errs)
	}
}

// corruptNewest flips a byte of the newest snapshot's uart state.
func corruptNewest(t *testing.T, disk string) {
	rc, out, _ := runTool(t, "inspect", "--json", disk)
	var rep struct {
		Slots []struct {
			Commit struct{ Offset int64 }
			Chunks []struct {
				Type   string
				Offset int64
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); rc != 0 || err != nil {
		t.Fatal(rc, err)
	}
	for _, c := range rep.Slots[1].Chunks {
		if c.Type == "dev:uart16550" {
			img, _ := os.ReadFile(disk)
			img[rep.Slots[1].Commit.Offset+c.Offset+48+1] ^= 0x40
			os.WriteFile(disk, img, 0o644)
			return
		}
	}
	t.Fatal("no uart chunk")
}

// TestExtractRAM: extract-ram writes the newest snapshot's RAM; when that
// one is corrupt it says so on stderr before extracting the older one, and
// --generation chooses.
func TestExtractRAM(t *testing.T) {
	disk := demoDisk(t)
	ramOut := filepath.Join(t.TempDir(), "ram.bin")
	want := func(gen int) []byte {
		vm, err := demoVM(demoPlatform(demoSize), demoSize, gen)
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Destroy()
		b := make([]byte, demoSize)
		vm.Mem.ReadGPA(0, b)
		return b
	}
	check := func(gen int) {
		t.Helper()
		if got, _ := os.ReadFile(ramOut); !bytes.Equal(got, want(gen)) {
			t.Errorf("extracted RAM (%d bytes) is not generation %d's", len(got), gen)
		}
	}
	if rc, out, errs := runTool(t, "extract-ram", disk, ramOut); rc != 0 || errs != "" || !strings.Contains(out, "(slot 1, generation 2)") {
		t.Fatalf("extract-ram: %d %s%s", rc, out, errs)
	}
	check(2)
	if rc, out, errs := runTool(t, "extract-ram", "--generation", "1", disk, ramOut); rc != 0 || errs != "" || !strings.Contains(out, "generation 1") {
		t.Fatalf("extract-ram --generation 1: %d %s%s", rc, out, errs)
	}
	check(1)

	corruptNewest(t, disk)
	rc, out, _ := runTool(t, "verify", disk)
	if rc != 1 || !strings.Contains(out, `CORRUPT slot 1 generation 2 (newest): snapshot: chunk "dev:uart16550" (index 3): checksum mismatch`) {
		t.Errorf("verify after corruption: %d %s", rc, out)
	}
	rc, out, errs := runTool(t, "extract-ram", disk, ramOut)
	if rc != 0 || !strings.Contains(out, "generation 1") ||
		!strings.Contains(errs, "slot 1 generation 2 is not valid") || !strings.Contains(errs, "extracting the older generation 1 instead") {
		t.Errorf("extract-ram after corruption: %d\nstdout %s\nstderr %s", rc, out, errs)
	}
	check(1)
	os.Remove(ramOut)
	if rc, _, errs := runTool(t, "extract-ram", disk, ramOut, "--generation", "2"); rc != 1 || !strings.Contains(errs, "checksum mismatch") {
		t.Errorf("extract-ram --generation 2 (corrupt): %d %s", rc, errs)
	}
	if _, err := os.Stat(ramOut); err == nil {
		t.Error("a failed extract-ram left its output file")
	}
	if rc, _, errs := runTool(t, "extract-ram", "--generation", "3", disk, ramOut); rc != 1 ||
		!strings.Contains(errs, "no committed snapshot with generation 3 (committed on the disk: generation 1 (slot 0) and 2 (slot 1))") {
		t.Errorf("extract-ram --generation 3: %d %s", rc, errs)
	}
	if rc, _, errs := runTool(t, "extract-ram", "--generation", "0", disk, ramOut); rc != 2 || !strings.Contains(errs, "--generation 0") {
		t.Errorf("extract-ram --generation 0: %d %s", rc, errs)
	}
	if rc, out, _ := runTool(t, "verify", "--generation", "1", disk); rc != 0 || !strings.Contains(out, "ok slot 0 generation 1 (older; restored with make qemu RESTORE_GEN=1): restore accepts it") {
		t.Errorf("verify --generation 1: %d %s", rc, out)
	}
}

// TestDemoRefusesToOverwrite: demo does not destroy snapshots or other
// data without --force.
func TestDemoRefusesToOverwrite(t *testing.T) {
	disk := demoDisk(t)
	before, _ := os.ReadFile(disk)
	rc, _, errs := runTool(t, "demo", "--size", "4MiB", disk)
	if after, _ := os.ReadFile(disk); rc != 1 || !bytes.Equal(before, after) ||
		!strings.Contains(errs, "refusing to overwrite "+disk+": it holds snapshots (generations 1 and 2); --force overwrites it") {
		t.Errorf("demo over snapshots: %d %s", rc, errs)
	}
	if rc, _, errs := runTool(t, "demo", "--size", "4MiB", "--force", disk); rc != 0 {
		t.Errorf("demo --force: %d %s", rc, errs)
	}
	dir := t.TempDir()
	other := filepath.Join(dir, "other")
	os.WriteFile(other, bytes.Repeat([]byte("data"), 4096), 0o644)
	if rc, _, errs := runTool(t, "demo", other); rc != 1 || !strings.Contains(errs, "not a blank snapshot disk") {
		t.Errorf("demo over other data: %d %s", rc, errs)
	}
	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("x"), 0o644)
	if rc, _, errs := runTool(t, "demo", small); rc != 1 || !strings.Contains(errs, "not a blank snapshot disk (1 bytes") {
		t.Errorf("demo over a small file: %d %s", rc, errs)
	}
	blank := filepath.Join(dir, "blank")
	os.WriteFile(blank, make([]byte, 1<<20), 0o644)
	if rc, _, errs := runTool(t, "demo", "--size", "2MiB", blank); rc != 0 {
		t.Errorf("demo over a blank disk: %d %s", rc, errs)
	}
}

// TestHelp: --help, -h and help print the usage on stdout, every command
// and every flag, and exit 0; so does COMMAND --help for one command.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"-help"}} {
		rc, out, errs := runTool(t, args...)
		if rc != 0 || errs != "" {
			t.Errorf("%q: %d, stderr %q", args, rc, errs)
		}
		for _, c := range commands {
			if !strings.Contains(out, "tamavisor-snap "+c.name+" ") {
				t.Errorf("%q: usage lacks command %s", args, c.name)
			}
			c.flagSet(&options{}).VisitAll(func(f *flag.Flag) {
				if !strings.Contains(out, "--"+f.Name) {
					t.Errorf("%q: usage lacks %s --%s", args, c.name, f.Name)
				}
			})
		}
		if !strings.Contains(out, "exit status: 0") {
			t.Errorf("%q: usage does not give the exit statuses", args)
		}
	}
	for _, args := range [][]string{{"verify", "--help"}, {"help", "verify"}, {"verify", "disk.img", "-h"}} {
		rc, out, errs := runTool(t, args...)
		if rc != 0 || errs != "" || !strings.Contains(out, "tamavisor-snap verify [--generation N] [--key-file F] [--sector N] DISK") ||
			strings.Contains(out, "extract-ram") {
			t.Errorf("%q: %d\n%s%s", args, rc, out, errs)
		}
	}
}

// TestUsageErrors: a malformed command line exits 2, naming the argument
// and why, on stderr.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage: tamavisor-snap COMMAND"},
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"verify"}, "verify: missing DISK"},
		{[]string{"extract-ram", "d"}, "extract-ram: missing OUT"},
		{[]string{"inspect", "a", "b"}, `inspect: unexpected argument "b" (the arguments are DISK)`},
		{[]string{"bench", "x"}, `bench: unexpected argument "x" (this command takes none)`},
		{[]string{"verify", "--json", "d"}, "verify: unknown flag --json (flags: --generation, --key-file, --sector)"},
		{[]string{"bench", "--size", "3"}, `bench: --size: "3" (3 bytes) must be a multiple of 4096 and at least 2MiB`},
		{[]string{"demo", "d", "--size", "4GiB"}, `demo: --size: "4GiB" is more than tamavisor's largest guest (3072 MiB)`},
		{[]string{"demo", "d", "--size", "lots"}, `demo: --size: "lots" is not a size`},
		{[]string{"inspect", "--sector", "100", "d"}, "inspect: --sector 100: must be 512, 1024, 2048 or 4096"},
		{[]string{"inspect", "--sector", "big", "d"}, `inspect: --sector "big": not a valid value`},
		{[]string{"extract-ram", "--generation", "0", "d", "o"}, "extract-ram: --generation 0: generations start at 1"},
		{[]string{"help", "nope"}, `help: no command "nope"`},
		{[]string{"help", "verify", "x"}, `help: unexpected argument "x"`},
		{[]string{"--json"}, `unknown command "--json"`},
		{[]string{"--json", "demo", "d"}, "demo: unknown flag --json (flags: --force, --size)"},
	} {
		rc, out, errs := runTool(t, tc.args...)
		if rc != 2 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: %d, stdout %q, stderr %q; want 2 and %q", tc.args, rc, out, errs, tc.want)
		}
	}
	if rc, _, errs := runTool(t, "verify", filepath.Join(t.TempDir(), "missing.img")); rc != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing disk: exit %d %s", rc, errs)
	}
}

// doubled finds a phrase said twice on one line ("restore refused: ...
// restore refused", "commit record commit record") or a word repeated.
var wordRE = regexp.MustCompile(`-*[A-Za-z0-9][A-Za-z0-9_-]*`)

func doubled(out string) string {
	for _, line := range strings.Split(out, "\n") {
		words := wordRE.FindAllString(line, -1)
		seen := map[string]bool{}
		for i := range words {
			if i > 0 && words[i] == words[i-1] {
				return fmt.Sprintf("%q twice in %q", words[i], line)
			}
			if i+1 < len(words) {
				bi := words[i] + " " + words[i+1]
				if seen[bi] {
					return fmt.Sprintf("%q twice in %q", bi, line)
				}
				seen[bi] = true
			}
		}
	}
	return ""
}

// TestNoDoubledWords: no message says the same thing twice.
func TestNoDoubledWords(t *testing.T) {
	if d := doubled("restore refused: generation 2: restore refused: x"); d == "" {
		t.Fatal("doubled misses a repeated phrase")
	}
	disk := demoDisk(t)
	badRecord := demoDisk(t)
	img, _ := os.ReadFile(badRecord)
	img[100] ^= 1 // commit record A
	os.WriteFile(badRecord, img, 0o644)
	corrupt := demoDisk(t)
	corruptNewest(t, corrupt)
	refused := guestDisk(t, nil, func(vm *kernel.VM) { vm.VCPU.VMCB().State.RFLAGS = 0 })
	ram := filepath.Join(t.TempDir(), "ram")
	for _, args := range [][]string{
		{"inspect", disk}, {"verify", disk}, {"inspect", badRecord}, {"verify", badRecord},
		{"verify", corrupt}, {"inspect", corrupt}, {"extract-ram", corrupt, ram},
		{"verify", refused}, {"inspect", refused}, {"verify", oldDemoDisk(t, nil)}, {"inspect", oldDemoDisk(t, nil)},
		{"demo", disk}, {"verify", "--generation", "9", disk}, {"help"},
	} {
		_, out, errs := runTool(t, args...)
		// Register dumps repeat "selector", "attrib"... by design.
		var keep []string
		for _, l := range strings.Split(out+errs, "\n") {
			if !strings.HasPrefix(l, "    ") {
				keep = append(keep, l)
			}
		}
		if d := doubled(strings.Join(keep, "\n")); d != "" {
			t.Errorf("%q: %s", args, d)
		}
	}
	if _, out, _ := runTool(t, "inspect", badRecord); !strings.Contains(out, "slot 0: commit record invalid: checksum mismatch") {
		t.Errorf("inspect of a bad record:\n%s", out)
	}
}

func TestBenchRuns(t *testing.T) {
	rc, out, errs := runTool(t, "bench", "--size", "4MiB", "--dir", t.TempDir())
	if rc != 0 {
		t.Fatalf("bench: %d %s%s", rc, out, errs)
	}
	for _, want := range []string{"plain sequential write", "encode", "decode", "load (verify + restore)", "vs plain write"} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"256MiB": 256 << 20, "1GiB": 1 << 30, "4M": 4 << 20, "2097152": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"x", "-1MiB", "1KiB", "2097153", "4GiB", "", "0"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
