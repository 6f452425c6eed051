// Command entente-load is a load generator for LiveKit-protocol SFUs
// (Entente or livekit-server) on this machine, and the table maker for
// bench/compare.sh. It only parses flags and wires internal/loadgen.
//
//	entente-load --url ws://127.0.0.1:7880 --api-key K --api-secret S \
//	    --publishers 2 --subscribers 40 --video --server-pid PID [--json]
//	entente-load table --a entente --b livekit REPORT.json...
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	protologger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/rs/zerolog"

	"entente.dev/entente/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "entente-load:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "table" {
		return runTable(args[1:], stdout, stderr)
	}
	return runLoad(ctx, args, stdout, stderr)
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("entente-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c loadgen.Config
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:7880", "server URL (loopback only)")
	fs.StringVar(&c.APIKey, "api-key", "", "server API key (tokens are minted with it)")
	fs.StringVar(&c.APISecret, "api-secret", "", "server API secret")
	fs.StringVar(&c.Room, "room", "load", "room name")
	fs.IntVar(&c.Publishers, "publishers", 1, "publishing participants")
	fs.IntVar(&c.Subscribers, "subscribers", 2, "subscribe-only participants")
	fs.BoolVar(&c.PublishersSubscribe, "publishers-subscribe", false, "publishers also subscribe to the other publishers")
	fs.BoolVar(&c.Audio, "audio", false, "publish Opus (with neither --audio nor --video: both)")
	fs.BoolVar(&c.Video, "video", false, "publish VP8 (with neither --audio nor --video: both)")
	fs.BoolVar(&c.Simulcast, "simulcast", false, "publish video in three simulcast layers")
	fs.DurationVar(&c.Warmup, "warmup", 5*time.Second, "settling time after everyone has media")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measurement window")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "server process whose CPU and memory to read from /proc")
	fs.IntVar(&c.ConnectConcurrency, "connect-concurrency", 8, "simultaneous joins")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 15*time.Second, "timeout of one join")
	fs.DurationVar(&c.SetupTimeout, "setup-timeout", 0, "timeout for joining everyone and media reaching them (0: 20s + 200ms per participant)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	label := fs.String("label", "", "server label stored in the report (for `table`)")
	scenario := fs.String("scenario", "", "scenario name stored in the report (for `table`)")
	run := fs.Int("run", 0, "run number stored in the report: `table` pairs the servers' runs with the same number")
	verbose := fs.Bool("verbose", false, "log progress and SDK messages to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if !c.Audio && !c.Video {
		c.Audio, c.Video = true, true
	}
	if *verbose {
		c.Log = zerolog.New(zerolog.ConsoleWriter{Out: stderr}).With().Timestamp().Logger()
	} else {
		c.Log = zerolog.Nop()
		// The SDK logs per track and its pion logger factory reads this default.
		lksdk.SetLogger(protologger.GetDiscardLogger())
	}
	if err := c.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.Budget()+10*time.Second)
	defer cancel()
	rep, err := loadgen.Run(ctx, c)
	if err != nil {
		return err
	}
	rep.Label, rep.Scenario, rep.Run = *label, *scenario, *run
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(stdout)
}

func runTable(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("entente-load table", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o loadgen.CompareOptions
	fs.StringVar(&o.A, "a", "entente", "label of the server in the first column")
	fs.StringVar(&o.B, "b", "livekit", "label of the reference server")
	fs.Float64Var(&o.BusyCores, "busy-cores", 0.3, "refuse runs during which other work used more CPU than this (cores)")
	fs.BoolVar(&o.IncludeBusy, "include-busy", false, "keep disturbed runs, marked, instead of refusing them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var reports []*loadgen.Report
	for _, name := range fs.Args() {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		var r loadgen.Report
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		reports = append(reports, &r)
	}
	if len(reports) == 0 {
		return errors.New("table: no report files given")
	}
	return loadgen.Compare(stdout, reports, o)
}
