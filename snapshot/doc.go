// Package snapshot implements tamavisor's snapshot format, version 1: a
// self-describing, versioned, checksummed stream of typed chunks that holds a
// saved guest (VM configuration, vCPU state, device model states and guest
// RAM), and a crash-safe store that keeps the newest two snapshots (and
// chains of incremental snapshots on them) on a raw block device.
//
// The byte-level layout is specified in docs/snapshot-format.md; the code and
// that document must agree.
//
// The package is pure Go with no host dependencies (it does not import os or
// any reflection-based encoder), so it runs unchanged on the host under
// `go test` and on bare metal under TamaGo. The file-backed block device for
// the host lives in the subpackage filedev.
//
// Main pieces:
//
//   - Encoder and Decoder: explicit field-by-field little-endian encoding of
//     chunk bodies, with a sticky error and bounds checks in the decoder.
//   - Registry: per chunk type, a decoder per accepted version and upgrade
//     functions from each older version to the current in-memory form.
//   - Writer: streams a snapshot (header, chunks, RAM, end record with
//     SHA-256 digest and optional HMAC-SHA256) to an io.Writer in one
//     sequential pass with bounded memory.
//   - Decode: reads a snapshot stream, checks every checksum, the digest and
//     the HMAC, decodes known chunks and streams RAM pages into a MemorySink.
//   - Store: two slots with two commit record positions each on a
//     BlockDevice; Save writes and flushes the data before its commit
//     record, Load returns the newest fully valid snapshot. A slot holds a
//     chain: a full snapshot, then increments appended by Save with
//     SaveOptions.Base; Decode and Load check and merge a whole chain.
package snapshot
