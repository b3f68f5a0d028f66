//go:build !race

package readnode

const raceEnabled = false
