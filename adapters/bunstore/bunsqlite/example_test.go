package bunsqlite_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunsqlite"
	"github.com/chatbatch/chatbatch/store"
)

// Open a database, create bunstore's tables, seed users and use the
// store. With PostgreSQL or MySQL only the opener changes
// (bunpostgres.Open, bunmysql.Open, or bunopen.Open for a DSN chosen at
// run time). These examples live here, not in package bunstore, so that
// bunstore's own tests link no database driver.
func Example() {
	ctx := context.Background()
	db, err := bunsqlite.Open(ctx, "sqlite::memory:") // or "sqlite:chatbatch.db"
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close() // the host owns the pool; the Store never closes it

	s, err := bunstore.New(db, &bunstore.Options{TablePrefix: "demo_"})
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil { // idempotent: run it at every start
		log.Fatal(err)
	}
	if err := s.AddUsers(ctx, "app1", "system", "alice", "bob"); err != nil {
		log.Fatal(err)
	}

	missing, err := s.MissingUsers(ctx, "app1", []string{"alice", "carol", "bob", "carol"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("missing:", missing)

	room, err := s.DirectRoom(ctx, "app1", "system", "alice")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("direct room:", room) // md5("alice_system"), IMKit's scheme
	rooms, err := s.UserRooms(ctx, "app1", "alice")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice's rooms:", len(rooms))
	// Output:
	// missing: [carol]
	// direct room: e51fcca44e772a9f00d8be16b4970735
	// alice's rooms: 1
}

// hostDirectory and hostMessages stand for a host's own users, rooms and
// messages, kept in its own tables; only their method sets matter here.
type hostDirectory struct{}

func (hostDirectory) MissingUsers(ctx context.Context, app string, ids []string) ([]string, error) {
	return []string{}, nil
}
func (hostDirectory) MissingRooms(ctx context.Context, app string, ids []string) ([]string, error) {
	return []string{}, nil
}
func (hostDirectory) DirectRoom(ctx context.Context, app, a, b string) (string, error) {
	return store.DirectRoomID(a, b), nil
}
func (hostDirectory) RoomMembers(ctx context.Context, app string, rooms []string) (map[string][]string, error) {
	return map[string][]string{}, nil
}

type hostMessages struct{}

func (hostMessages) SaveMessages(ctx context.Context, app string, msgs []store.Message) error {
	return nil
}

// A host that keeps users, rooms and messages in its own tables uses
// bunstore for the batch bookkeeping only: Migrate creates just the batch
// and chunk tables, and the host passes its own Directory and Messages
// beside the Store:
//
//	svc, err := batch.New(batch.Config{
//		Directory: hostDirectory{}, // the host's users and rooms
//		Messages:  hostMessages{},  // the host's messages
//		Batches:   batches,         // *bunstore.Store
//		// Deliverer, Authenticator, Redis, …
//	})
//
// The assignments below check at compile time that the three parts fit
// those fields.
func Example_bookkeepingOnly() {
	ctx := context.Background()
	db, err := bunsqlite.Open(ctx, "sqlite::memory:")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	batches, err := bunstore.New(db, &bunstore.Options{BookkeepingOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := batches.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	var (
		directory store.Directory = hostDirectory{}
		messages  store.Messages  = hostMessages{}
		bookkeep  store.Batches   = batches
	)
	_, _, _ = directory, messages, bookkeep

	fmt.Println("tables:", batches.Tables())
	_, err = batches.MissingUsers(ctx, "app1", []string{"alice"})
	fmt.Println("Directory methods refused:", errors.Is(err, bunstore.ErrBookkeepingOnly))
	// Output:
	// tables: [chatbatch_schema_migrations chatbatch_idempotency_keys chatbatch_batch_reads chatbatch_chunks chatbatch_batches]
	// Directory methods refused: true
}
