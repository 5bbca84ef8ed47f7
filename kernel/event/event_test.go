package event

import "testing"

func TestQueueOrderAndRearm(t *testing.T) {
	now := int64(0)
	q := NewQueue(func() int64 { return now })
	var got []string
	a := q.NewTimer(func(int64) { got = append(got, "a") })
	b := q.NewTimer(func(int64) { got = append(got, "b") })
	var c *Timer
	c = q.NewTimer(func(n int64) { got = append(got, "c"); c.Arm(n + 10) })
	a.Arm(30)
	b.Arm(10)
	c.Arm(20)
	if q.Next() != 10 {
		t.Fatalf("next %d, want 10", q.Next())
	}
	now = 25
	if n := q.Run(); n != 2 {
		t.Fatalf("fired %d, want 2 (%v)", n, got)
	}
	if len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("order %v", got)
	}
	if d, ok := c.Armed(); !ok || d != 35 {
		t.Fatalf("c re-armed at %d %v, want 35", d, ok)
	}
	a.Stop()
	if q.Next() != 35 {
		t.Fatalf("next %d after stop, want 35", q.Next())
	}
	b.Stop() // not armed: no effect
	if _, ok := b.Armed(); ok {
		t.Fatal("b armed after stop")
	}
}

func TestRunBoundsRefire(t *testing.T) {
	q := NewQueue(func() int64 { return 100 })
	var t0 *Timer
	n := 0
	t0 = q.NewTimer(func(now int64) { n++; t0.Arm(now) }) // always due
	t0.Arm(0)
	if fired := q.Run(); fired != 1+maxRefire || n != fired {
		t.Fatalf("fired %d (%d calls), want %d", fired, n, 1+maxRefire)
	}
	if q.Next() != 100 {
		t.Fatal("timer lost")
	}
}
