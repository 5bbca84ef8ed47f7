package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"tamavisor/kernel"
	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
	"tamavisor/svm"
)

// slotReport is what inspect shows of one slot. JSON names are snake_case
// and numbers are JSON numbers.
type slotReport struct {
	Slot        int              `json:"slot"`
	Record      string           `json:"record"`                 // "blank", "valid" or "invalid"
	RecordError string           `json:"record_error,omitempty"` // why the record is invalid
	Commit      *snapshot.Commit `json:"commit,omitempty"`
	// Previous is the slot's other valid commit record: the stream before
	// Commit's in its chain, which a load falls back to.
	Previous *snapshot.Commit `json:"previous,omitempty"`
	// RecordNote says why the slot's other record position is invalid
	// (torn by an interrupted save) when the slot has a valid record.
	RecordNote string `json:"record_note,omitempty"`
	Newest     bool   `json:"newest"`
	// Error says why the snapshot does not decode with tamavisor's
	// decoders (kernel.Registry). If only those refuse it (its integrity
	// is fine), what follows is read without them.
	Error    string            `json:"error,omitempty"`
	Header   *headerReport     `json:"header,omitempty"`
	Manifest *manifestReport   `json:"manifest,omitempty"`
	VM       *vmReport         `json:"vm,omitempty"`
	VCPUs    []*vcpuReport     `json:"vcpus,omitempty"`
	Chunks   []*snapshot.Chunk `json:"chunks,omitempty"`
	RAM      *snapshot.RAMInfo `json:"ram,omitempty"`
	// Chain lists the streams the snapshot is made of, oldest (the full
	// snapshot) first; RAM above is their merged result.
	Chain  []snapshot.ChainStream `json:"chain,omitempty"`
	Digest string                 `json:"digest,omitempty"`
	Keyed  bool                   `json:"keyed"`
	HMAC   string                 `json:"hmac,omitempty"`

	// KeyNote says the HMAC verified only with --key-file's contents
	// without their trailing newline.
	KeyNote string `json:"key_note,omitempty"`

	err       error // the decoding error behind Error
	integrity bool  // err is about integrity (checksum, digest, structure), not the HMAC or tamavisor's decoders
	key       int   // index in the keys of the key that authenticated it, or -1
}

// trimmedKeyNote explains a snapshot whose HMAC verifies with the key
// file's contents without the trailing newline.
const trimmedKeyNote = "the HMAC verifies with --key-file's contents without the trailing newline, not as they are: " +
	"tamavisor given this file (make qemu KEYFILE=) keeps the newline in the key and refuses the restore; " +
	"give the key with KEY=, or remove the newline from the file"

// keyFileKeys returns the HMAC keys to try for the contents b of a key
// file: b as it is, which is what tamavisor uses (make qemu KEYFILE=),
// then b without a trailing newline (a file written by echo for a key given
// with KEY=).
func keyFileKeys(b []byte) [][]byte {
	keys := [][]byte{b}
	if t := []byte(strings.TrimRight(string(b), "\r\n")); len(t) != len(b) && len(t) > 0 {
		keys = append(keys, t)
	}
	return keys
}

// decodeAuth decodes the snapshot of c with opts and, if keys are given,
// each key in turn until one authenticates it; it returns the index of that
// key. Without keys the HMAC is not checked (index -1).
func decodeAuth(s *snapshot.Store, c *snapshot.Commit, opts snapshot.DecodeOptions, keys [][]byte) (*snapshot.Snapshot, int, error) {
	if len(keys) == 0 {
		opts.SkipAuth, opts.Key = true, nil
		snap, err := s.Decode(c, opts)
		return snap, -1, err
	}
	for i, k := range keys {
		opts.Key = k
		snap, err := s.Decode(c, opts)
		if err != nil && errors.Is(err, snapshot.ErrAuth) && i+1 < len(keys) {
			continue
		}
		return snap, i, err
	}
	panic("unreachable")
}

type headerReport struct {
	Version    uint16 `json:"format_version"`
	Generation uint64 `json:"generation"`
	Created    string `json:"created"`
	CreatedNS  int64  `json:"created_unix_ns"`
	VMID       string `json:"vm_id"`
	VMName     string `json:"vm_name"`
	Flags      uint32 `json:"flags"`
}

type manifestReport struct {
	VCPUs      uint32                 `json:"vcpus"`
	Memory     []memReport            `json:"memory"`
	CPUID      []cpuidReport          `json:"cpuid"`
	Devices    []snapshot.DeviceEntry `json:"devices"`
	Properties []snapshot.Property    `json:"properties"`
}

