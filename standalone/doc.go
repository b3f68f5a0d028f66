// Package standalone is the embedded, single-process promotion server:
// imports stream into a versioned Pebble store and lookups are served from
// it, with the whole HTTP API of DESIGN.md on one fasthttp listener. It
// needs no other service.
package standalone
