// Package blkiotest checks the disk drivers (boot/virtio/blk, boot/nvme)
// in their tests against the rules of package blkio they share.
package blkiotest

import "testing"

// Call is one driver operation, named for reports.
type Call struct {
	Name string
	Do   func() error
}

// Driver is what FlushErrorReportedOnce watches of a driver.
type Driver struct {
	Sync, FlushAsync, Flush func() error
	Flushes                 func() uint64 // flushes started so far (the driver's Stats)
	InFlight                func() int    // requests the driver has in flight
}

// FlushErrorReportedOnce checks blkio.AsyncErrors' rule for a flush that
// FlushAsync started and that failed: of Sync, FlushAsync, Flush, Sync,
// Flush in turn (without the first Sync if settled: an operation before
// them saw the flush complete), only the call named want reports the
// flush's error (isFlushErr tells it from others), and a FlushAsync that
// reports it starts no flush. after, if set, runs after call i.
func FlushErrorReportedOnce(t testing.TB, d Driver, settled bool, want string, isFlushErr func(error) bool, after func(i int)) {
	t.Helper()
	calls := []Call{{"Sync", d.Sync}, {"FlushAsync", d.FlushAsync}, {"Flush", d.Flush}, {"Sync", d.Sync}, {"Flush", d.Flush}}
	if settled {
		calls = calls[1:]
	}
	var got []string
	for i, c := range calls {
		before := d.Flushes()
		err := c.Do()
		if after != nil {
			after(i)
		}
		if err == nil {
			continue
		}
		if !isFlushErr(err) {
			t.Fatalf("%s (call %d): %v, not the flush's error", c.Name, i, err)
		}
		got = append(got, c.Name)
		if c.Name == "FlushAsync" && (d.InFlight() != 0 || d.Flushes() != before) {
			t.Fatalf("the FlushAsync that reported the error started a flush")
		}
	}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("the flush's error was reported by %v, want once by %s", got, want)
	}
}
