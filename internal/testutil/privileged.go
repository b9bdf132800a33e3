// Package testutil holds helpers shared by weir's tests.
package testutil

import (
	"os"
	"testing"
)

// RequirePrivileged skips tb unless the process runs as root. When
// WEIR_REQUIRE_PRIVILEGED=1 (CI sets it) a missing privilege fails the test
// instead, so a CI run cannot pass by skipping the tests that matter most.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEIR_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatal("test needs root (netns, veth, BPF) and WEIR_REQUIRE_PRIVILEGED=1 forbids skipping it")
	}
	tb.Skip("test needs root (netns, veth, BPF); run as root or set WEIR_REQUIRE_PRIVILEGED=1 to make this a failure")
}
