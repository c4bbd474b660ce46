// Package batch is chatbatch's Batch Send Messages pipeline: the HTTP API
// that accepts a batch, the asynq task that sends it, and the sweep that
// makes sure every accepted batch ends. All policy lives here; storage and
// delivery are the host's, behind the interfaces of packages store and
// delivery.
//
// # Using it
//
// Create a Service with New and a Config (required: a Store, or its three
// parts Directory, Messages and Batches; a Deliverer; an Authenticator or
// AuthenticateRequest; and Redis, or an Enqueuer when Run is never called.
// Every other field has a default, the Default… constants), mount its
// Handler at Config.BasePath, and run
// the worker: Run starts an asynq server and the sweep, or register
// Processor on an asynq server of your own and call Sweep every
// Config.SweepInterval.
//
// # A request, from POST to delivery
//
//  1. The handler (http.go) routes the request and authenticates the
//     IM-API-KEY header through the Authenticator (auth.go).
//  2. POST /messages/batch (send.go) reads the body, decodes it strictly
//     (decode.go: one jsontext pass, every error with its JSON path) and
//     validates it; an Idempotency-Key is claimed (idempotency.go).
//  3. Every receiver, room and the sender are looked up in bulk; what is
//     missing is a 404 naming each. A dry run stops here with a preview.
//  4. The batch and its chunks (ChunkSize recipients each) are stored in
//     one transaction (Batches.CreateBatch), then one asynq task per chunk
//     is enqueued (queue.go), ID "<batchID>:<chunkNo>". The client gets
//     the batch ID. The request's store calls share one deadline,
//     Config.StoreTimeout.
//  5. A worker runs the task (process.go): StartChunk takes the chunk and
//     its lease (renewed while the chunk runs), rooms are resolved in bulk
//     (a receiver gets the one-on-one room with the sender, created when
//     missing), each message is rendered (package render) with the ID
//     "<batchID>-<para index>", saved (idempotently), delivered and, if
//     asked, pushed; CompleteChunk records every recipient's outcome.
//  6. GET /messages/batch/{id}, …/recipients and DELETE (status.go)
//     report and cancel; POST …/pause and …/resume (pause.go) hold the
//     chunks not started back and let them go; POST …/recall (recall.go)
//     takes back what was sent; OnBatchDone reports the end.
//  7. The host reports its read receipts (reads.go: Service.MarkRead,
//     MarkReads, POST …/-/reads); the first read of each recipient is
//     recorded, and the status reports read and readRate.
//  8. Sweep (recovery.go), every two seconds under Run (run.go),
//     re-enqueues the chunks whose worker died, whose task was lost or
//     archived, and makes the OnBatchDone calls a crashed process did not
//     make.
//
// Configuration is config.go, the Service itself service.go. Errors are
// answered in IMKit's envelope, {"RC":…,"RM":…,"error":{"code",
// "message","details"}} (errors.go): the code constants are the API's.
//
// The design — layers, invariants, error classification, how to extend
// it — is in docs/ARCHITECTURE.md in the repository.
package batch
