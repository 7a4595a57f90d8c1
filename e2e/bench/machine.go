package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Load1 is the machine's one-minute load average, to tell a noisy run.
func Load1() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(fields[0], 64)
	return v
}

// Machine describes where a figure was measured; load1 is the load
// average when its measurement started.
func Machine(load1 float64) map[string]interface{} {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return map[string]interface{}{
		"cpus":         runtime.NumCPU(),
		"kernel":       strings.TrimSpace(string(kernel)),
		"go":           runtime.Version(),
		"load1_before": load1,
		"load1_after":  Load1(),
	}
}

// processes finds the pids of processes whose command line holds all of
// the given strings.
func processes(all ...string) []int {
	var pids []int
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		cmdline, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		match := true
		for _, s := range all {
			if !bytes.Contains(cmdline, []byte(s)) {
				match = false
				break
			}
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil && match {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuSeconds is the user and system CPU time a process has used so far.
func cpuSeconds(pid int) float64 {
	own, _ := cpuTimes(fmt.Sprintf("/proc/%d/stat", pid))
	return own
}

// cpuTimes reads a /proc stat file: the CPU time of the process itself,
// and of its children it has waited for (for this process: the plugins
// and shims libcni ran).
func cpuTimes(path string) (own, children float64) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	// The command name, in parentheses, may hold spaces; fields follow it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 15 {
		return 0, 0
	}
	var v [4]float64
	for k := range v {
		v[k], _ = strconv.ParseFloat(fields[11+k], 64) // utime stime cutime cstime
	}
	const userHZ = 100 // USER_HZ, fixed at 100 on Linux for x86 and arm64
	return (v[0] + v[1]) / userHZ, (v[2] + v[3]) / userHZ
}
