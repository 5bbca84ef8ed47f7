package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
)

// slotReport is what inspect prints for one slot.
type slotReport struct {
	Slot       int                `json:"slot"`
	Record     string             `json:"record"` // "blank", "valid" or the error
	Commit     *snapshot.Commit   `json:"commit,omitempty"`
	Newest     bool               `json:"newest"`
	Error      string             `json:"error,omitempty"`
	Header     *headerReport      `json:"header,omitempty"`
	Manifest   *snapshot.Manifest `json:"manifest,omitempty"`
	Chunks     []*snapshot.Chunk  `json:"chunks,omitempty"`
	RAM        *snapshot.RAMInfo  `json:"ram,omitempty"`
	Digest     string             `json:"digest,omitempty"`
	Keyed      bool               `json:"keyed"`
	HMACStatus string             `json:"hmac,omitempty"`
}

type headerReport struct {
	Version    uint16 `json:"format_version"`
	Generation uint64 `json:"generation"`
	Created    string `json:"created"`
	VMID       string `json:"vm_id"`
	VMName     string `json:"vm_name"`
	Flags      uint32 `json:"flags"`
}

// examine reads both slots of the disk image.
func examine(path string, sector int, key []byte) ([]*slotReport, *snapshot.Store, *filedev.Device, error) {
	dev, err := filedev.OpenReadOnly(path, sector)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		dev.Close()
		return nil, nil, nil, err
	}
	st, err := s.Records()
	if err != nil {
		dev.Close()
		return nil, nil, nil, err
	}
	var reps []*slotReport
	newest := -1
	for _, r := range st {
		rep := &slotReport{Slot: r.Slot}
		reps = append(reps, rep)
		switch {
		case r.Blank:
			rep.Record = "blank"
			continue
		case r.Err != nil:
			rep.Record = r.Err.Error()
			continue
		}
		rep.Record = "valid"
		rep.Commit = r.Commit
		if newest < 0 || r.Commit.Generation > st[newest].Commit.Generation {
			newest = r.Slot
		}
		snap, err := s.Decode(r.Commit, snapshot.DecodeOptions{Inspect: true, SkipAuth: len(key) == 0, Key: key})
		if err != nil {
			rep.Error = err.Error()
			continue
		}
		h := snap.Header
		rep.Header = &headerReport{h.Version, h.Generation, time.Unix(0, h.Created).UTC().Format(time.RFC3339Nano), hex.EncodeToString(h.VMID[:]), h.VMName, h.Flags}
		rep.Manifest, rep.Chunks, rep.RAM = snap.Manifest, snap.Chunks, snap.RAM
		rep.Digest = hex.EncodeToString(snap.Digest[:])
		rep.Keyed = h.Flags&snapshot.HeaderKeyed != 0
		switch {
		case snap.Authenticated:
			rep.HMACStatus = "verified"
		case rep.Keyed:
			rep.HMACStatus = "present, not checked (no --key-file)"
		default:
			rep.HMACStatus = "none"
		}
	}
	if newest >= 0 {
		reps[newest].Newest = true
	}
	return reps, s, dev, nil
}

func inspect(path string, sector int, key []byte, asJSON bool, stdout, stderr io.Writer) int {
	reps, _, dev, err := examine(path, sector, key)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitCorrupt
	}
	defer dev.Close()
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"disk": path, "slots": reps}); err != nil {
			fmt.Fprintln(stderr, err)
			return exitCorrupt
		}
		return exitOK
	}
	fmt.Fprintf(stdout, "disk %s\n", path)
	for _, r := range reps {
		printSlot(stdout, r)
	}
	return exitOK
}