type memReport struct {
	GPA      uint64 `json:"gpa"`
	Size     uint64 `json:"size"`
	Kind     uint32 `json:"kind"`
	KindName string `json:"kind_name"`
	Name     string `json:"name"`
}

type cpuidReport struct {
	Leaf    uint32 `json:"leaf"`
	Subleaf uint32 `json:"subleaf"`
	EAX     uint32 `json:"eax"`
	EBX     uint32 `json:"ebx"`
	ECX     uint32 `json:"ecx"`
	EDX     uint32 `json:"edx"`
}

// vmReport is the vm chunk (kernel.VMConfig).
type vmReport struct {
	Name    string `json:"name"`
	RAMSize uint64 `json:"ram_size"`
}

// vcpuReport is a vcpu chunk (kernel.VCPUState): the guest's registers.
type vcpuReport struct {
	Instance uint32               `json:"instance"`
	Mode     string               `json:"mode"`
	CPL      uint8                `json:"cpl"`
	Regs     map[string]uint64    `json:"regs"`
	Segments map[string]segReport `json:"segments"`
	Halted   bool                 `json:"halted"`
	EventInj uint64               `json:"event_inj"`
	Deferred uint64               `json:"deferred_interrupt"`
	GuestTSC uint64               `json:"guest_tsc"`
	XCR0     uint64               `json:"xcr0"`

	order []string // Regs in display order
}

type segReport struct {
	Selector uint16 `json:"selector"`
	Attrib   uint16 `json:"attrib"`
	Limit    uint32 `json:"limit"`
	Base     uint64 `json:"base"`
}

// describeVCPU turns a decoded vcpu chunk into its report.
func describeVCPU(instance uint32, st *kernel.VCPUState) *vcpuReport {
	s, r := &st.Save, &st.Regs
	v := &vcpuReport{Instance: instance, Mode: cpuMode(s), CPL: s.CPL, Regs: map[string]uint64{},
		Segments: map[string]segReport{}, Halted: st.Halted, EventInj: st.EventInj, Deferred: st.Deferred,
		GuestTSC: st.GuestTSC, XCR0: st.XCR0}
	for _, x := range []struct {
		name string
		val  uint64
	}{
		{"rip", s.RIP}, {"rsp", s.RSP}, {"rflags", s.RFLAGS},
		{"rax", s.RAX}, {"rbx", r.RBX}, {"rcx", r.RCX}, {"rdx", r.RDX},
		{"rsi", r.RSI}, {"rdi", r.RDI}, {"rbp", r.RBP},
		{"r8", r.R8}, {"r9", r.R9}, {"r10", r.R10}, {"r11", r.R11},
		{"r12", r.R12}, {"r13", r.R13}, {"r14", r.R14}, {"r15", r.R15},
		{"cr0", s.CR0}, {"cr2", s.CR2}, {"cr3", s.CR3}, {"cr4", s.CR4}, {"efer", s.EFER},
		{"dr6", s.DR6}, {"dr7", s.DR7}, {"pat", s.GPAT},
	} {
		v.Regs[x.name] = x.val
		v.order = append(v.order, x.name)
	}
	for _, x := range []struct {
		name string
		seg  svm.Segment
	}{{"cs", s.CS}, {"ss", s.SS}, {"ds", s.DS}, {"es", s.ES}, {"fs", s.FS}, {"gs", s.GS},
		{"gdtr", s.GDTR}, {"idtr", s.IDTR}, {"ldtr", s.LDTR}, {"tr", s.TR}} {
		v.Segments[x.name] = segReport{x.seg.Selector, x.seg.Attrib, x.seg.Limit, x.seg.Base}
	}
	return v
}

// cpuMode names the operating mode of a saved state (APM vol. 2, 1.2).
func cpuMode(s *svm.StateSaveArea) string {
	paging := ""
	if s.CR0&svm.CR0PG != 0 {
		paging = ", paging"
	}
	switch {
	case s.CR0&svm.CR0PE == 0:
		return "real mode"
	case s.EFER&svm.EFERLMA != 0 && s.CS.Attrib&svm.SegL != 0:
		return "64-bit mode (long mode)"
	case s.EFER&svm.EFERLMA != 0:
		return "compatibility mode (long mode)"
	case s.RFLAGS&svm.RFLAGSVM != 0:
		return "virtual-8086 mode" + paging
	case s.CS.Attrib&svm.SegDB != 0:
		return "32-bit protected mode" + paging
	}
	return "16-bit protected mode" + paging
}

