package blkio

import (
	"errors"
	"testing"
)

// TestAsyncErrors: the first error of each kind is kept and reported
// once; Sync's report prefers a read's or write's; a lost request's error
// goes where the lost requests were.
func TestAsyncErrors(t *testing.T) {
	w1, w2, f1, f2 := errors.New("w1"), errors.New("w2"), errors.New("f1"), errors.New("f2")
	var a AsyncErrors
	a.Keep(nil)
	a.Keep(w1)
	a.Keep(w2)
	a.KeepFlush(f1)
	a.KeepFlush(f2)
	if err := a.TakeAll(); err != w1 {
		t.Fatalf("TakeAll: %v, want w1", err)
	}
	if a.Take() != nil || a.TakeFlush() != nil || a.TakeAll() != nil {
		t.Fatal("an error reported twice")
	}
	a.Lost(f2, false)
	if err := a.TakeAll(); err != f2 {
		t.Fatalf("TakeAll after a lost flush: %v", err)
	}
	a.Lost(w2, true)
	a.KeepFlush(f1)
	if a.TakeFlush() != f1 || a.Take() != w2 {
		t.Fatal("Take and TakeFlush do not return each kind")
	}
}
