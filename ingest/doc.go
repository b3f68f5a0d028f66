// Package ingest is the write path: it streams a promotions CSV, validates
// every row in parallel and hands the good ones to a Sink that builds a new
// dataset version, one import at a time, with live progress.
//
// The CSV reader accepts the forms of DESIGN.md: an optional UTF-8 BOM, LF
// or CRLF line ends, RFC 4180 quoting (a quoted field may span lines),
// blank lines, an optional first row whose first field is "id", and dates
// as Go's time.Time.String(), RFC 3339 or a naive UTC date-time. A bad row
// is reported with its line, field and reason; duplicates are resolved by
// the sink in favour of the last row.
//
// Invariants: the input is never held whole in memory (it is read in
// fixed-size chunks cut at record boundaries); a failed import is aborted
// in the sink, so nothing of it becomes visible.
package ingest