// openStore opens the disk image read-only.
func openStore(path string, sector int) (*snapshot.Store, *filedev.Device, error) {
	dev, err := filedev.OpenReadOnly(path, sector)
	if err != nil {
		return nil, nil, err
	}
	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	return s, dev, nil
}

// examine reads both slots of the store, decoding each committed snapshot
// with tamavisor's decoders (kernel.Registry). Chunks of types tamavisor
// does not know are shown raw, not refused.
func examine(s *snapshot.Store, keys [][]byte) ([]*slotReport, error) {
	st, err := s.Records()
	if err != nil {
		return nil, err
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
			rep.Record = "invalid"
			// Records says "commit record N: why": keep the why.
			why := r.Err
			if u := errors.Unwrap(r.Err); u != nil {
				why = u
			}
			rep.RecordError = why.Error()
			continue
		}
		rep.Record = "valid"
		rep.Commit, rep.Previous = r.Commit, r.Previous
		if r.OtherErr != nil {
			rep.RecordNote = r.OtherErr.Error()
		}
		if newest < 0 || r.Commit.Generation > st[newest].Commit.Generation {
			newest = r.Slot
		}
		opts := snapshot.DecodeOptions{Registry: kernel.Registry(), Inspect: true}
		snap, k, err := decodeAuth(s, r.Commit, opts, keys)
		if err != nil {
			rep.err, rep.Error = err, err.Error()
			// Without tamavisor's decoders: is it whole? If so, only
			// they refuse it.
			opts.Registry = nil
			if snap, k, err = decodeAuth(s, r.Commit, opts, keys); err != nil {
				rep.integrity = !errors.Is(err, snapshot.ErrAuth)
				continue
			}
		}
		describe(rep, snap)
		rep.key = k
		if k > 0 {
			rep.KeyNote = trimmedKeyNote
		}
	}
	if newest >= 0 {
		reps[newest].Newest = true
	}
	return reps, nil
}

// describe fills rep from a decoded snapshot.
func describe(rep *slotReport, snap *snapshot.Snapshot) {
	h := snap.Header
	rep.Header = &headerReport{h.Version, h.Generation, time.Unix(0, h.Created).UTC().Format(time.RFC3339Nano), h.Created,
		kernel.UUID(h.VMID), h.VMName, h.Flags}
	m := snap.Manifest
	mr := &manifestReport{VCPUs: m.VCPUs, Devices: m.Devices, Properties: m.Properties,
		Memory: []memReport{}, CPUID: []cpuidReport{}}
	for _, x := range m.Memory {
		mr.Memory = append(mr.Memory, memReport{x.GPA, x.Size, uint32(x.Kind), x.Kind.String(), x.Name})
	}
	for _, l := range m.CPUID {
		mr.CPUID = append(mr.CPUID, cpuidReport{l.Leaf, l.Subleaf, l.EAX, l.EBX, l.ECX, l.EDX})
	}
	rep.Manifest = mr
	for _, c := range snap.Chunks {
		switch v := c.Value.(type) {
		case kernel.VMConfig:
			rep.VM = &vmReport{Name: v.Name, RAMSize: v.MemSize}
		case *kernel.VCPUState:
			rep.VCPUs = append(rep.VCPUs, describeVCPU(c.Instance, v))
		}
	}
	rep.Chunks, rep.RAM, rep.Chain = snap.Chunks, snap.RAM, snap.Chain
	rep.Digest = hex.EncodeToString(snap.Digest[:])
	rep.Keyed = h.Flags&snapshot.HeaderKeyed != 0
	switch {
	case snap.Authenticated:
		rep.HMAC = "verified"
	case rep.Keyed:
		rep.HMAC = "present, not checked (no --key-file)"
	default:
		rep.HMAC = "none"
	}
}

