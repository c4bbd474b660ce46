package chat

import (
	"fmt"
	"testing"
	"time"
)

// The hub's memory of sent events drops a key after the window, and the
// oldest keys beyond its size.
func TestRecentKeys(t *testing.T) {
	r := recentKeys{window: time.Minute, max: 3, at: map[string]time.Time{}}
	t0 := time.Now()
	for i, c := range []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, true}, {"a", time.Second, false}, {"b", 2 * time.Second, true}, {"c", 3 * time.Second, true},
		{"a", 4 * time.Second, false},
		{"d", 5 * time.Second, true},  // a is the oldest of four: forgotten
		{"a", 6 * time.Second, true},  // so a copy of a now passes (b forgotten)
		{"c", 7 * time.Second, false}, // c still remembered
		{"c", 2 * time.Minute, true},  // past the window
	} {
		if got := r.add(c.key, t0.Add(c.at)); got != c.want {
			t.Errorf("%d: add(%q) at %v = %v, want %v", i, c.key, c.at, got, c.want)
		}
		if len(r.at) > r.max {
			t.Fatalf("%d: %d keys remembered, max %d", i, len(r.at), r.max)
		}
	}
	// Many keys: the memory stays bounded and compacts.
	for i := range 10_000 {
		r.add(fmt.Sprint(i), t0.Add(3*time.Minute))
	}
	if len(r.at) > r.max || len(r.order)-r.head != len(r.at) || len(r.order) > 2*1024+r.max {
		t.Errorf("after 10,000 keys: %d remembered, order %d from %d", len(r.at), len(r.order), r.head)
	}
}
