// Package lookup serves GET /promotions/{id}: it parses the id, pins one
// dataset version, reads the record and answers JSON. Standalone servers
// and cluster read nodes run its Handler over their local store; the proxy
// shares its path, its answer to a malformed id and its version header.
// It serves POST /promotions/batch the same way (HandleBatch), and holds
// the batch wire format the proxy and clients read and write (ParseBatch,
// AppendBatchRequest, ParseBatchAnswer).
//
// The package states what it needs from a store, a cache and a cluster as
// the small interfaces Versions and View, Cache and Gate, so that it links
// no storage or network client: a server that embeds it links only what
// it runs.
//
// Invariants:
//   - a lookup allocates nothing: the id is parsed in place, the store
//     copies the value out before releasing its buffer, the record is
//     pooled, and the JSON body is appended by hand into a stack buffer;
//     a batch allocates nothing either, whatever its size: the body is
//     parsed by hand and its buffers are pooled;
//   - one request, single or batch, reads exactly one version, pinned from
//     Acquire to Release, and every answer read from a version carries its
//     number in the X-Dataset-Version header (VersionHeader) and, for a
//     store that knows it, its activation epoch in X-Dataset-Epoch
//     (EpochHeader); Stamp and Seen hold the "never go back" rule clients
//     of several nodes apply to them;
//   - every error is JSON, like the rest of the API (httpserver.Error).
package lookup
