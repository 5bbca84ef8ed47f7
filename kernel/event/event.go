// Package event is tamavisor's one timer queue: every deadline a VM has
// (a device's timer, the console and control-channel service, a time
// budget) is a Timer on the VM's Queue, and the run loop arms the host's
// preemption timer for the earliest one.
//
// Time is VM time in nanoseconds: the guest's TSC converted at the host's
// TSC frequency, so a deadline saved in a snapshot means the same guest
// instant after a restore (the guest TSC continues from its saved value).
// The package is plain Go; the clock comes from outside.
package event

import "math"

// Never is the deadline of a timer that is not armed.
const Never = math.MaxInt64

// Clock returns the current VM time in nanoseconds.
type Clock func() int64

// Queue holds timers and fires the due ones. It is used by one goroutine
// (the vCPU's run loop).
type Queue struct {
	now    Clock
	timers []*Timer // armed timers, unordered: a VM has a handful
}

// NewQueue returns an empty queue reading time from now.
func NewQueue(now Clock) *Queue { return &Queue{now: now} }

// Now returns the current VM time.
func (q *Queue) Now() int64 { return q.now() }

// Timer calls its function once when VM time reaches its deadline.
type Timer struct {
	q        *Queue
	fire     func(now int64)
	deadline int64
	armed    bool
}

// NewTimer returns an unarmed timer that calls fire(now) when due.
func (q *Queue) NewTimer(fire func(now int64)) *Timer {
	return &Timer{q: q, fire: fire, deadline: Never}
}

// Arm sets the deadline (absolute VM time, ns), replacing an earlier one.
func (t *Timer) Arm(deadline int64) {
	t.deadline = deadline
	if !t.armed {
		t.armed = true
		t.q.timers = append(t.q.timers, t)
	}
}

// Stop disarms the timer.
func (t *Timer) Stop() {
	if !t.armed {
		return
	}
	t.armed = false
	t.deadline = Never
	ts := t.q.timers
	for i, x := range ts {
		if x == t {
			ts[i] = ts[len(ts)-1]
			t.q.timers = ts[:len(ts)-1]
			return
		}
	}
}

// Armed reports whether the timer is armed, and its deadline.
func (t *Timer) Armed() (deadline int64, ok bool) { return t.deadline, t.armed }

// Next returns the earliest deadline, or Never.
func (q *Queue) Next() int64 {
	next := int64(Never)
	for _, t := range q.timers {
		next = min(next, t.deadline)
	}
	return next
}

// Run fires every timer due at the current time, earliest first, and
// returns how many fired. A timer's function may re-arm it or others; one
// re-armed at or before now fires again in the same call only after the
// others that were due, so a periodic timer with a tiny period cannot
// starve the rest: Run fires at most len(timers)+maxRefire times.
func (q *Queue) Run() int {
	now := q.now()
	fired := 0
	limit := len(q.timers) + maxRefire
	for fired < limit {
		var due *Timer
		for _, t := range q.timers {
			if t.deadline <= now && (due == nil || t.deadline < due.deadline) {
				due = t
			}
		}
		if due == nil {
			break
		}
		due.Stop()
		due.fire(now)
		fired++
	}
	return fired
}

// maxRefire bounds the re-firings in one Run (see Run).
const maxRefire = 64