func inspect(path string, sector int, keys [][]byte, asJSON bool, stdout, stderr io.Writer) int {
	s, dev, err := openStore(path, sector)
	if err != nil {
		fmt.Fprintf(stderr, "%s: inspect: %v\n", tool, err)
		return exitFailed
	}
	defer dev.Close()
	reps, err := examine(s, keys)
	if err != nil {
		fmt.Fprintf(stderr, "%s: inspect: %v\n", tool, err)
		return exitFailed
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"disk": path, "slots": reps}); err != nil {
			fmt.Fprintf(stderr, "%s: inspect: %v\n", tool, err)
			return exitFailed
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
	if r.RecordError != "" {
		fmt.Fprintf(w, ": %s", r.RecordError)
	}
	if r.Newest {
		fmt.Fprint(w, " (newest)")
	}
	fmt.Fprintln(w)
	if r.Commit == nil {
		return
	}
	fmt.Fprintf(w, "  generation %d, offset %d, length %d\n", r.Commit.Generation, r.Commit.Offset, r.Commit.Length)
	if p := r.Previous; p != nil {
		fmt.Fprintf(w, "  previous commit record: generation %d, offset %d, length %d (loaded if the newest does not verify)\n", p.Generation, p.Offset, p.Length)
	}
	if r.RecordNote != "" {
		fmt.Fprintf(w, "  note: %s\n", r.RecordNote)
	}
	switch {
	case r.Error != "" && r.Header == nil && r.integrity:
		fmt.Fprintf(w, "  CORRUPT: %s\n", r.Error)
		return
	case r.Error != "" && r.Header == nil:
		fmt.Fprintf(w, "  NOT RESTORABLE: %s\n", r.Error)
		return
	case r.Error != "":
		fmt.Fprintf(w, "  NOT RESTORABLE: %s\n  (the rest is read without tamavisor's decoders: its checksums and digest are valid)\n", r.Error)
	}
	h := r.Header
	fmt.Fprintf(w, "  header: format v%d, generation %d, created %s, vm %q id %s\n", h.Version, h.Generation, h.Created, h.VMName, h.VMID)
	fmt.Fprintf(w, "  digest sha256 %s, hmac %s\n", r.Digest, r.HMAC)
	if r.KeyNote != "" {
		fmt.Fprintf(w, "  note: %s\n", r.KeyNote)
	}
	m := r.Manifest
	fmt.Fprintf(w, "  manifest: %d vCPU(s), %d CPUID leaves\n", m.VCPUs, len(m.CPUID))
	for _, x := range m.Memory {
		fmt.Fprintf(w, "    memory %#012x-%#012x %-8s %s\n", x.GPA, x.GPA+x.Size-1, x.KindName, x.Name)
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
	if r.VM != nil {
		fmt.Fprintf(w, "  vm %q: %d MiB of RAM (%d bytes)\n", r.VM.Name, r.VM.RAMSize>>20, r.VM.RAMSize)
	}
	for _, v := range r.VCPUs {
		printVCPU(w, v)
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
	printChain(w, r.Chain)
}

// printChain lists the streams of a slot's chain, one line each.
func printChain(w io.Writer, chain []snapshot.ChainStream) {
	if len(chain) == 0 {
		return
	}
	fmt.Fprintf(w, "  chain: %d stream(s), oldest first (ram above is their merged result)\n", len(chain))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  generation\tkind\toffset\tlength\tpages carried\tstored\t")
	for _, c := range chain {
		kind := "full"
		if c.Incremental {
			kind = "increment"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%d\t%d\t%d\t\n", c.Generation, kind, c.Offset, c.Length, c.Carried, c.Stored)
	}
	tw.Flush()
}

func printVCPU(w io.Writer, v *vcpuReport) {
	halted := ""
	if v.Halted {
		halted = ", halted (HLT, interrupts on)"
	}
	fmt.Fprintf(w, "  vcpu %d: %s, CPL %d%s\n", v.Instance, v.Mode, v.CPL, halted)
	for i, name := range v.order {
		if i%4 == 0 {
			fmt.Fprint(w, "   ")
		}
		fmt.Fprintf(w, " %-6s 0x%016x", name, v.Regs[name])
		if i%4 == 3 || i == len(v.order)-1 {
			fmt.Fprintln(w)
		}
	}
	for _, name := range []string{"cs", "ss", "ds", "es", "fs", "gs", "gdtr", "idtr", "ldtr", "tr"} {
		s := v.Segments[name]
		fmt.Fprintf(w, "    %-4s selector 0x%04x attrib 0x%03x limit 0x%08x base %#x\n", name, s.Selector, s.Attrib, s.Limit, s.Base)
	}
	fmt.Fprintf(w, "    xcr0 %#x, guest TSC %d, event to inject %#x, deferred interrupt %#x\n", v.XCR0, v.GuestTSC, v.EventInj, v.Deferred)
}
