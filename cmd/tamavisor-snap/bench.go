package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"tamavisor/snapshot"
	"tamavisor/snapshot/filedev"
)

// bench measures, in one run on one scratch file: a plain sequential write
// of the guest RAM bytes, encoding a snapshot of the guest to the store
// (Store.Save), a single decode pass of it (Store.Decode into memory), and a
// full Store.Load (verification pass plus restore pass). Rates are guest
// bytes per second.
func bench(size int64, dir string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "bench:", err)
		return exitCorrupt
	}
	tmp, err := os.MkdirTemp(dir, "tamavisor-snap-bench")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "disk.img")
	dev, err := filedev.Create(path, snapshot.DataStart+2*(size+size/64+1<<20), 512)
	if err != nil {
		return fail(err)
	}
	defer dev.Close()
	mem := demoGuest(size, 1)
	m := demoManifest(size)

	// Plain sequential write of the same guest bytes to the same file,
	// in 1 MiB requests, then flush.
	start := time.Now()
	const block = 1 << 20
	for off := int64(0); off < size; off += block {
		n := min(block, size-off)
		if _, err := dev.WriteAt(mem.b[off:off+n], snapshot.DataStart+off); err != nil {
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
	c, err := s.Save(snapshot.SaveOptions{Header: snapshot.Header{VMName: "bench"}}, saveGuest(mem, m, 1))
	if err != nil {
		return fail(err)
	}
	enc := time.Since(start)

	sink := &flatMem{b: make([]byte, size)}
	start = time.Now()
	if _, err := s.Decode(c, snapshot.DecodeOptions{Inspect: true, Memory: sink}); err != nil {
		return fail(err)
	}
	dec := time.Since(start)
	clear(sink.b)
	start = time.Now()
	if _, _, err := s.Load(snapshot.DecodeOptions{Inspect: true, Memory: sink}); err != nil {
		return fail(err)
	}
	load := time.Since(start)
	for i := range sink.b {
		if sink.b[i] != mem.b[i] {
			return fail(fmt.Errorf("restored RAM differs at %#x", i))
		}
	}

	mib := float64(size) / (1 << 20)
	rate := func(d time.Duration) float64 { return mib / d.Seconds() }
	fmt.Fprintf(stdout, "guest %.0f MiB (%d pages, half zero, half random), snapshot %.1f MiB, file %s\n",
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
