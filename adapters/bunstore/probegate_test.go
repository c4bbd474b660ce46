package bunstore

import "testing"

// TestProbeGate: a probe that settles fewer than half its pairs turns the
// next probeSkips calls away from the probe; then one probes again, and a
// probe that settles half or more keeps probing.
func TestProbeGate(t *testing.T) {
	var g probeGate
	for i := range 3 {
		if !g.try() {
			t.Fatalf("call %d of a fresh gate: skipped, want probed", i)
		}
		g.record(500, 500)
	}
	g.record(249, 500) // fewer than half: the next probeSkips skip
	for i := range probeSkips {
		if g.try() {
			t.Fatalf("call %d after a wasted probe: probed, want skipped", i)
		}
	}
	if !g.try() {
		t.Fatal("after probeSkips skipped calls: skipped, want probed again")
	}
	g.record(250, 500) // half: worth it
	for i := range 2 {
		if !g.try() {
			t.Fatalf("call %d after a probe that settled half: skipped, want probed", i)
		}
	}
}
