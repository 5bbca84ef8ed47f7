package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"tamavisor/kernel"
	"tamavisor/snapshot"
)

// verify tells whether restore will accept the disk's newest snapshot (or
// generation gen, which make qemu RESTORE_GEN=gen restores): the commit
// record, the snapshot's integrity and tamavisor's decoding of it, then
// kernel.Restore itself on a scratch machine.
func verify(path string, gen uint64, sector int, keys [][]byte, stdout, stderr io.Writer) int {
	s, dev, err := openStore(path, sector)
	if err != nil {
		fmt.Fprintf(stderr, "%s: verify: %v\n", tool, err)
		return exitFailed
	}
	defer dev.Close()
	reps, err := examine(s, keys)
	if err != nil {
		fmt.Fprintf(stderr, "%s: verify: %v\n", tool, err)
		return exitFailed
	}
	var target *slotReport
	var have []string
	for _, r := range reps {
		if r.Commit != nil {
			have = append(have, fmt.Sprintf("%d (slot %d)", r.Commit.Generation, r.Slot))
			if gen == 0 && r.Newest || gen != 0 && r.Commit.Generation == gen {
				target = r
			}
		}
	}
	switch {
	case len(have) == 0:
		fmt.Fprintln(stdout, "FAIL: no committed snapshot on the disk: restore has nothing to resume")
		for _, r := range reps {
			if r.Record == "invalid" {
				fmt.Fprintf(stdout, "  slot %d: commit record invalid: %s\n", r.Slot, r.RecordError)
			}
		}
		return exitFailed
	case target == nil:
		fmt.Fprintf(stdout, "FAIL: no committed snapshot with generation %d (committed on the disk: generation %s)\n", gen, joinAnd(have))
		return exitFailed
	}
	for _, r := range reps {
		switch {
		case r == target:
		case r.Record == "invalid":
			// A torn record after a crash: restore ignores it.
			fmt.Fprintf(stdout, "note: slot %d: commit record invalid, restore ignores it: %s\n", r.Slot, r.RecordError)
		case r.Commit == nil:
		case r.Error != "":
			// An older slot may be stale after an interrupted save.
			fmt.Fprintf(stdout, "note: slot %d generation %d does not decode (not checked further): %s\n", r.Slot, r.Commit.Generation, r.Error)
		default:
			fmt.Fprintf(stdout, "note: slot %d generation %d decodes (not checked further)\n", r.Slot, r.Commit.Generation)
		}
	}
	which := "newest"
	if !target.Newest {
		which = "older; restored with make qemu RESTORE_GEN=" + fmt.Sprint(target.Commit.Generation)
	}
	where := fmt.Sprintf("slot %d generation %d (%s)", target.Slot, target.Commit.Generation, which)
	switch {
	case target.Error != "" && target.integrity:
		fmt.Fprintf(stdout, "CORRUPT %s: %s\n", where, target.Error)
		return exitFailed
	case target.Error != "" && errors.Is(target.err, snapshot.ErrAuth):
		fmt.Fprintf(stdout, "NOT RESTORABLE %s: %s\n", where, target.Error)
		return exitFailed
	case target.Error != "":
		fmt.Fprintf(stdout, "NOT RESTORABLE %s: tamavisor cannot decode it: %s\n", where, target.Error)
		return exitFailed
	case target.Keyed && len(keys) == 0:
		fmt.Fprintf(stdout, "NOT VERIFIED %s: the snapshot is keyed (HMAC) and restore checks it with its key: "+
			"its checksums and digest are valid; give --key-file to run restore's checks\n", where)
		return exitUsage
	}
	var key []byte
	if target.key >= 0 {
		key = keys[target.key]
	}
	var ram uint64
	if target.VM != nil {
		ram = target.VM.RAMSize
	}
	var saw []snapshot.CPUIDLeaf
	for _, l := range target.Manifest.CPUID {
		saw = append(saw, snapshot.CPUIDLeaf{Leaf: l.Leaf, Subleaf: l.Subleaf, EAX: l.EAX, EBX: l.EBX, ECX: l.ECX, EDX: l.EDX})
	}
	store := s
	if !target.Newest {
		if store, err = s.SlotView(target.Slot); err != nil {
			fmt.Fprintf(stderr, "%s: verify: %v\n", tool, err)
			return exitFailed
		}
	}
	vm, _, err := checkRestore(store, key, ram, saw)
	if err != nil {
		fmt.Fprintf(stdout, "NOT RESTORABLE %s: %s\n", where, restoreReason(err))
		return exitFailed
	}
	defer vm.Destroy()
	if target.KeyNote != "" {
		// tamavisor takes the file's bytes as they are: it would refuse.
		fmt.Fprintf(stdout, "NOT RESTORABLE %s with this key file as it is: %s\n", where, target.KeyNote)
		return exitFailed
	}
	hmac := target.HMAC
	if hmac == "verified" {
		hmac = "HMAC verified"
	} else {
		hmac = "no HMAC"
	}
	fmt.Fprintf(stdout, "ok %s: restore accepts it: vm %q, %d MiB of RAM, %d chunks; checksums, digest, %s; "+
		"tamavisor decodes every chunk; the vCPU state passes restore's checks (svm.ValidateState, svm.Check)\n",
		where, vm.Name, vm.Mem.Size>>20, len(target.Chunks)+1, hmac)
	fmt.Fprintln(stdout, "note: host-specific checks (CPUID features the guest saw, MXCSR_MASK, XSAVE components) were made against "+
		"the most capable host; a host lacking one of them still refuses the restore")
	return exitOK
}

// restoreReason is why kernel.Restore refused, without its "generation N:"
// prefix and "restore refused:" wording (the caller says both).
func restoreReason(err error) string {
	var re *kernel.RefusedError
	if errors.As(err, &re) {
		return re.Reason
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "generation ") {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			msg = rest
		}
	}
	return msg
}
