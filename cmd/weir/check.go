package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/weirlb/weir/appliance"
)

func init() {
	commands["check"] = command{summary: "validate a configuration file and report every problem", run: runCheck}
}

func checkUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: weir check [-c FILE]")
	fmt.Fprintln(w, "\nValidate weir's configuration file without touching any interface.")
	fmt.Fprintln(w, "A valid file prints a one-line summary and exits 0; an invalid one prints")
	fmt.Fprintln(w, "every problem to stderr as file:line:col: key: message and exits 1.")
	fmt.Fprintln(w, "Checks that need the live interface (does it exist, how many RX queues")
	fmt.Fprintln(w, "it has) are made by 'weir run' at start-up.")
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// runCheck loads the file the way 'weir run' does and also builds the
// forwarding snapshot from it, so a file that passes check is one the
// appliance accepts.
func runCheck(_ context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed below, to the right stream
	path := fs.String("c", appliance.DefaultConfigPath, "configuration `FILE` to check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			checkUsage(e.stdout, fs)
			return 0
		}
		fmt.Fprintf(e.stderr, "weir check: %v\n\n", err)
		checkUsage(e.stderr, fs)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "weir check: unexpected argument %q (name the file with -c)\n\n", fs.Arg(0))
		checkUsage(e.stderr, fs)
		return 2
	}

	s := func(n int) string { // plural
		if n == 1 {
			return ""
		}
		return "s"
	}
	cfg, err := appliance.LoadConfig(*path)
	if err != nil {
		var ce *appliance.ConfigError
		if !errors.As(err, &ce) {
			fmt.Fprintf(e.stderr, "weir check: %v\n", err)
			return 1
		}
		for _, p := range ce.Problems {
			fmt.Fprintln(e.stderr, p)
		}
		fmt.Fprintf(e.stderr, "weir check: %s: %d problem%s\n", *path, len(ce.Problems), s(len(ce.Problems)))
		return 1
	}
	reg, err := appliance.NewRegistry(cfg.Appliance.MaxReals)
	if err == nil {
		_, err = appliance.BuildSnapshot(cfg.Model(), reg, 1)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "weir check: %s: %v\n", *path, err)
		return 1
	}
	fmt.Fprintf(e.stdout, "%s: ok: %d VIP%s, %d backend%s, interface %s\n",
		*path, len(cfg.VIPs), s(len(cfg.VIPs)), cfg.Backends(), s(cfg.Backends()), cfg.Appliance.Interface)
	return 0
}
