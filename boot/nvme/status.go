package nvme

import "fmt"

// Status Code Types (Base 2.0 section 3.3.3.2.1, Status Field).
const (
	SCTGeneric         = 0 // Generic Command Status
	SCTCommandSpecific = 1 // Command Specific Status
	SCTMediaError      = 2 // Media and Data Integrity Errors
	SCTPath            = 3 // Path Related Status
	SCTVendor          = 7 // Vendor Specific
)

// Status codes the driver names (Generic Command Status, Command Specific
// Status and Media and Data Integrity Errors figures of section 3.3.3.2.1).
const (
	SCSuccess              = 0x00
	SCInvalidOpcode        = 0x01
	SCInvalidField         = 0x02
	SCCommandIDConflict    = 0x03
	SCDataTransferError    = 0x04
	SCPowerLossAbort       = 0x05
	SCInternalError        = 0x06
	SCAbortRequested       = 0x07
	SCSQDeletionAbort      = 0x08
	SCInvalidNamespace     = 0x0b
	SCCommandSequenceError = 0x0c
	SCPRPOffsetInvalid     = 0x13
	SCNamespaceWriteProt   = 0x20
	SCCommandInterrupted   = 0x21
	SCTransientTransport   = 0x22
	SCLBAOutOfRange        = 0x80
	SCCapacityExceeded     = 0x81
	SCNamespaceNotReady    = 0x82
	SCReservationConflict  = 0x83
	SCFormatInProgress     = 0x84

	SCCompletionQueueInvalid = 0x00 // command specific
	SCInvalidQueueID         = 0x01
	SCInvalidQueueSize       = 0x02
	SCAttemptedWriteToRO     = 0x82

	SCWriteFault           = 0x80 // media and data integrity
	SCUnrecoveredReadError = 0x81
	SCGuardCheckError      = 0x82
	SCAppTagCheckError     = 0x83
	SCRefTagCheckError     = 0x84
	SCCompareFailure       = 0x85
	SCAccessDenied         = 0x86
	SCDeallocatedBlock     = 0x87
)

var statusNames = map[[2]uint8]string{
	{SCTGeneric, SCInvalidOpcode}:        "Invalid Command Opcode",
	{SCTGeneric, SCInvalidField}:         "Invalid Field in Command",
	{SCTGeneric, SCCommandIDConflict}:    "Command ID Conflict",
	{SCTGeneric, SCDataTransferError}:    "Data Transfer Error",
	{SCTGeneric, SCPowerLossAbort}:       "Commands Aborted due to Power Loss Notification",
	{SCTGeneric, SCInternalError}:        "Internal Error",
	{SCTGeneric, SCAbortRequested}:       "Command Abort Requested",
	{SCTGeneric, SCSQDeletionAbort}:      "Command Aborted due to SQ Deletion",
	{SCTGeneric, SCInvalidNamespace}:     "Invalid Namespace or Format",
	{SCTGeneric, SCCommandSequenceError}: "Command Sequence Error",
	{SCTGeneric, SCPRPOffsetInvalid}:     "PRP Offset Invalid",
	{SCTGeneric, SCNamespaceWriteProt}:   "Namespace is Write Protected",
	{SCTGeneric, SCCommandInterrupted}:   "Command Interrupted",
	{SCTGeneric, SCTransientTransport}:   "Transient Transport Error",
	{SCTGeneric, SCLBAOutOfRange}:        "LBA Out of Range",
	{SCTGeneric, SCCapacityExceeded}:     "Capacity Exceeded",
	{SCTGeneric, SCNamespaceNotReady}:    "Namespace Not Ready",
	{SCTGeneric, SCReservationConflict}:  "Reservation Conflict",
	{SCTGeneric, SCFormatInProgress}:     "Format In Progress",

	{SCTCommandSpecific, SCCompletionQueueInvalid}: "Completion Queue Invalid",
	{SCTCommandSpecific, SCInvalidQueueID}:         "Invalid Queue Identifier",
	{SCTCommandSpecific, SCInvalidQueueSize}:       "Invalid Queue Size",
	{SCTCommandSpecific, SCAttemptedWriteToRO}:     "Attempted Write to Read Only Range",

	{SCTMediaError, SCWriteFault}:           "Write Fault",
	{SCTMediaError, SCUnrecoveredReadError}: "Unrecovered Read Error",
	{SCTMediaError, SCGuardCheckError}:      "End-to-end Guard Check Error",
	{SCTMediaError, SCAppTagCheckError}:     "End-to-end Application Tag Check Error",
	{SCTMediaError, SCRefTagCheckError}:     "End-to-end Reference Tag Check Error",
	{SCTMediaError, SCCompareFailure}:       "Compare Failure",
	{SCTMediaError, SCAccessDenied}:         "Access Denied",
	{SCTMediaError, SCDeallocatedBlock}:     "Deallocated or Unwritten Logical Block",
}

// Status field bits as stored in StatusError.Field (dword 3 >> 17).
const (
	statusSCTShift = cqeSCT - cqeSC
	statusCRDShift = cqeCRD - cqeSC
	statusMShift   = cqeM - cqeSC
	statusDNRShift = cqeDNR - cqeSC
	statusCRDBits  = 2
)

// StatusError is a command that completed with an error status.
type StatusError struct {
	Cmd   string // what the command was, e.g. "read of LBAs 8-15"
	Field uint16 // the Status Field without the phase tag
}

// SCT is the Status Code Type.
func (e *StatusError) SCT() uint8 { return uint8(field(uint64(e.Field), statusSCTShift, cqeSCTBits)) }

// SC is the Status Code.
func (e *StatusError) SC() uint8 { return uint8(field(uint64(e.Field), 0, cqeSCBits)) }

// DNR is the Do Not Retry bit: retrying the command is expected to fail too.
func (e *StatusError) DNR() bool { return bit(uint64(e.Field), statusDNRShift) }

func (e *StatusError) Error() string {
	return fmt.Sprintf("nvme: %s: %s", e.Cmd, statusText(e.Field))
}

func statusText(f uint16) string {
	sct := uint8(field(uint64(f), statusSCTShift, cqeSCTBits))
	sc := uint8(field(uint64(f), 0, cqeSCBits))
	name, ok := statusNames[[2]uint8{sct, sc}]
	switch {
	case ok:
	case sct == SCTVendor:
		name = "vendor specific status"
	case sct == SCTPath:
		name = "path related status"
	default:
		name = "unknown status"
	}
	s := fmt.Sprintf("%s (SCT %#x SC %#02x", name, sct, sc)
	if bit(uint64(f), statusDNRShift) {
		s += ", DNR"
	}
	return s + ")"
}
