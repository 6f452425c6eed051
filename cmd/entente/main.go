// Command entente runs an Entente node: the embedded SFU, the LiveKit
// signal endpoint and the join page. It only wires packages together.
//
//	entente [--config FILE]                 run the node
//	entente token --room R --identity I     mint an access token
//	entente register [--out FILE]           write the Matrix appservice registration
//	entente audit [--since D] [--peer P] [--kind K] [--json]
//	                                        print the federation audit log
//	entente version                         print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "entente:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runNode(ctx, args, stdout, stderr)
	case "token":
		return runToken(ctx, args, stdout, stderr)
	case "register":
		return runRegister(args, stdout, stderr)
	case "audit":
		return runAudit(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "entente", version)
		return nil
	default:
		return fmt.Errorf("unknown command %q (commands: run, token, register, audit, version)", cmd)
	}
}
