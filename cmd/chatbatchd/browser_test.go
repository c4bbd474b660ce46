package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatbatch/chatbatch/internal/seed"
)

// chromium finds a Chromium to drive, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHATBATCH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium found: install Debian's chromium package (or set CHATBATCH_CHROMIUM) to run the browser test")
	return ""
}

// TestPageShowsLiveMessages opens the page in headless Chromium as
// user-a, sends a batch over HTTP and waits for the message to appear
// live; then sends one from the page's own form and watches its progress.
func TestPageShowsLiveMessages(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	err := chromedp.Do(ctx,
		chromedp.Navigate(p.url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#connect-form")),
		chromedp.SetValue(chromedp.CSS("#api-key"), "demo-key"),
		chromedp.SetValue(chromedp.CSS("#user"), "user-a"),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`#conn-status[data-state="connected"]`)),
	)
	if err != nil {
		t.Fatalf("connecting in the page: %v\nserver log:\n%s", err, p.stderr)
	}
	rooms, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#rooms")))
	must(t, err)
	for _, room := range []string{"room-001", "room-002", "room-003"} {
		if !strings.Contains(rooms, room) {
			t.Errorf("the page lists rooms %q, missing %s", rooms, room)
		}
	}

	// A batch sent by someone else arrives live.
	sendAndWait(t, p.url, "demo-key", seed.Template)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.Search(`//ol[@id="messages"]/li[contains(., "Hi Alice,您的訂單 ORD-001 已出貨!")]`))); err != nil {
		t.Fatalf("waiting for the live message: %v", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#messages")))
	must(t, err)
	if strings.Contains(text, "Bob") {
		t.Errorf("user-a's page shows user-b's message: %q", text)
	}

	// The page's own form sends the same example; its progress completes
	// and the second message shows up too.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.Search(`//dd[@id="p-status" and text()="completed"]`)),
		chromedp.WaitVisible(chromedp.Search(`//ol[@id="messages"]/li[2]`)),
	)
	if err != nil {
		t.Fatalf("sending from the page: %v", err)
	}
	sent, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#p-sent")))
	must(t, err)
	messages, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#messages")))
	must(t, err)
	if sent != "2" || strings.Count(messages, "Hi Alice") != 2 {
		t.Errorf("after sending from the page: sent %q, messages %q", sent, messages)
	}
}
