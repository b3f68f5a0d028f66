//go:build race

package pebblestore

// raceEnabled: the race detector allocates and drops sync.Pool items, so
// allocation counts are only asserted in the plain test run.
const raceEnabled = true
