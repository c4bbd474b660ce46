package bunstore

import "testing"

// TestDirCacheSlots checks the fixed array's bookkeeping: what was added
// is found, a set holds its two newest facts (a hit moves a fact to the
// front), the empty slot's value is never a fact, and reset forgets all.
func TestDirCacheSlots(t *testing.T) {
	c := newDirCache(3)
	if c.size != 4 {
		t.Fatalf("size %d, want 3 rounded up to 4", c.size)
	}
	if got := c.has([]dirKey{{1, 1}}); got[0] {
		t.Fatal("an empty cache knows a fact")
	}
	// Keys whose low bits pick the same set (0): 0, 1, 4, 5 … share it.
	a, b, d := dirKey{0, 7}, dirKey{1, 7}, dirKey{4, 7}
	c.add(a, b)
	if got := c.has([]dirKey{a, b, {}}); !got[0] || !got[1] || got[2] {
		t.Fatalf("has(a, b, zero) = %v, want true, true, false", got)
	}
	// The set is [b, a]; finding a moves it to the front: [a, b].
	c.has([]dirKey{a})
	c.add(d) // pushes out the set's older fact, now b: [d, a]
	if got := c.has([]dirKey{a, b, d}); !got[0] || got[1] || !got[2] {
		t.Fatalf("after a third fact in the set: has(a, b, d) = %v, want true, false, true", got)
	}
	other := dirKey{2, 7} // the other set
	c.add(other)
	if got := c.has([]dirKey{other, a, d}); !got[0] || !got[1] || !got[2] {
		t.Fatalf("a fact of the other set disturbed this one: %v", got)
	}
	c.add(dirKey{})
	if got := c.has([]dirKey{{}}); got[0] {
		t.Fatal("the zero key was stored")
	}
	c.reset()
	if got := c.has([]dirKey{a, d, other}); got[0] || got[1] || got[2] {
		t.Fatalf("after reset: %v", got)
	}
}
