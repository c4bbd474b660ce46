package batch_test

import (
	"context"
	"errors"
	"testing"

	"github.com/chatbatch/chatbatch/batch"
)

func TestStaticKeys(t *testing.T) {
	t.Parallel()
	keys := batch.NewStaticKeys(map[string]batch.Principal{
		"key-1": {AppID: "a1", Admin: true},
		"key-2": {AppID: "a2"},
		"":      {AppID: "empty"},
	})
	ctx := context.Background()
	for key, want := range map[string]batch.Principal{"key-1": {AppID: "a1", Admin: true}, "key-2": {AppID: "a2"}} {
		p, err := keys.Authenticate(ctx, key)
		if err != nil || p != want {
			t.Errorf("Authenticate(%q) = %+v, %v", key, p, err)
		}
	}
	for _, key := range []string{"", "key-3", "KEY-1", "key-1 "} {
		if _, err := keys.Authenticate(ctx, key); !errors.Is(err, batch.ErrInvalidAPIKey) {
			t.Errorf("Authenticate(%q) = %v, want ErrInvalidAPIKey", key, err)
		}
	}
}
