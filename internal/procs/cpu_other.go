//go:build !unix

package procs

import (
	"errors"
	"time"
)

func processCPU() (time.Duration, error) {
	return 0, errors.New("process CPU time is not available on this platform")
}
