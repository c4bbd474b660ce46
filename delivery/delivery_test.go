package delivery_test

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/delivery"
)

func TestPermanent(t *testing.T) {
	if delivery.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	cause := fmt.Errorf("open token store: %w", fs.ErrNotExist)
	err := delivery.Permanent(cause)
	if !delivery.IsPermanent(err) || !errors.Is(err, fs.ErrNotExist) || err.Error() != cause.Error() {
		t.Errorf("Permanent(%v) = %v: permanent=%v, wraps cause=%v", cause, err, delivery.IsPermanent(err), errors.Is(err, fs.ErrNotExist))
	}
	if !delivery.IsPermanent(fmt.Errorf("push: %w", delivery.ErrUnregistered)) {
		t.Error("ErrUnregistered is not permanent")
	}
	if delivery.IsPermanent(errors.New("timeout")) {
		t.Error("a plain error is permanent")
	}
}

func TestPartialError(t *testing.T) {
	pe := &delivery.PartialError{Failed: map[int]error{
		4: delivery.Permanent(errors.New("gone")), 0: errors.New("timeout"),
		7: delivery.ErrUnregistered, 9: delivery.ErrPermanent,
	}}
	if pe.Permanent() {
		t.Error("a PartialError with a transient item reports Permanent")
	}
	msg := pe.Error()
	if !strings.HasPrefix(msg, "delivery: 4 items failed; [0]: timeout; [4]: gone") || !strings.HasSuffix(msg, "and 1 more") {
		t.Errorf("Error() = %q", msg)
	}
	delete(pe.Failed, 0)
	if !pe.Permanent() {
		t.Error("a PartialError with only permanent items is not Permanent")
	}
	wrapped := fmt.Errorf("webhook: %w", pe)
	errs := delivery.ItemErrors(wrapped, 8)
	if errs[4] == nil || errs[7] == nil || errs[0] != nil || len(errs) != 8 {
		t.Errorf("ItemErrors through a wrapped PartialError = %v", errs)
	}
	all := delivery.ItemErrors(errors.New("down"), 3)
	for i, e := range all {
		if e == nil {
			t.Errorf("ItemErrors of a plain error left item %d nil", i)
		}
	}
	if errs := delivery.ItemErrors(nil, 2); errs[0] != nil || errs[1] != nil {
		t.Errorf("ItemErrors(nil) = %v", errs)
	}
}

func TestRetryAfter(t *testing.T) {
	base := errors.New("503 Service Unavailable")
	if delivery.RetryAfter(base) != 0 || delivery.RetryAfter(nil) != 0 {
		t.Error("RetryAfter of an error that asked for no wait is not 0")
	}
	err := fmt.Errorf("deliver: %w", delivery.WithRetryAfter(base, 7*time.Second))
	if got := delivery.RetryAfter(err); got != 7*time.Second || !errors.Is(err, base) || delivery.IsPermanent(err) {
		t.Errorf("RetryAfter = %v (errors.Is %v)", got, errors.Is(err, base))
	}
	pe := &delivery.PartialError{Failed: map[int]error{0: delivery.WithRetryAfter(base, time.Second), 3: delivery.WithRetryAfter(base, time.Minute)}}
	if got := delivery.RetryAfter(fmt.Errorf("push: %w", pe)); got != time.Minute {
		t.Errorf("RetryAfter through a PartialError = %v, want the longest, 1m", got)
	}
	if delivery.WithRetryAfter(nil, time.Second) != nil || delivery.WithRetryAfter(base, 0) != base {
		t.Error("WithRetryAfter of nil or of no wait must change nothing")
	}
}
