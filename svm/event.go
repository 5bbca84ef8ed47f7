package svm

// Event injection (EVENTINJ, VMCB offset 0x0A8) and EXITINTINFO (0x088)
// share one format (APM vol. 2, 15.20, figure 15-4): vector in bits 0-7,
// type in bits 8-10, error-code-valid bit 11, valid bit 31, error code in
// bits 32-63.
const (
	EventVectorMask = 0xff
	EventTypeShift  = 8
	EventTypeMask   = 7 << EventTypeShift
	EventErrValid   = 1 << 11
	EventValid      = 1 << 31
	EventErrShift   = 32
)

// EventType is the TYPE field of EVENTINJ/EXITINTINFO.
type EventType uint64

// Event types (APM vol. 2, 15.20).
const (
	EventIntr      EventType = 0 // external or virtual interrupt
	EventNMI       EventType = 2
	EventException EventType = 3
	EventSoftInt   EventType = 4 // software interrupt (INTn)
)

// Exception vectors (APM vol. 2, 8.2).
const (
	VectorDE  = 0 // divide error
	VectorDB  = 1 // debug
	VectorNMI = 2
	VectorBP  = 3  // breakpoint
	VectorUD  = 6  // invalid opcode
	VectorDF  = 8  // double fault
	VectorTS  = 10 // invalid TSS
	VectorNP  = 11 // segment not present
	VectorSS  = 12 // stack fault
	VectorGP  = 13 // general protection
	VectorPF  = 14 // page fault
	VectorAC  = 17 // alignment check
	VectorMC  = 18 // machine check
)

// Event is an event to inject or one that was being delivered.
type Event struct {
	Vector   uint8
	Type     EventType
	HasError bool
	Error    uint32
}

// exceptionHasError lists the exceptions that push an error code (APM vol. 2,
// table 8-1).
func exceptionHasError(v uint8) bool {
	switch v {
	case VectorDF, VectorTS, VectorNP, VectorSS, VectorGP, VectorPF, VectorAC:
		return true
	}
	return false
}

// Exception returns the event for a hardware exception with its error code,
// setting the error-code-valid bit exactly when the vector pushes one.
func Exception(vector uint8, errorCode uint32) Event {
	return Event{Vector: vector, Type: EventException, HasError: exceptionHasError(vector), Error: errorCode}
}

// Encode returns the EVENTINJ value for e (with the valid bit set).
func (e Event) Encode() uint64 {
	v := uint64(e.Vector) | uint64(e.Type)<<EventTypeShift | EventValid
	if e.HasError {
		v |= EventErrValid | uint64(e.Error)<<EventErrShift
	}
	return v
}

// DecodeEvent decodes EVENTINJ or EXITINTINFO; ok is false when the valid
// bit is clear.
func DecodeEvent(v uint64) (e Event, ok bool) {
	if v&EventValid == 0 {
		return Event{}, false
	}
	return Event{
		Vector:   uint8(v & EventVectorMask),
		Type:     EventType((v & EventTypeMask) >> EventTypeShift),
		HasError: v&EventErrValid != 0,
		Error:    uint32(v >> EventErrShift),
	}, true
}
