// Package ingest is the write path: it runs imports of promotions CSVs,
// one at a time, with live progress, and serves them over HTTP
// (POST /process-csv, GET /imports, GET /imports/{id}, DELETE
// /imports/{id}). Package csv reads and validates the rows; a Sink builds
// a new dataset version from them; a History keeps the statuses of the
// last imports across restarts.
//
// Invariants: the input is never held whole in memory (an upload is
// streamed from the request body); a file named by a client is read only
// from inside the import directory, symlinks included, and a name leading
// outside is refused before anything there is looked at; a failed or
// cancelled import is aborted in the sink, so nothing of it becomes
// visible; no lock is held across a call to the sink or the history, and
// every such call made for a request has a deadline (StoreTimeout); what
// a client controls and a job keeps is bounded; an import is recorded in
// the History before it reads anything, so ids are never reused. An import
// whose sink commits the version but does not activate it (the activation
// guard, ErrHeld) ends held, not failed: its version is kept.
package ingest
