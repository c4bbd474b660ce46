// Package chatbatch gives an existing chat server the Batch Send Messages
// API: one POST /messages/batch sends a $var$-templated message to
// thousands of users' one-on-one rooms or to many rooms, asynchronously,
// with nothing lost and nothing sent twice.
//
// chatbatch is a library, not a service. The host keeps its HTTP server,
// its database, its real-time fan-out and its push provider; chatbatch
// adds the handler, the queue worker and the bookkeeping between them.
// This package holds only this overview and runnable examples; the code
// lives in the packages below.
//
// # Packages
//
//   - batch: the Service. Its Handler serves the API; its Processor (an
//     asynq.Handler) sends the batches; Run runs an asynq server and the
//     sweeper for hosts that have none. All policy lives here.
//   - store: the storage seams — Directory (the host's users and rooms),
//     Messages (where produced messages go) and Batches (chatbatch's own
//     bookkeeping) — and store/storetest, the conformance suite for
//     implementations.
//   - delivery: the Deliverer (real-time fan-out) and Pusher (push
//     notifications) seams, and delivery/deliverytest with a Recorder fake
//     and the conformance suite.
//   - render: the $name$ template compiler for message text and extra JSON.
//   - dashboard: the operator's console, an http.Handler on the batch API.
//   - adapters/memstore: an in-memory Store for tests and demos.
//   - adapters/bunstore: the Store on PostgreSQL, MySQL/MariaDB and SQLite
//     (opened by bunpostgres, bunmysql, bunsqlite, or bunopen by DSN).
//   - adapters/redispub: a Deliverer that publishes each message on Redis.
//   - adapters/webhook: a Deliverer and Pusher that POST signed webhooks
//     (Standard Webhooks) to the host.
//   - adapters/fcm: a Pusher on Firebase Cloud Messaging HTTP v1.
//   - adapters/ratelimit: a rate limit around any Deliverer or Pusher.
//
// cmd/chatbatchd is the reference server built from these packages, and
// examples/existingchat a chat server with its own schema that embeds
// them.
//
// # Lifecycle of a batch
//
//  1. POST /messages/batch: the API key (IM-API-KEY) is authenticated,
//     the body decoded strictly and validated, and every receiver and room
//     checked in bulk. A request that fails any check stores and enqueues
//     nothing.
//  2. The batch and its chunks (ChunkSize recipients each, default 500)
//     are stored in one transaction, then one asynq task per chunk is
//     enqueued with the task ID "<batchID>:<chunkNo>". The client gets
//     {"RC":0,"RM":"OK","result":{"batchID":…,"count":…}}: the batch is
//     durable from here on.
//  3. A worker processes each chunk: room wins over receiver, a receiver
//     gets the one-on-one room with the sender, the message and extra are
//     rendered per recipient, saved (idempotently, with a message ID
//     derived from the batch ID and the recipient's index), delivered and,
//     if asked, pushed. Each recipient's outcome is recorded.
//  4. GET /messages/batch/{batchID} reports the status and counters.
//  5. A worker holds the chunk it processes by a lease in the store. A
//     sweep, every two seconds in every worker, re-enqueues the chunks
//     whose worker died, whose task was lost (a failed enqueue, a flushed
//     Redis) or whose task asynq gave up on, so such a batch resumes
//     within about twelve seconds and is never lost. The store is the
//     truth; Redis is disposable.
//
// The design — layers, data flow, invariants, error classification, how
// to extend it — is written down in docs/ARCHITECTURE.md in the
// repository.
//
// # Implementing the seams
//
// Hosts implement store.Directory, store.Messages, delivery.Deliverer and
// delivery.Pusher over their own data and services; these are covered by
// semantic versioning: a method's new inputs go into its params struct,
// and new capabilities into new optional interfaces. store.Batches is
// chatbatch's own bookkeeping, implemented by memstore and bunstore; it is
// one required contract that may gain methods in minor releases. Run
// storetest.Run (or RunDirectory, RunMessages, RunBatches),
// deliverytest.RunDeliverer or deliverytest.RunPusher against an
// implementation before using it in production.
package chatbatch
