package mounttest

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// TestConsolePauseResumeAndReads (issue 24): in a real browser, a batch
// paused from its detail sends nothing while its worker runs; Resume
// lets it finish; reads the host reports (MarkRead) appear as the read
// rate beside the progress bar and as read/unread in the recipients,
// whose read filter keeps the unread ones; a receiver ID with markup
// shows as text.
func TestConsolePauseResumeAndReads(t *testing.T) {
	t.Parallel()
	c := newConsole(t, func(c *batch.Config) { c.ChunkSize = 1 })
	ctx := t.Context()
	bt.Must(t, c.fs.Store.(*memstore.Store).AddUsers(ctx, bt.TestApp, "<b>x</b>"))
	id := bt.Accepted(t, call(t, "POST", c.api(), bt.AdminKey,
		`{"message":"Sale!","messageType":"text","paras":[{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"<b>x</b>"},{"room":"room-001"}]}`)).BatchID
	bctx := browser(t, 120*time.Second)
	c.signIn(t, bctx, "#/batches/"+id)
	err := chromedp.Do(bctx,
		chromedp.WaitVisible(chromedp.CSS(`#d-status[data-status="queued"]`)),
		chromedp.Click(chromedp.CSS(`#pause`)),
		chromedp.WaitVisible(chromedp.CSS(`#d-status[data-status="paused"]`)),
	)
	if err != nil {
		t.Fatalf("pausing from the detail: %v (%s)", err, pageText(bctx, "#detail"))
	}
	if !evaluate[bool](t, bctx, `document.getElementById("pause").disabled && !document.getElementById("resume").disabled`) {
		t.Errorf("a paused batch: Pause should be disabled, Resume enabled")
	}
	c.run(t) // the worker takes the paused batch's tasks and ends them
	time.Sleep(1500 * time.Millisecond)
	if st := decode[bt.BatchStatus](t, call(t, "GET", c.api()+"/"+id, bt.AdminKey, "")); st.Status != "paused" || st.Sent != 0 {
		t.Fatalf("while paused with a worker running: %+v", st)
	}
	err = chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`#resume`)),
		chromedp.WaitVisible(chromedp.CSS(`#d-status[data-status="completed"]`)),
	)
	if err != nil {
		t.Fatalf("resuming: %v (%s)", err, pageText(bctx, "#detail"))
	}
	if !evaluate[bool](t, bctx, `document.getElementById("pause").disabled && document.getElementById("resume").disabled`) {
		t.Errorf("a completed batch: Pause and Resume should be disabled")
	}

	// Reads the host reports: the rate beside the bar, read/unread below.
	n, err := c.svc.MarkRead(ctx, bt.TestApp, "user-a", id+"-0")
	bt.Must(t, err)
	if n != 1 {
		t.Fatalf("MarkRead recorded %d", n)
	}
	err = chromedp.Do(bctx,
		chromedp.WaitVisible(`//span[@id="d-read" and text()="read 25.0 % (1 of 4)"]`),
		chromedp.WaitVisible(chromedp.CSS(`#recipients tbody tr[data-read="true"]`)),
	)
	if err != nil {
		t.Fatalf("the read rate: %v (%q)", err, pageText(bctx, "#d-read"))
	}
	reads := evaluate[[]string](t, bctx, `[...document.querySelectorAll("#recipients tbody tr")].map((tr) => tr.cells[4].textContent)`)
	if len(reads) != 4 || reads[1] != "unread" || reads[0] == "unread" || reads[0] == "" {
		t.Errorf("the read column: %q", reads)
	}
	if got := evaluate[string](t, bctx, `document.querySelector("#recipients tbody tr:nth-child(3)").cells[1].innerHTML`); got != "&lt;b&gt;x&lt;/b&gt;" {
		t.Errorf("a receiver with markup shows as %q, want it as text", got)
	}
	bt.Must(t, chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS(`#r-read`), "false")))
	evaluate[bool](t, bctx, `document.getElementById("r-read").dispatchEvent(new Event("change"))`)
	err = chromedp.Do(bctx, chromedp.WaitNotPresent(chromedp.CSS(`#recipients tbody tr[data-read="true"]`)))
	if err != nil {
		t.Fatalf("filtering the unread: %v", err)
	}
	if got := evaluate[string](t, bctx, `document.getElementById("r-range").textContent`); got != "#1–#3 of 3 unread" {
		t.Errorf("the unread range: %q", got)
	}
	screenshot(t, bctx, "console-reads.png", 1280, 900, "#detail")
}
