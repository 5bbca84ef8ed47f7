package snapshot

import (
	"errors"
	"fmt"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrChecksum reports a CRC32C mismatch of a header, chunk or record.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrDigest reports a SHA-256 digest mismatch of the whole snapshot.
	ErrDigest = errors.New("digest mismatch")
	// ErrAuth reports an HMAC that does not verify, a missing HMAC when a
	// key is configured, or a keyed snapshot loaded without a key.
	ErrAuth = errors.New("authentication failed")
	// ErrUnknownChunk reports a required chunk of a type the reader does
	// not know.
	ErrUnknownChunk = errors.New("unknown required chunk")
	// ErrVersion reports a chunk version the reader cannot decode (newer
	// than it knows, or older than it still accepts).
	ErrVersion = errors.New("unsupported chunk version")
	// ErrCorrupt reports a structurally invalid snapshot.
	ErrCorrupt = errors.New("corrupt snapshot")
	// ErrNoSnapshot reports a store that holds no valid snapshot.
	ErrNoSnapshot = errors.New("no valid snapshot")
	// ErrStaleBase reports an incremental save (SaveOptions.Base) whose
	// base is not the store's newest valid snapshot: chains stay linear.
	// Nothing was written; save a full snapshot instead.
	ErrStaleBase = errors.New("the base of the increment is not the newest snapshot")
	// ErrChainFull reports an incremental save that does not fit: the
	// chain has MaxChain streams, the rest of the slot is too small, or
	// the device cannot hold a second commit record per slot. The
	// committed snapshots are untouched; save a full snapshot instead.
	ErrChainFull = errors.New("the chain cannot grow")
	// ErrLazyUnsupported reports a snapshot that cannot be opened lazily
	// (Store.OpenLazy): a version 1 RAM chunk (in any stream of a chain),
	// whose page data has no block sums. Restore it eagerly instead.
	ErrLazyUnsupported = errors.New("no lazy restore for this snapshot")
)

// ChunkError is an error about one chunk; its message names the chunk type
// and its index in the stream (0 is the first chunk after the header).
type ChunkError struct {
	Type     string
	Instance uint32
	Index    int
	Err      error
}

func (e *ChunkError) Error() string {
	if e.Instance != 0 {
		return fmt.Sprintf("snapshot: chunk %q instance %d (index %d): %v", e.Type, e.Instance, e.Index, e.Err)
	}
	return fmt.Sprintf("snapshot: chunk %q (index %d): %v", e.Type, e.Index, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}
