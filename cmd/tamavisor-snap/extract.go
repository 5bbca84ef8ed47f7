package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"tamavisor/snapshot"
)

// fileSink writes guest RAM into a file at offset = GPA. The file starts
// empty and sparse, so zero pages need writes only where an older stream
// of a chain wrote data (written: one bit per page).
type fileSink struct {
	f       *os.File
	written []byte
}

func (s *fileSink) WriteAt(p []byte, gpa int64) (int, error) {
	for pg := uint64(gpa) / snapshot.PageSize; pg < (uint64(gpa)+uint64(len(p))+snapshot.PageSize-1)/snapshot.PageSize; pg++ {
		for uint64(len(s.written)) <= pg/8 {
			s.written = append(s.written, 0)
		}
		s.written[pg/8] |= 1 << (pg % 8)
	}
	return s.f.WriteAt(p, gpa)
}

func (s *fileSink) ZeroAt(gpa, n uint64) error {
	var zero [snapshot.PageSize]byte
	for pg := gpa / snapshot.PageSize; pg < (gpa+n)/snapshot.PageSize; pg++ {
		if pg/8 < uint64(len(s.written)) && s.written[pg/8]&(1<<(pg%8)) != 0 {
			if _, err := s.f.WriteAt(zero[:], int64(pg*snapshot.PageSize)); err != nil {
				return err
			}
		}
	}
	return nil
}

// extractRAM writes the guest RAM of a snapshot to out, as a raw file where
// byte offset = guest-physical address: generation gen, or (gen 0) the
// newest snapshot that is valid, saying so on stderr if that is not the
// newest one. It checks integrity (checksums, digest, HMAC with
// --key-file), not whether restore accepts the snapshot.
func extractRAM(path, out string, gen uint64, sector int, keys [][]byte, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: extract-ram: %v\n", tool, err)
		return exitFailed
	}
	s, dev, err := openStore(path, sector)
	if err != nil {
		return fail(err)
	}
	defer dev.Close()
	recs, err := s.Records()
	if err != nil {
		return fail(err)
	}
	// Candidates, newest first.
	var cands []*snapshot.Commit
	var have []string
	for _, r := range recs {
		if r.Commit == nil {
			continue
		}
		have = append(have, fmt.Sprintf("%d (slot %d)", r.Commit.Generation, r.Slot))
		if gen == 0 || r.Commit.Generation == gen {
			cands = append(cands, r.Commit)
		}
	}
	if len(cands) == 2 && cands[1].Generation > cands[0].Generation {
		cands[0], cands[1] = cands[1], cands[0]
	}
	switch {
	case len(have) == 0:
		return fail(errors.New("no committed snapshot on the disk"))
	case len(cands) == 0:
		return fail(fmt.Errorf("no committed snapshot with generation %d (committed on the disk: generation %s)", gen, joinAnd(have)))
	}
	var c *snapshot.Commit
	var snap *snapshot.Snapshot
	key := -1
	opts := snapshot.DecodeOptions{Inspect: true}
	for i, cand := range cands {
		snap, key, err = decodeAuth(s, cand, opts, keys)
		if err == nil {
			c = cand
			break
		}
		fmt.Fprintf(stderr, "%s: extract-ram: slot %d generation %d is not valid: %v\n", tool, cand.Slot, cand.Generation, err)
		if i+1 < len(cands) {
			next := cands[i+1].Generation
			fmt.Fprintf(stderr, "%s: extract-ram: extracting the older generation %d instead (restore never falls back to it; "+
				"--generation %d chooses it without this warning)\n", tool, next, next)
		}
	}
	if c == nil {
		return exitFailed
	}
	if key > 0 {
		fmt.Fprintf(stderr, "%s: extract-ram: note: %s\n", tool, trimmedKeyNote)
	}
	f, err := os.Create(out)
	if err != nil {
		return fail(err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(out)
		}
	}()
	opts.Memory = &fileSink{f: f}
	if key >= 0 {
		opts.Key = keys[key]
	} else {
		opts.SkipAuth = true
	}
	if snap, err = s.Decode(c, opts); err != nil {
		return fail(fmt.Errorf("slot %d generation %d changed while being read: %w", c.Slot, c.Generation, err))
	}
	var end uint64
	for _, r := range snap.Manifest.Memory {
		if r.Kind == snapshot.MemRAM {
			end = max(end, r.GPA+r.Size)
		}
	}
	if err := f.Truncate(int64(end)); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	done = true
	fmt.Fprintf(stdout, "wrote %d bytes of guest RAM (slot %d, generation %d) to %s\n", end, c.Slot, c.Generation, out)
	return exitOK
}
