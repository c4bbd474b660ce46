package mounttest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/chatbatch/chatbatch/internal/browsertest"
)

// browser starts a headless Chromium (internal/browsertest: the one
// CHATBATCH_CHROMIUM names, which .ci/run sets, or one on the PATH).
func browser(t *testing.T, timeout time.Duration) context.Context {
	return browsertest.New(t, timeout, 1280, 900)
}

// TestDashboardLiveUnderChi: in a real browser, the dashboard mounted
// under chi below /api/v1 (chiUnderPrefix, as docs/embedding.md shows)
// takes an API key, sends the composer's example through the API at
// /api/v1/messages/batch, and follows the batch live — queued, half
// sent, completed — in the list and in the detail, pushed by its events
// endpoint, without the page reloading.
func TestDashboardLiveUnderChi(t *testing.T) {
	t.Parallel()
	h := hosts[0]
	for _, c := range hosts {
		if c.name == "chi/prefix" {
			h = c
		}
	}
	s := newSite(t, h, func(c *batch.Config) { c.ChunkSize = 1 }) // the example's two recipients: two chunks
	ctx := browser(t, 90*time.Second)                             // closed before the server, which waits for its streams
	err := chromedp.Do(ctx,
		chromedp.Navigate(s.dash()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#batches`)),
		chromedp.SetValue(chromedp.CSS(`#api-key`), bt.AdminKey),
		chromedp.Click(chromedp.CSS(`#key-save`)),
		chromedp.WaitVisible(chromedp.CSS(`#stream-status[data-state="connected"]`)),
		// the first list (empty), or the API's refusal of the stream's poll
		chromedp.WaitVisible(chromedp.CSS(`#batches-empty:not([hidden]), #batches-error:not([hidden])`)),
	)
	if err != nil {
		t.Fatalf("opening the dashboard at %s/: %v", s.dash(), err)
	}
	if shown, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#batches-error`))); err != nil || shown != "" {
		t.Fatalf("the list shows an error instead of the batches: %q %v", shown, err)
	}
	// A mark that a reload would wipe out.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.mounttestMark = 7`)); err != nil {
		t.Fatal(err)
	}

	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#send`)),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="queued"]`),
		chromedp.WaitVisible(chromedp.CSS(`#batches tr[data-status="queued"][data-progress="0"]`)),
	)
	if err != nil {
		t.Fatalf("sending the composer's example: %v", err)
	}
	id, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#d-id`)))
	bt.Must(t, err)
	if st := decode[bt.BatchStatus](t, call(t, "GET", s.api()+"/"+id, bt.AdminKey, "")); st.Status != "queued" || st.Count != 2 {
		t.Fatalf("the page shows batch %q, which the API has as %+v", id, st)
	}
	row := fmt.Sprintf(`#batches tr[data-batch=%q]`, id)

	if n := s.process(t, 1); n != 1 {
		t.Fatalf("processed %d tasks, want 1", n)
	}
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(row+`[data-status="running"][data-progress="50"]`)),
		chromedp.WaitVisible(`//dd[@id="d-sent" and text()="1"]`),
	)
	if err != nil {
		t.Fatalf("waiting for the batch half sent: %v", err)
	}
	if n := s.process(t, -1); n != 1 {
		t.Fatalf("processed %d tasks, want 1", n)
	}
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(row+`[data-status="completed"][data-progress="100"]`)),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="completed"]`),
		chromedp.WaitVisible(`//dd[@id="d-sent" and text()="2"]`),
		chromedp.WaitVisible(chromedp.CSS(`#stream-status[data-state="connected"]`)),
	)
	if err != nil {
		t.Fatalf("waiting for the batch completed: %v", err)
	}
	mark, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.mounttestMark || 0`))
	bt.Must(t, err)
	if mark != 7 {
		t.Errorf("the page was reloaded")
	}
	if errs, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#batches-error`))); err != nil || errs != "" {
		t.Errorf("the list shows an error: %q %v", errs, err)
	}
}
