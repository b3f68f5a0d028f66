//go:build !linux

package bench

import "time"

// serverCPU is not measured here.
func serverCPU(int) time.Duration { return 0 }
