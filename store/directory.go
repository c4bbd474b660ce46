package store

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"strings"
)

// Directory is the host's view of users and rooms. Package batch uses it
// to check recipients before a batch is accepted and to find the rooms
// messages go to.
type Directory interface {
	// MissingUsers returns the IDs among ids that are not users of app,
	// each once, in the order of their first appearance in ids. It returns
	// an empty slice (not an error) when all exist. ids may contain
	// duplicates and may be long (up to a batch's MaxRecipients):
	// implementations should look them up in bulk.
	MissingUsers(ctx context.Context, app string, ids []string) ([]string, error)

	// MissingRooms is MissingUsers for room IDs.
	MissingRooms(ctx context.Context, app string, ids []string) ([]string, error)

	// DirectRoom returns the ID of the one-on-one room of users a and b in
	// app, creating it with both users as members if it does not exist.
	// The pair is unordered: DirectRoom(a, b) and DirectRoom(b, a) return the
	// same room. Concurrent calls for one pair must create exactly one room.
	// It returns ErrNotFound if a or b is not a user of app. a == b is
	// allowed (a user's room with themself). If a room with the pair's ID
	// exists but a and b are not both members of it, it belongs to another
	// pair whose IDs give the same room ID (the default scheme lower-cases
	// user IDs): DirectRoom returns ErrConflict rather than that room.
	DirectRoom(ctx context.Context, app, a, b string) (string, error)

	// RoomMembers returns the user IDs of the members of each room in
	// roomIDs that exists, keyed by room ID; rooms that do not exist are
	// absent from the map. Member order is unspecified.
	RoomMembers(ctx context.Context, app string, roomIDs []string) (map[string][]string, error)
}

// DirectRoomID is the default ID of the one-on-one room of users a and b:
// IMKit's client scheme, the lower-case hex MD5 of the two user IDs,
// lower-cased, sorted and joined with "_". It is symmetric in a and b.
// Because it lower-cases, user IDs that differ only in case share a room
// ID; hosts whose user IDs are case-sensitive should supply their own
// scheme to the store (memstore.Options.DirectRoomID,
// bunstore.Options.DirectRoomID).
func DirectRoomID(a, b string) string {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if b < a {
		a, b = b, a
	}
	sum := md5.Sum([]byte(a + "_" + b))
	return hex.EncodeToString(sum[:])
}

// DirectRoomNamer is implemented by Directories that can name the
// one-on-one room of two users without creating it. Package batch uses it
// to show, in a dry run, the room each message would go to; without it
// the preview names the receiver only.
type DirectRoomNamer interface {
	// DirectRoomID returns the ID DirectRoom(app, a, b) uses for the pair.
	DirectRoomID(a, b string) string
}

// DirectRoomResolver is implemented by Directories that can find or
// create the one-on-one rooms of one user with many others in one call.
// The batch processor uses it, when present, for every chunk of
// one-on-one recipients instead of a user look-up, a room look-up and
// DirectRoom calls for the rooms that do not exist yet: a store on a
// database answers it in a round trip or two.
type DirectRoomResolver interface {
	// DirectRooms is DirectRoom(ctx, app, a, bs[i]) for every i, in bulk.
	// It returns one result per element of bs, in order: the room of a
	// and bs[i] (created, with both as members, if the pair has none), or
	// the error DirectRoom would return for that pair: ErrNotFound if a
	// or bs[i] is not a user of app, ErrConflict if a room exists under
	// the pair's ID without both as members. bs may hold duplicates and
	// a itself. The returned error is for a failure of the call as a
	// whole (then nothing may have been created, or some rooms were: the
	// call is idempotent, and the caller calls again). It is safe under
	// concurrency with itself and DirectRoom: a pair never gets two
	// rooms, and a room never gets the members of two pairs.
	DirectRooms(ctx context.Context, app, a string, bs []string) ([]DirectRoomResult, error)
}

// DirectRoomResult is the outcome of one pair of
// [DirectRoomResolver.DirectRooms].
type DirectRoomResult struct {
	// Room is the ID of the pair's one-on-one room; "" when Err is set.
	Room string
	// Err is nil, or wraps ErrNotFound or ErrConflict as DirectRoom's
	// error for the pair would.
	Err error
}
