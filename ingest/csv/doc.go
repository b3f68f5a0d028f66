// Package csv reads promotions CSV files: Parse streams an input in
// fixed-size chunks cut at record boundaries, validates its rows in
// parallel and hands the good ones to a RowSink; ParseRow parses one
// record.
//
// It accepts the forms of DESIGN.md: an optional UTF-8 BOM, LF or CRLF
// line ends, RFC 4180 quoting (a quoted field may span lines), blank
// lines, an optional first row whose first field is "id", and dates as
// Go's time.Time.String(), RFC 3339 or a naive UTC date-time. A bad row is
// reported as a RowError with its line, field and reason.
//
// Invariants: the input is never held whole in memory; the rows kept in
// Progress.Errors are those with the lowest line numbers, whatever the
// order in which workers finish; a parse that fails hands no more rows to
// its sink once it knows it will fail. Duplicate ids are the sink's to
// resolve, in favour of the highest line.
package csv
