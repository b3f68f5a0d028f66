//go:build race

package ingestsvc

// raceEnabled: the race detector's shadow memory and slowness make heap
// figures and 100-import runs meaningless, so they are only checked in the
// plain test run.
const raceEnabled = true
