// Package blkio holds what the disk drivers (boot/virtio/blk, boot/nvme)
// share about requests that run on after the call that started them.
package blkio

// AsyncErrors keeps the failures of requests that complete after the call
// that started them, so that each is reported once: those of reads and
// writes (WriteAsync, WriteVAsync, ReadVAsync) for Sync, and those of
// flushes started and not waited for (FlushAsync) for Sync, FlushAsync or
// Flush. Only the first of each kind is kept. The zero value is ready.
type AsyncErrors struct {
	rw, flush error
}

// Keep keeps err (if not nil) as a read's or write's, unless one is kept.
func (a *AsyncErrors) Keep(err error) {
	if a.rw == nil {
		a.rw = err
	}
}

// KeepFlush keeps err (if not nil) as a flush's, unless one is kept.
func (a *AsyncErrors) KeepFlush(err error) {
	if a.flush == nil {
		a.flush = err
	}
}

// Lost keeps the error of a reset that dropped the requests in flight: as
// a read's or write's if any was among them (rw), else as the flushes'.
func (a *AsyncErrors) Lost(err error, rw bool) {
	if rw {
		a.Keep(err)
	} else {
		a.KeepFlush(err)
	}
}

// Take returns and forgets the kept read or write error.
func (a *AsyncErrors) Take() error {
	err := a.rw
	a.rw = nil
	return err
}

// TakeFlush returns and forgets the kept flush error.
func (a *AsyncErrors) TakeFlush() error {
	err := a.flush
	a.flush = nil
	return err
}

// TakeAll returns what Sync reports and forgets both: the read or write
// error, else the flush error (a flush's error that comes with a write's
// is dropped: the Sync failed anyway).
func (a *AsyncErrors) TakeAll() error {
	err := a.Take()
	if f := a.TakeFlush(); err == nil {
		err = f
	}
	return err
}
