// Package testenv decides what a test does when a service or tool it
// needs is missing: on a developer's machine it skips, saying what to
// set or install; in CI (CI=true, which .ci/run and most CI systems set)
// it fails, because CI provides every service and tool and a test that
// does not run there proves nothing.
//
// Skips for other reasons — an optional capability an implementation
// does not have (storetest, deliverytest), allocation counts under the
// race detector, a maintainer's tool that only runs on request — use
// t.Skip and are listed in .ci/allowed-skips, which .ci/run checks every
// skip of its run against (cmd/testreport).
package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// CI reports whether the tests run in CI: the environment variable CI is
// "true" or "1".
func CI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// Skip skips t with the message, or fails it in CI.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("CI=true, so this test must run, but: %s", msg)
	}
	t.Skip(msg)
}
