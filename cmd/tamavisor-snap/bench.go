package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"tamavisor/kernel"
	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
)

// flatMem is guest memory starting at GPA 0.
type flatMem struct{ b []byte }

func (m *flatMem) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("write %#x+%d outside guest memory", gpa, len(p))
	}
	return copy(m.b[gpa:], p), nil
}

// ZeroAt clears guest memory.
func (m *flatMem) ZeroAt(gpa, n uint64) error {
	clear(m.b[gpa : gpa+n])
	return nil
}

// bench measures, in one run on one scratch file: a plain sequential write
// of the guest RAM bytes, a save of the demo guest by the hypervisor's own
// writer (VM.Save), a single decode pass of it (Store.Decode into memory,
// with the hypervisor's decoders), and a full Store.Load (verification
// pass plus restore pass). Rates are guest bytes per second.
func bench(size uint64, dir string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: bench: %v\n", tool, err)
		return exitFailed
	}
	tmp, err := os.MkdirTemp(dir, "tamavisor-snap-bench")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "disk.img")
	dev, err := filedev.Create(path, snapshot.DataStart+2*int64(size+size/64+1<<20), 512)
	if err != nil {
		return fail(err)
	}
	defer dev.Close()
	vm, err := demoVM(demoPlatform(size), size, 1)
	if err != nil {
		return fail(err)
	}
	defer vm.Destroy()

	// Plain sequential write of the same guest bytes to the same file,
	// in 1 MiB requests, then flush.
	const block = 1 << 20
	buf := make([]byte, block)
	start := time.Now()
	for off := uint64(0); off < size; off += block {
		n := min(block, size-off)
		if err := vm.Mem.ReadGPA(off, buf[:n]); err != nil {
			return fail(err)
		}
		if _, err := dev.WriteAt(buf[:n], snapshot.DataStart+int64(off)); err != nil {
			return fail(err)
		}
	}
	if err := dev.Flush(); err != nil {
		return fail(err)
	}
	plain := time.Since(start)
	// Clear what the plain write left so Save starts from a blank store.
	if _, err := dev.WriteAt(make([]byte, snapshot.DataStart), 0); err != nil {
		return fail(err)
	}

	s, err := snapshot.Open(dev, snapshot.StoreOptions{})
	if err != nil {
		return fail(err)
	}
	start = time.Now()
	c, err := vm.Save(s, nil, 0, nil)
	if err != nil {
		return fail(err)
	}
	enc := time.Since(start)

	sink := &flatMem{b: make([]byte, size)}
	opts := snapshot.DecodeOptions{Registry: kernel.Registry(), Memory: sink}
	start = time.Now()
	if _, err := s.Decode(c, opts); err != nil {
		return fail(err)
	}
	dec := time.Since(start)
	clear(sink.b)
	start = time.Now()
	if _, _, err := s.Load(opts); err != nil {
		return fail(err)
	}
	load := time.Since(start)
	for off := uint64(0); off < size; off += block {
		n := min(block, size-off)
		if err := vm.Mem.ReadGPA(off, buf[:n]); err != nil {
			return fail(err)
		}
		if string(buf[:n]) != string(sink.b[off:off+n]) {
			return fail(fmt.Errorf("restored RAM differs in [%#x, %#x)", off, off+n))
		}
	}

	mib := float64(size) / (1 << 20)
	rate := func(d time.Duration) float64 { return mib / d.Seconds() }
	fmt.Fprintf(stdout, "guest %.0f MiB (%d pages, about half zero, half random), snapshot %.1f MiB, file %s\n",
		mib, size/snapshot.PageSize, float64(c.Length)/(1<<20), path)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\ttime\tguest MiB/s\tvs plain write\t")
	row := func(name string, d time.Duration) {
		fmt.Fprintf(tw, "%s\t%.3fs\t%.1f\t%.2fx\t\n", name, d.Seconds(), rate(d), plain.Seconds()/d.Seconds())
	}
	row("plain sequential write + fsync", plain)
	row("encode (Store.Save)", enc)
	row("decode (one pass)", dec)
	row("load (verify + restore)", load)
	tw.Flush()
	return exitOK
}
