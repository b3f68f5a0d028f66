//go:build !race

package standalone

const raceEnabled = false