func printSlot(w io.Writer, r *slotReport) {
	fmt.Fprintf(w, "\nslot %d: commit record %s", r.Slot, r.Record)
	if r.Newest {
		fmt.Fprint(w, " (newest)")
	}
	fmt.Fprintln(w)
	if r.Commit == nil {
		return
	}
	fmt.Fprintf(w, "  generation %d, offset %d, length %d\n", r.Commit.Generation, r.Commit.Offset, r.Commit.Length)
	if r.Error != "" {
		fmt.Fprintf(w, "  INVALID: %s\n", r.Error)
		return
	}
	h := r.Header
	fmt.Fprintf(w, "  header: format v%d, generation %d, created %s, vm %q id %s\n", h.Version, h.Generation, h.Created, h.VMName, h.VMID)
	fmt.Fprintf(w, "  digest sha256 %s, hmac %s\n", r.Digest, r.HMACStatus)
	m := r.Manifest
	fmt.Fprintf(w, "  manifest: %d vCPU(s), %d CPUID leaves\n", m.VCPUs, len(m.CPUID))
	for _, x := range m.Memory {
		fmt.Fprintf(w, "    memory %#012x-%#012x %-8s %s\n", x.GPA, x.GPA+x.Size-1, x.Kind, x.Name)
	}
	for _, d := range m.Devices {
		req := "optional"
		if d.Required {
			req = "required"
		}
		fmt.Fprintf(w, "    device %s instance %d state v%d %s\n", d.Name, d.Instance, d.StateVersion, req)
	}
	for _, p := range m.Properties {
		fmt.Fprintf(w, "    property %s=%q\n", p.Key, p.Value)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  index\ttype\tinstance\tversion\tflags\toffset\tlength\tcrc32c\t")
	for _, c := range r.Chunks {
		fl := "optional"
		if c.Required() {
			fl = "required"
		}
		if !c.Known {
			fl += ",raw"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%d\t%s\t%d\t%d\t%08x\t\n", c.Index, c.Type, c.Instance, c.Version, fl, c.Offset, c.Length, c.CRC)
	}
	tw.Flush()
	if r.RAM != nil {
		var data, carried uint64
		for _, x := range r.RAM.Ranges {
			data += x.Data
			carried += x.Carried
		}
		fmt.Fprintf(w, "  ram: %d range(s), %d MiB, %d pages carried, %d stored, %d zero elided, incremental %v\n",
			len(r.RAM.Ranges), r.RAM.Bytes()>>20, carried, data, carried-data, r.RAM.Incremental)
	}
}

// verify checks the commit records and the newest committed snapshot.
func verify(path string, sector int, key []byte, stdout, stderr io.Writer) int {
	reps, _, dev, err := examine(path, sector, key)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitCorrupt
	}
	defer dev.Close()
	status := exitOK
	var newest *slotReport
	for _, r := range reps {
		if r.Record != "blank" && r.Record != "valid" {
			fmt.Fprintf(stdout, "CORRUPT slot %d: %s\n", r.Slot, r.Record)
			status = exitCorrupt
		}
		if r.Newest {
			newest = r
		}
	}
	if newest == nil {
		fmt.Fprintln(stdout, "CORRUPT: no committed snapshot")
		return exitCorrupt
	}
	for _, r := range reps {
		if r.Commit == nil || r == newest {
			continue
		}
		if r.Error != "" {
			// An older slot may be stale after an interrupted save.
			fmt.Fprintf(stdout, "note: older slot %d generation %d is not loadable: %s\n", r.Slot, r.Commit.Generation, r.Error)
		} else {
			fmt.Fprintf(stdout, "ok slot %d generation %d (older)\n", r.Slot, r.Commit.Generation)
		}
	}
	if newest.Error != "" {
		fmt.Fprintf(stdout, "CORRUPT slot %d generation %d: %s\n", newest.Slot, newest.Commit.Generation, newest.Error)
		return exitCorrupt
	}
	fmt.Fprintf(stdout, "ok slot %d generation %d (newest): %d chunks, all checksums and digest valid, hmac %s\n",
		newest.Slot, newest.Commit.Generation, len(newest.Chunks)+1, newest.HMACStatus)
	return status
}

// fileSink writes guest RAM into a file at offset = GPA. The file starts
// empty and sparse, so zero pages need no writes.
type fileSink struct{ f *os.File }

func (s fileSink) WriteAt(p []byte, gpa int64) (int, error) { return s.f.WriteAt(p, gpa) }
func (s fileSink) ZeroAt(gpa, n uint64) error               { return nil }

// extractRAM writes the guest RAM of the newest valid snapshot to out, as a
// raw file where byte offset = guest-physical address.
func extractRAM(path, out string, sector int, key []byte, stdout, stderr io.Writer) int {
	dev, err := filedev.OpenReadOnly(path, sector)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitCorrupt
	}
	defer dev.Close()
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitCorrupt
	}
	f, err := os.Create(out)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer f.Close()
	snap, c, err := s.Load(snapshot.DecodeOptions{Inspect: true, SkipAuth: len(key) == 0, Key: key, Memory: fileSink{f}})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitCorrupt
	}
	var end uint64
	for _, r := range snap.Manifest.Memory {
		if r.Kind == snapshot.MemRAM {
			end = max(end, r.GPA+r.Size)
		}
	}
	if err := f.Truncate(int64(end)); err != nil {
		fmt.Fprintln(stderr, err)
		return exitCorrupt
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitCorrupt
	}
	fmt.Fprintf(stdout, "wrote %d bytes of guest RAM (generation %d) to %s\n", end, c.Generation, out)
	return exitOK
}
