package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"tamavisor/kernel"
	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
)

// chainIncrements is how many increments chainDisk appends.
const chainIncrements = 2

// chainDisk writes the demo disk (generations 1 and 2) and appends
// increments to generation 2 in its slot: the demo guest with pages
// changed (one made zero, one non-zero, one byte changed) each time, its
// other chunks as generation 2 has them. It returns the disk and the
// guest RAM at the newest increment.
func chainDisk(t *testing.T) (string, []byte) {
	t.Helper()
	disk := demoDisk(t)
	dev, err := filedev.Open(disk, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := demoVM(demoPlatform(demoSize), demoSize, 2)
	if err != nil {
		t.Fatal(err)
	}
	mem := &flatMem{b: make([]byte, demoSize)}
	vm.Mem.ReadGPA(0, mem.b)
	vm.Destroy()
	snap, c, err := s.Load(snapshot.DecodeOptions{Registry: kernel.Registry()})
	if err != nil || c.Generation != 2 {
		t.Fatalf("demo disk: %+v, %v", c, err)
	}
	for i := range chainIncrements {
		dirty := make([]byte, demoSize/snapshot.PageSize/8)
		for _, p := range []int{demoDataAt/snapshot.PageSize + 2*i, demoDataAt/snapshot.PageSize + 2*i + 1, demoDataAt/snapshot.PageSize + 8} {
			page := mem.b[p*snapshot.PageSize : (p+1)*snapshot.PageSize]
			switch {
			case p == demoDataAt/snapshot.PageSize+2*i:
				clear(page) // a stored page becomes zero
			case p == demoDataAt/snapshot.PageSize+2*i+1:
				copy(page, "a zero page becomes non-zero")
			default:
				page[i]++
			}
			dirty[p/8] |= 1 << (p % 8)
		}
		base := c
		c, err = s.Save(snapshot.SaveOptions{Header: snapshot.Header{VMName: "demo", VMID: snap.Header.VMID, Created: demoCreated}, Base: base},
			func(w *snapshot.Writer) error {
				if err := w.WriteManifest(snap.Manifest); err != nil {
					return err
				}
				for _, ch := range snap.Chunks {
					name, dev := strings.CutPrefix(ch.Type, snapshot.DevicePrefix)
					switch {
					case ch.Type == snapshot.TypeManifest || ch.Type == snapshot.TypeRAM || ch.Type == snapshot.TypeChain || ch.Type == snapshot.TypePad:
					case dev:
						err = w.WriteDevice(name, ch.Instance, ch.Body)
					default:
						err = w.WriteChunk(ch.Type, ch.Instance, ch.Version, ch.Flags, ch.Body)
					}
					if err != nil {
						return err
					}
				}
				return w.WriteRAM(memSource{mem}, []snapshot.MemRange{{GPA: 0, Size: demoSize}}, snapshot.RAMOptions{
					Carried: func(int) []byte { return dirty }, BaseGeneration: base.Generation, BaseDigest: base.Digest})
			})
		if err != nil {
			t.Fatalf("increment %d: %v", i+1, err)
		}
	}
	return disk, mem.b
}

// TestInspectShowsChain: inspect lists a slot's chain, one line per
// stream, and the previous commit record; verify runs restore over the
// chain; extract-ram gives the chain's merged RAM.
func TestInspectShowsChain(t *testing.T) {
	disk, ram := chainDisk(t)
	newest := 2 + chainIncrements
	rc, out, errs := runTool(t, "inspect", disk)
	if rc != 0 {
		t.Fatalf("inspect: %d %s%s", rc, out, errs)
	}
	for _, re := range []string{
		`(?m)^slot 1: commit record valid \(newest\)\n  generation 4, offset \d+, length \d+\n  previous commit record: generation 3, `,
		`(?m)^  chain: 3 stream\(s\), oldest first`,
		`(?m)^ +2 +full +\d+ +\d+ +512 +\d+ *$`,
		`(?m)^ +3 +increment +\d+ +\d+ +3 +2 *$`,
		`(?m)^ +4 +increment +\d+ +\d+ +3 +2 *$`,
		`(?m)^  chain: 1 stream\(s\)`, // slot 0: one full snapshot
		`incremental false`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("inspect output lacks %s:\n%s", re, out)
		}
	}
	rc, out, errs = runTool(t, "inspect", "--json", disk)
	var doc struct {
		Slots []struct {
			Chain []struct {
				Generation  uint64 `json:"generation"`
				Incremental bool   `json:"incremental"`
				Stored      uint64 `json:"stored_pages"`
			} `json:"chain"`
		} `json:"slots"`
	}
	if err := json.Unmarshal([]byte(out), &doc); rc != 0 || err != nil || len(doc.Slots) != 2 || len(doc.Slots[1].Chain) != 3 ||
		!doc.Slots[1].Chain[2].Incremental || doc.Slots[1].Chain[2].Generation != uint64(newest) {
		t.Errorf("inspect --json: %d %v %s%s", rc, err, out, errs)
	}

	rc, out, _ = runTool(t, "verify", disk)
	if rc != 0 || !strings.Contains(out, "ok slot 1 generation 4 (newest): restore accepts it") {
		t.Errorf("verify: %d %s", rc, out)
	}
	ramOut := filepath.Join(t.TempDir(), "ram.bin")
	if rc, out, errs := runTool(t, "extract-ram", disk, ramOut); rc != 0 || !strings.Contains(out, "generation 4") {
		t.Fatalf("extract-ram: %d %s%s", rc, out, errs)
	}
	if got, _ := os.ReadFile(ramOut); !bytes.Equal(got, ram) {
		t.Error("extracted RAM is not the chain's final RAM")
	}

	// The hypervisor's restore (one pass over the chain) gives the final
	// RAM, and the newest stream's registers.
	dev, err := filedev.OpenReadOnly(disk, 512)
	if err != nil {
		t.Fatal(err)
	}
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, c, err := checkRestore(s, nil, demoSize, nil)
	dev.Close()
	if err != nil || c.Generation != uint64(newest) {
		t.Fatalf("kernel.Restore: %+v, %v", c, err)
	}
	got := make([]byte, demoSize)
	vm.Mem.ReadGPA(0, got)
	rip := vm.VCPU.VMCB().State.RIP
	vm.Destroy()
	if !bytes.Equal(got, ram) || rip != demoLoad {
		t.Errorf("kernel.Restore of the chain: RAM equal %v, RIP %#x", bytes.Equal(got, ram), rip)
	}

	// Damage the chain's full snapshot: verify says which stream.
	corruptGeneration(t, disk, 2)
	rc, out, _ = runTool(t, "verify", disk)
	if rc != 1 || !strings.Contains(out, "CORRUPT slot 1 generation 4 (newest)") || !strings.Contains(out, "full snapshot generation 2 ") {
		t.Errorf("verify of a damaged chain: %d %s", rc, out)
	}
}

// corruptGeneration flips a byte in the device chunk of the stream of
// generation gen, found in the chain of the disk's slot 1.
func corruptGeneration(t *testing.T, disk string, gen uint64) {
	t.Helper()
	dev, err := filedev.OpenReadOnly(disk, 512)
	if err != nil {
		t.Fatal(err)
	}
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snap, _, err := s.Load(snapshot.DecodeOptions{Registry: kernel.Registry()})
	dev.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range snap.Chain {
		if cs.Generation == gen {
			f, err := os.OpenFile(disk, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// The uart16550 chunk is small and early: its body follows
			// the manifest, vm and vcpu chunks, well inside 64 KiB.
			b := make([]byte, 64<<10)
			f.ReadAt(b, cs.Offset)
			i := bytes.Index(b, []byte("CHNKdev:uart16550"))
			if i < 0 {
				t.Fatal("no uart16550 chunk")
			}
			body := i + snapshot.ChunkHeaderSize
			b[body] ^= 1
			f.WriteAt(b[body:body+1], cs.Offset+int64(body))
			return
		}
	}
	t.Fatalf("generation %d is not in the chain", gen)
}
