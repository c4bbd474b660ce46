package bunstore

import (
	"math/rand/v2"
	"testing"
)

// TestDirCacheSlots checks the fixed array's bookkeeping: what was added
// is found, a set holds its dirWays most recently used facts (a hit moves
// a fact to the front), the empty slot's value is never a fact, and reset
// forgets all.
func TestDirCacheSlots(t *testing.T) {
	c := newDirCache(dirWays + 1)
	if c.size != 2*dirWays {
		t.Fatalf("size %d, want %d rounded up to %d", c.size, dirWays+1, 2*dirWays)
	}
	if got := c.has([]dirKey{{1, 1}}); got[0] {
		t.Fatal("an empty cache knows a fact")
	}
	// Keys whose low bits pick the same set (the first): 0 … dirWays-1,
	// 2*dirWays … share it.
	keys := make([]dirKey, dirWays+1)
	for i := range dirWays {
		keys[i] = dirKey{uint64(i), 7}
	}
	keys[dirWays] = dirKey{2 * dirWays, 7}
	full, extra := keys[:dirWays], keys[dirWays]
	c.add(full...)
	if got := c.has(append(full[:dirWays:dirWays], dirKey{})); !allTrue(got[:dirWays]) || got[dirWays] {
		t.Fatalf("has(the set's facts, zero) = %v, want all true, then false", got)
	}
	// The set is full, keys[0] its least recently used fact; finding it
	// moves it to the front, and keys[1] becomes the one to go.
	c.has(keys[:1])
	c.add(extra)
	got := c.has(keys)
	for i, want := range got {
		if want != (i != 1) {
			t.Fatalf("after a fact too many in the set: has = %v, want all but keys[1]", got)
		}
	}
	other := dirKey{dirWays, 7} // the other set
	c.add(other)
	if got := c.has([]dirKey{other, keys[0], extra}); !allTrue(got) {
		t.Fatalf("a fact of the other set disturbed this one: %v", got)
	}
	c.add(dirKey{})
	if got := c.has([]dirKey{{}}); got[0] {
		t.Fatal("the zero key was stored")
	}
	c.reset()
	if got := c.has([]dirKey{keys[0], extra, other}); got[0] || got[1] || got[2] {
		t.Fatalf("after reset: %v", got)
	}
}

func allTrue(bs []bool) bool {
	for _, b := range bs {
		if !b {
			return false
		}
	}
	return true
}

// TestDirCacheLoad fills the default cache with the facts of a campaign
// to 100,000 receivers (a user and a pair fact each: 38 % of the slots)
// and checks how many were pushed out by facts that landed in a full set.
// With sets of two slots 6.8 % were (13,518 of 200,000), with four
// 1.7 %, with eight 0.2 %; a pushed-out sender's fact used to turn the
// read-only probe off for the rest of a campaign.
func TestDirCacheLoad(t *testing.T) {
	c := newDirCache(DefaultDirectoryCache)
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]dirKey, 200_000)
	for i := range keys {
		keys[i] = dirKey{r.Uint64(), r.Uint64()}
	}
	c.add(keys...)
	out := 0
	for _, ok := range c.has(keys) {
		if !ok {
			out++
		}
	}
	if limit := len(keys) / 200; out > limit { // 0.5 %
		t.Fatalf("%d of %d facts pushed out, want at most %d", out, len(keys), limit)
	}
	t.Logf("%d of %d facts pushed out", out, len(keys))
}
