// Package store defines the storage seams of chatbatch: the host's users and
// rooms ([Directory]), the messages a batch produces ([Messages]) and
// chatbatch's own bookkeeping of batches ([Batches]).
//
// The interfaces are deliberately thin: all policy (validation, chunking,
// retries, rendering) lives in package batch. An implementation only stores
// and loads. A team that already has users, rooms and messages in its own
// database implements [Directory] and [Messages] on top of it and uses a
// chatbatch adapter (bunstore with its BookkeepingOnly option, or memstore)
// for [Batches].
//
// # Who implements what
//
//	interface   implemented by                          holds
//	Directory   the host, over its users and rooms      who exists, one-on-one rooms, members
//	            (or memstore, bunstore)
//	Messages    the host, over its messages             the messages a batch sends
//	            (or memstore, bunstore)
//	Batches     chatbatch: memstore, bunstore           batches, chunks, outcomes, idempotency
//	                                                    keys, recalls, end-of-batch reports
//
// [Batches] is one required contract: every capability of chatbatch's own
// bookkeeping is a method of it, and package batch uses all of them.
//
// The host's seams may offer more through optional interfaces, which
// package batch finds by type assertion. What it does without each, and the
// conformance case ([storetest.Run]) that covers it:
//
//	optional interface   on          without it                                   conformance case
//	DirectRoomNamer      Directory   a dry run names the receiver, not its room;  RunDirectory/DirectRoomNamer
//	                                 without a resolver either, every receiver's
//	                                 room is a DirectRoom call
//	DirectRoomResolver   Directory   a chunk's rooms are found with MissingUsers  RunDirectory/DirectRooms,
//	                                 and RoomMembers look-ups and one DirectRoom  DirectRoomsConcurrent,
//	                                 call per new room (more round trips)         DirectRoomsMany
//	MessageReader        Messages    GET /messages/batch?batchID= answers 501     RunMessages/GetMessages
//	MessageDeleter       Messages    POST /messages/batch/{id}/recall answers 501 RunMessages/DeleteMessages
//
// A recall also needs a Deliverer that implements delivery.Retractor; see
// package delivery for the delivery seam's own table.
//
// # Contracts
//
// Methods that write, or that may grow inputs, take a params struct
// (StartChunk, CompleteChunk, CancelBatch, PendingChunks, …): a new input
// is a new field, not a breaking change. Look-ups by key (MissingUsers,
// RoomMembers, GetBatch, LoadChunk, …) take the key itself: what they are
// asked for is all they will ever need.
//
// Every method is scoped by an application ID: an implementation must never
// return or change data of another app. Implementations must be safe for
// concurrent use by multiple goroutines and processes, must not retry
// failed operations (return the error; the caller retries), and must not
// keep references to slices passed in after the call returns.
//
// # Compatibility
//
// Directory, Messages and the optional interfaces are the seams outsiders
// implement; they are covered by semantic versioning: a method is never
// added to them, a new capability comes as a new optional interface.
// Batches is chatbatch's own bookkeeping and grows with chatbatch: a minor
// release may add a method to it (CHANGELOG.md names it, and storetest
// gains its cases in the same release). An implementation of Batches for a
// database bunstore does not support is welcome; it must pass
// [storetest.RunBatches] and follow those additions. Every implementation
// should pass [storetest.Run] (or the part it implements) before it is used
// in production.
//
// [storetest.Run]: https://pkg.go.dev/github.com/chatbatch/chatbatch/store/storetest#Run
// [storetest.RunBatches]: https://pkg.go.dev/github.com/chatbatch/chatbatch/store/storetest#RunBatches
package store

import "errors"

// ErrNotFound is returned (wrapped) when the item asked for does not exist
// in the app. Check it with errors.Is.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned (wrapped) when a write collides with existing
// state: a batch ID that already exists, or a chunk that was already
// completed. Check it with errors.Is.
var ErrConflict = errors.New("store: conflict")

// Store is the whole storage seam. Adapters that keep everything implement
// it; package batch also accepts the three parts separately.
type Store interface {
	Directory
	Messages
	Batches
}
