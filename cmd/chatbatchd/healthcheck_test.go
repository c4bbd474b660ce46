package main

import (
	"os/exec"
	"testing"
)

// TestHealthcheckFlag: chatbatchd -healthcheck URL exits 0 for a 2xx
// answer, 1 for another answer or none, 2 for a bad URL; it is what the
// container health checks of compose.yaml run.
func TestHealthcheckFlag(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"-healthcheck", p.url + "/readyz"}, 0},
		{[]string{"-healthcheck=" + p.url + "/healthz"}, 0},
		{[]string{"--healthcheck", p.url + "/healthz"}, 0},
		{[]string{"-healthcheck", p.url + "/no-such-page"}, 1},
		{[]string{"-healthcheck", "http://" + closedPort(t) + "/readyz"}, 1},
		{[]string{"-healthcheck", "127.0.0.1:8080/readyz"}, 2},
		{[]string{"-healthcheck"}, 2},
	} {
		cmd := exec.Command(binary, c.args...)
		out, _ := cmd.CombinedOutput()
		if got := cmd.ProcessState.ExitCode(); got != c.code {
			t.Errorf("chatbatchd %q exited %d, want %d: %s", c.args, got, c.code, out)
		}
	}
}
