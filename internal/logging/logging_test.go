package logging_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/logging"
)

func TestNewJSON(t *testing.T) {
	var buf bytes.Buffer
	log, err := logging.New(&buf, "info", logging.FormatJSON)
	require.NoError(t, err)
	require.Equal(t, zerolog.InfoLevel, log.GetLevel())

	log.Debug().Msg("hidden")
	log.Info().Str("room", "r1").Msg("room opened")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, "debug event must be filtered at info level")
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &ev))
	require.Equal(t, "info", ev["level"])
	require.Equal(t, "room opened", ev["message"])
	require.Equal(t, "r1", ev["room"])
	require.Contains(t, ev, "time")
}

func TestNewConsole(t *testing.T) {
	var buf bytes.Buffer
	log, err := logging.New(&buf, "debug", logging.FormatConsole)
	require.NoError(t, err)

	log.Debug().Str("participant", "p1").Msg("joined")
	out := buf.String()
	require.Contains(t, out, "DBG")
	require.Contains(t, out, "joined")
	require.Contains(t, out, "participant=p1")
	require.NotContains(t, out, "{", "console format must not be JSON")
	require.NotContains(t, out, "\x1b[", "no colour codes when not writing to a terminal")
}

func TestNewLevels(t *testing.T) {
	cases := []struct {
		level string
		want  zerolog.Level
	}{
		{"trace", zerolog.TraceLevel},
		{"debug", zerolog.DebugLevel},
		{"info", zerolog.InfoLevel},
		{"warn", zerolog.WarnLevel},
		{"error", zerolog.ErrorLevel},
		{"fatal", zerolog.FatalLevel},
		{"panic", zerolog.PanicLevel},
		{"disabled", zerolog.Disabled},
	}
	for _, tc := range cases {
		t.Run(tc.level, func(t *testing.T) {
			log, err := logging.New(&bytes.Buffer{}, tc.level, logging.FormatJSON)
			require.NoError(t, err)
			require.Equal(t, tc.want, log.GetLevel())
		})
	}
}

func TestNewRejects(t *testing.T) {
	cases := []struct {
		name, level, format string
		want                error
	}{
		{"empty level", "", "json", logging.ErrLevel},
		{"numeric level", "1", "json", logging.ErrLevel},
		{"upper case level", "INFO", "json", logging.ErrLevel},
		{"unknown level", "verbose", "json", logging.ErrLevel},
		{"unknown format", "info", "text", logging.ErrFormat},
		{"empty format", "info", "", logging.ErrFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := logging.New(&bytes.Buffer{}, tc.level, tc.format)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestNewLeavesGlobalsAlone(t *testing.T) {
	before := zerolog.GlobalLevel()
	_, err := logging.New(&bytes.Buffer{}, "error", logging.FormatJSON)
	require.NoError(t, err)
	require.Equal(t, before, zerolog.GlobalLevel())

	// Two loggers at different levels do not affect each other.
	var a, b bytes.Buffer
	la, err := logging.New(&a, "error", logging.FormatJSON)
	require.NoError(t, err)
	lb, err := logging.New(&b, "debug", logging.FormatJSON)
	require.NoError(t, err)
	la.Info().Msg("x")
	lb.Info().Msg("x")
	require.Empty(t, a.String())
	require.NotEmpty(t, b.String())
}
