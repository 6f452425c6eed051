package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Log formats accepted by New.
const (
	// FormatConsole is human-readable, one line per event, coloured on a terminal.
	FormatConsole = "console"
	// FormatJSON is one JSON object per line, for log collectors.
	FormatJSON = "json"
)

// levels maps the accepted level names to zerolog levels. It is spelled out rather than
// delegated to zerolog.ParseLevel, which also accepts numbers and the empty string and reads the
// global LevelFieldMarshalFunc.
var levels = map[string]zerolog.Level{
	"trace":    zerolog.TraceLevel,
	"debug":    zerolog.DebugLevel,
	"info":     zerolog.InfoLevel,
	"warn":     zerolog.WarnLevel,
	"error":    zerolog.ErrorLevel,
	"fatal":    zerolog.FatalLevel,
	"panic":    zerolog.PanicLevel,
	"disabled": zerolog.Disabled,
}

// ParseLevel returns the zerolog level named s: trace, debug, info, warn, error, fatal, panic or
// disabled (lower case). Anything else wraps ErrLevel.
func ParseLevel(s string) (zerolog.Level, error) {
	l, ok := levels[s]
	if !ok {
		return zerolog.NoLevel, fmt.Errorf("%w %q (want trace, debug, info, warn, error, fatal, panic or disabled)", ErrLevel, s)
	}
	return l, nil
}

// CheckFormat returns nil when format is FormatConsole or FormatJSON, and an error wrapping
// ErrFormat otherwise.
func CheckFormat(format string) error {
	switch format {
	case FormatConsole, FormatJSON:
		return nil
	}
	return fmt.Errorf("%w %q (want %q or %q)", ErrFormat, format, FormatConsole, FormatJSON)
}

// New returns a logger writing to w at the given level, with a timestamp on every event.
// format is FormatConsole (zerolog.ConsoleWriter, coloured only when w is a terminal) or
// FormatJSON (plain zerolog output). The level is set on the logger itself (Logger.Level), so
// two loggers built here never affect each other.
func New(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	if err := CheckFormat(format); err != nil {
		return zerolog.Nop(), err
	}
	if format == FormatConsole {
		w = zerolog.ConsoleWriter{
			Out:        w,
			NoColor:    !isTerminal(w),
			TimeFormat: time.RFC3339,
		}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// isTerminal reports whether w is a character device, without a dependency on a tty package.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
