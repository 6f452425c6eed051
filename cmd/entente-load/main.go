// Command entente-load is a load generator for LiveKit-protocol SFUs
// (Entente or livekit-server) on this machine, and the table maker for
// bench/compare.sh. It only parses flags and wires internal/loadgen.
//
//	entente-load --url ws://127.0.0.1:7880 --api-key K --api-secret S \
//	    --publishers 2 --subscribers 40 --video --server-pid PID [--json]
//	entente-load table --a entente --b livekit REPORT.json...
//
// Two-node mode (bench/federation.sh): publishers join --url, subscribers
// --url-b, a node federated with the first, in the same room (the call's
// media room on both); the same load with everyone on --url is the local
// reference, and fedtable sets the two side by side:
//
//	entente-load --url ws://A --api-key KA --api-secret SA --server-pid PA \
//	    --url-b ws://B --api-key-b KB --api-secret-b SB --server-pid-b PB ...
//	entente-load fedtable REPORT.json...
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
	if len(args) > 0 && args[0] == "fedtable" {
		return runFedTable(args[1:], stdout, stderr)
	}
	return runLoad(ctx, args, stdout, stderr)
}

// loadOptions are the flags that are not the load's configuration.
type loadOptions struct {
	asJSON          bool
	label, scenario string
	run             int
	verbose         bool
}

// parseLoad reads the load flags; c.Log is left for the caller.
func parseLoad(args []string, stderr io.Writer) (loadgen.Config, loadOptions, error) {
	fs := flag.NewFlagSet("entente-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c loadgen.Config
	var o loadOptions
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:7880", "server URL (loopback only); in two-node mode the publishers' node")
	fs.StringVar(&c.APIKey, "api-key", "", "server API key (tokens are minted with it)")
	fs.StringVar(&c.APISecret, "api-secret", "", "server API secret")
	fs.StringVar(&c.URLB, "url-b", "", "two-node mode: the subscribers' node, federated with --url's (loopback only)")
	fs.StringVar(&c.APIKeyB, "api-key-b", "", "API key of --url-b")
	fs.StringVar(&c.APISecretB, "api-secret-b", "", "API secret of --url-b")
	fs.IntVar(&c.ServerPIDB, "server-pid-b", 0, "process of --url-b whose CPU and memory to read from /proc")
	fs.StringVar(&c.IdentityPrefix, "identity-prefix", "", "prefix of every participant identity (distinct per run in a shared room)")
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
	fs.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	fs.StringVar(&o.label, "label", "", "server label stored in the report (for `table`; `fedtable` wants local or remote)")
	fs.StringVar(&o.scenario, "scenario", "", "scenario name stored in the report (for `table`)")
	fs.IntVar(&o.run, "run", 0, "run number stored in the report: `table` pairs the servers' runs with the same number")
	fs.BoolVar(&o.verbose, "verbose", false, "log progress and SDK messages to stderr")
	if err := fs.Parse(args); err != nil {
		return c, o, err
	}
	if fs.NArg() > 0 {
		return c, o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if !c.Audio && !c.Video {
		c.Audio, c.Video = true, true
	}
	return c, o, c.Validate()
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, o, err := parseLoad(args, stderr)
	if err != nil {
		return err
	}
	if o.verbose {
		c.Log = zerolog.New(zerolog.ConsoleWriter{Out: stderr}).With().Timestamp().Logger()
	} else {
		c.Log = zerolog.Nop()
		// The SDK logs per track and its pion logger factory reads this default.
		lksdk.SetLogger(protologger.GetDiscardLogger())
	}
	ctx, cancel := context.WithTimeout(ctx, c.Budget()+10*time.Second)
	defer cancel()
	rep, err := loadgen.Run(ctx, c)
	if err != nil {
		return err
	}
	rep.Label, rep.Scenario, rep.Run = o.label, o.scenario, o.run
	if o.asJSON {
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
	reports, err := readReports(fs.Args())
	if err != nil {
		return err
	}
	return loadgen.Compare(stdout, reports, o)
}

func runFedTable(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("entente-load fedtable", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o loadgen.FederationOptions
	fs.StringVar(&o.Local, "local", "local", "label of the reference runs (everyone on node A)")
	fs.StringVar(&o.Remote, "remote", "remote", "label of the two-node runs")
	fs.Float64Var(&o.BusyCores, "busy-cores", 0.3, "refuse runs during which other work used more CPU than this (cores)")
	fs.BoolVar(&o.IncludeBusy, "include-busy", false, "keep disturbed runs instead of refusing them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reports, err := readReports(fs.Args())
	if err != nil {
		return err
	}
	return loadgen.FederationTable(stdout, reports, o)
}

// readReports reads JSON reports written by --json.
func readReports(names []string) ([]*loadgen.Report, error) {
	var reports []*loadgen.Report
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var r loadgen.Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		reports = append(reports, &r)
	}
	if len(reports) == 0 {
		return nil, errors.New("no report files given")
	}
	return reports, nil
}
