// Package client is the Go client of promotion-service: it looks
// promotions up on the read nodes that hold them, skipping the proxy hop.
//
//	c, err := client.New(ctx, client.Config{Seeds: []string{"http://127.0.0.1:8090"}})
//	p, err := c.Get(ctx, id)               // p.ID, p.Price, p.ExpirationDate
//	found, missing, err := c.BatchGet(ctx, ids)
//	c.Close()
//
// It learns the ring from GET /cluster of any seed and follows it: every
// RefreshInterval, and at once when a node answers 421 (not an owner of
// the id's slot). Against a standalone server (404 on /cluster) it sends
// everything to the seed that answered.
//
// Each id goes to a replica of its slot over pooled keep-alive
// connections: a Get writes its request and reads the answer on the
// caller's goroutine (conns.go), and hands the wait to another goroutine
// only when it hedges; batches go through a fasthttp HostClient per node.
// A connection error, a
// timeout, a 5xx or a 421 moves the request to the next replica; a round
// over the replicas that finds none answering is repeated at most Retries
// times, with a backoff. Nodes that fail FailuresToDown times in a row are
// asked last for DownFor, and a replica much slower than the others of its
// slot is asked first only for a few probes.
//
// Invariants:
//   - Versions never go back: no answer comes from a dataset version older
//     than one the Client has already returned (floor.go). A replica still
//     on an older version is passed over for another one, or waited for
//     briefly (CatchUpWait), like the proxy does.
//   - A BatchGet answer comes from one dataset version.
//   - Hedging: a Get not answered within the hedge delay (the p95 of recent
//     latencies, between a floor and a ceiling; package hedge) is also sent
//     to the next replica, the first answer wins and the other is abandoned
//     (its connection stays pooled). Hedges are at most 10% of the requests
//     (a token budget), counted in promo_client_hedges_total. A BatchGet's
//     request to a node is hedged the same way, per id to the next replica,
//     with a delay and budget of its own (promo_client_batch_*; batch.go).
package client
