//go:build !race

package ingestsvc

const raceEnabled = false
