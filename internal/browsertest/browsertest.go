// Package browsertest starts the headless Chromium that the browser tests
// drive (cmd/chatbatchd's and internal/mounttest's), with the flags this
// kind of machine needs: no sandbox (root), no GPU, and none of Chrome's
// background connections (a closed network refuses them by the dozen).
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// Chromium finds a Chromium to drive: CHATBATCH_CHROMIUM, else chromium
// (or chromium-browser, google-chrome) on the PATH; else it skips the
// test (fails it in CI).
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CHATBATCH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Skip(t, "no Chromium found: install Debian's chromium package (or set CHATBATCH_CHROMIUM) to run the browser test")
	return ""
}

// New starts a headless Chromium for the test, its window w×h, and
// returns a context that drives one tab for at most timeout. Everything
// is closed when the test ends.
func New(t testing.TB, timeout time.Duration, w, h int) context.Context {
	t.Helper()
	exe := Chromium(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(w, h),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("lang", "en-US"),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancel(); cancelCtx(); cancelAlloc() })
	return ctx
}
