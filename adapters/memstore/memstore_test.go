package memstore_test

import (
	"testing"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/store"
	"github.com/chatbatch/chatbatch/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return memstore.New(nil) }, nil)
}

func TestDirectRoomUsesIMKitScheme(t *testing.T) {
	s := memstore.New(nil)
	ctx := t.Context()
	if err := s.AddUsers(ctx, "app", "System", "user-a"); err != nil {
		t.Fatal(err)
	}
	id, err := s.DirectRoom(ctx, "app", "user-a", "System")
	if err != nil {
		t.Fatal(err)
	}
	// md5("system_user-a")
	if want := store.DirectRoomID("system", "user-a"); id != want || want != "c4c8fcc8e02e576e239f81e9f9a90d21" {
		t.Errorf("direct room ID = %q, want %q = md5(\"system_user-a\")", id, want)
	}
}

func TestDirectRoomCustomScheme(t *testing.T) {
	s := memstore.New(&memstore.Options{DirectRoomID: func(a, b string) string {
		if b < a {
			a, b = b, a
		}
		return "dm:" + a + ":" + b
	}})
	ctx := t.Context()
	if err := s.AddUsers(ctx, "app", "x", "y"); err != nil {
		t.Fatal(err)
	}
	id, err := s.DirectRoom(ctx, "app", "y", "x")
	if err != nil {
		t.Fatal(err)
	}
	if id != "dm:x:y" {
		t.Errorf("DirectRoom with a custom scheme = %q, want dm:x:y", id)
	}
}
