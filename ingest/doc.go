// Package ingest is the write path: it runs imports of promotions CSVs,
// one at a time, with live progress, and serves them over HTTP
// (POST /process-csv, GET /imports, GET /imports/{id}). Package csv reads
// and validates the rows; a Sink builds a new dataset version from them.
//
// Invariants: the input is never held whole in memory (an upload is
// streamed from the request body); a file named by a client is read only
// from inside the import directory, symlinks included; a failed import is
// aborted in the sink, so nothing of it becomes visible.
package ingest
