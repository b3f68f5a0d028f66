package bench

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// serverCPU returns the CPU time (user and system) that process pid and
// its children have used, with that of the children that ended
// (PostgreSQL's backends, once the postmaster reaped them). PostgreSQL's
// processes each lead a session of their own, so they are found by parent.
func serverCPU(pid int) time.Duration {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var ticks int64
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command, in parentheses, may hold spaces: fields count
		// from after its closing parenthesis (state is field 3).
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != pid && d.Name() != strconv.Itoa(pid) {
			continue
		}
		for _, k := range f[11:15] { // utime, stime, cutime, cstime
			n, _ := strconv.ParseInt(k, 10, 64)
			ticks += n
		}
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(ticks) * (time.Second / 100)
}
