package bunstore

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAcceptFirst: while an accept's write is pending, other writes wait;
// they go on when the last pending one leaves or after maxWait, or give
// up with their context. A nil acceptFirst (not SQLite) never waits.
func TestAcceptFirst(t *testing.T) {
	var none *acceptFirst
	defer none.enter()()
	if err := none.wait(t.Context()); err != nil {
		t.Fatalf("nil: wait = %v, want nil", err)
	}

	a := newAcceptFirst(time.Hour)
	if err := a.wait(t.Context()); err != nil {
		t.Fatalf("nothing pending: wait = %v, want nil", err)
	}
	leave1, leave2 := a.enter(), a.enter()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := a.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("two pending: wait = %v, want its context's deadline", err)
	}

	done := make(chan error, 1)
	go func() { done <- a.wait(t.Context()) }()
	leave1()
	select {
	case err := <-done:
		t.Fatalf("one of two left: wait returned %v, want it still waiting", err)
	case <-time.After(20 * time.Millisecond):
	}
	leave2()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("both left: wait = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("both left: wait still blocked after 5 s")
	}

	// Pending again after it cleared: a new wait blocks again.
	leave := a.enter()
	ctx2, cancel2 := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel2()
	if err := a.wait(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("pending again: wait = %v, want its context's deadline", err)
	}
	leave()
	if err := a.wait(t.Context()); err != nil {
		t.Fatalf("cleared again: wait = %v, want nil", err)
	}

	// A stream of accepts holds no write back for longer than maxWait.
	b := newAcceptFirst(50 * time.Millisecond)
	defer b.enter()()
	start := time.Now()
	if err := b.wait(t.Context()); err != nil {
		t.Fatalf("pending past maxWait: wait = %v, want nil", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("pending: wait returned after %v, before maxWait (50ms)", waited)
	}
}
