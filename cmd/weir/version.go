package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

func init() {
	commands["version"] = command{summary: "print weir's version and build information", run: runVersion}
}

func runVersion(_ context.Context, e *env, _ []string) int {
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	fmt.Fprintf(e.stdout, "weir %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}
