// Package ingestclient uploads promotions CSV files to a promo server
// (standalone or ingest) over net/http and follows the imports they start:
// Client.Import streams a file to POST /process-csv, reports progress
// while it is sent and while the server imports it, and returns the
// import's final status. promo import and the import benchmark use it.
//
// Invariants: a file is streamed, never read whole into memory; when the
// server refuses an upload (401, 409, 413) its answer is returned rather
// than the broken pipe of the write; an import that goes on on the server
// after ctx ends is reported as such, with how to follow it.
package ingestclient
