// Package standalone is the embedded, single-process promotion server:
// imports stream into a versioned Pebble store and package lookup serves
// lookups from it, with the whole HTTP API of DESIGN.md on one fasthttp
// listener. It needs no other service, and links no PostgreSQL, Kafka or
// Redis client.
package standalone
