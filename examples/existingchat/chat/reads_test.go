package chat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/examples/existingchat/internal/pgtest"
)

// TestReadReceipts: a member's marker moves forward only; the hooks get
// exactly the messages of other authors it newly passes, once, however
// many receipts race; a message of another conversation or a non-member
// is refused.
func TestReadReceipts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := pgtest.DB(t, 10)
	sessions := &chat.Sessions{Secret: []byte("secret")}
	srv := chat.NewServer(db, &chat.Auth{Sessions: sessions}, chat.NewHub(db.Members, nil), nil)
	var mu sync.Mutex
	var got []chat.ReadReceipt
	srv.OnRead(func(_ context.Context, rr chat.ReadReceipt) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, rr)
	})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)

	acct := func(h string) chat.Account {
		a, err := db.CreateAccount(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	alice, bob, carol := acct("alice"), acct("bob"), acct("carol")
	conv, err := db.CreateGroup(ctx, "g", []int64{alice.ID, bob.ID})
	if err != nil {
		t.Fatal(err)
	}
	other, err := db.CreateGroup(ctx, "other", []int64{alice.ID, carol.ID})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string // bob, alice, bob, bob
	for i, author := range []chat.Account{bob, alice, bob, bob} {
		m, err := db.PostMessage(ctx, conv, author, "m", nil)
		if err != nil {
			t.Fatal(i, err)
		}
		ids = append(ids, m.ID)
	}
	elsewhere, err := db.PostMessage(ctx, other, carol, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	read := func(who chat.Account, c, upTo string) (int, map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"upTo": upTo})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/api/v1/conversations/"+c+"/read", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+sessions.Issue(who))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	passed := func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		var out [][]string
		for _, rr := range got {
			var ms []string
			for _, m := range rr.Messages {
				ms = append(ms, m.ID)
			}
			out = append(out, ms)
		}
		got = nil
		return out
	}

	// Alice reads up to the third message: bob's first and third pass
	// (her own second does not), in order.
	if st, out := read(alice, conv, ids[2]); st != http.StatusOK || out["newlyRead"] != 2.0 {
		t.Fatalf("first receipt: %d %v", st, out)
	}
	if p := passed(); len(p) != 1 || !slices.Equal(p[0], []string{ids[0], ids[2]}) {
		t.Fatalf("hook got %v, want [[%s %s]]", p, ids[0], ids[2])
	}
	// Back to the first message, or the same one again: nothing moves.
	for _, upTo := range []string{ids[0], ids[2]} {
		if st, out := read(alice, conv, upTo); st != http.StatusOK || out["newlyRead"] != 0.0 {
			t.Errorf("receipt up to %s again: %d %v", upTo, st, out)
		}
	}
	if p := passed(); len(p) != 0 {
		t.Errorf("a marker that did not move ran the hooks: %v", p)
	}
	// Eight racing receipts up to the last message: one passes it.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if st, out := read(alice, conv, ids[3]); st != http.StatusOK {
				t.Errorf("racing receipt: %d %v", st, out)
			}
		})
	}
	wg.Wait()
	if p := passed(); len(p) != 1 || !slices.Equal(p[0], []string{ids[3]}) {
		t.Errorf("racing receipts: hooks got %v, want one [%s]", p, ids[3])
	}
	// Refused: a message of another conversation, not a UUID, not a member.
	if st, out := read(alice, conv, elsewhere.ID); st != http.StatusNotFound || out["error"].(map[string]any)["code"] != "no_such_message" {
		t.Errorf("a message of another conversation: %d %v", st, out)
	}
	if st, _ := read(alice, conv, "not-a-uuid"); st != http.StatusNotFound {
		t.Errorf("not a UUID: %d", st)
	}
	if st, _ := read(carol, conv, ids[0]); st != http.StatusForbidden {
		t.Errorf("a non-member's receipt: %d", st)
	}
	if p := passed(); len(p) != 0 {
		t.Errorf("refused receipts ran the hooks: %v", p)
	}
}
