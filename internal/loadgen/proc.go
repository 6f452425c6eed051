package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the tick counts in /proc/*/stat and /proc/stat
// (USER_HZ, 100 on every Linux architecture Go supports).
const userHZ = 100

// procSample is one reading of a process's CPU time and resident memory.
type procSample struct {
	cpu time.Duration // utime + stime
	rss int64         // VmRSS in bytes
}

// readProc reads /proc/<pid>/stat and /proc/<pid>/status; pid "self" reads
// the calling process.
func readProc(pid string) (procSample, error) {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return procSample{}, fmt.Errorf("%w: %v", ErrProc, err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return procSample{}, err
	}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return procSample{}, fmt.Errorf("%w: %v", ErrProc, err)
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		return procSample{}, err
	}
	return procSample{cpu: cpu, rss: rss}, nil
}

// parseStatCPU returns utime+stime from a /proc/PID/stat line. The command
// name (field 2) may contain spaces and parentheses, so fields are counted
// after the last ')': state is field 3, utime 14 and stime 15 (proc(5)).
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: malformed stat line", ErrProc)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3, so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: short stat line", ErrProc)
	}
	utime, err1 := strconv.ParseInt(f[14-3], 10, 64)
	stime, err2 := strconv.ParseInt(f[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w: bad utime/stime", ErrProc)
	}
	return ticks(utime + stime), nil
}

// parseStatusRSS returns VmRSS from /proc/PID/status in bytes.
func parseStatusRSS(status []byte) (int64, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%w: bad VmRSS line %q", ErrProc, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: bad VmRSS line %q", ErrProc, line)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("%w: no VmRSS: the process has exited", ErrProc)
}

// machineSample is the whole machine's busy CPU time across all cores.
type machineSample struct {
	busy time.Duration
}

func readMachine() (machineSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineSample{}, fmt.Errorf("%w: %v", ErrProc, err)
	}
	return parseMachine(b)
}

// parseMachine reads the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal ...; busy is everything but idle and
// iowait (guest time is already counted in user).
func parseMachine(b []byte) (machineSample, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return machineSample{}, fmt.Errorf("%w: malformed /proc/stat", ErrProc)
	}
	var busy int64
	for i := 1; i < len(f) && i <= 8; i++ {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return machineSample{}, fmt.Errorf("%w: malformed /proc/stat", ErrProc)
		}
		if i == 4 || i == 5 { // idle, iowait
			continue
		}
		busy += v
	}
	return machineSample{busy: ticks(busy)}, nil
}

func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }
