package batch

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/go-playground/validator/v10"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// Service is the batch send pipeline: its HTTP handler accepts batches,
// its Processor sends them. One Service is safe for concurrent use by any
// number of requests and tasks. Create it with New.
type Service struct {
	cfg         Config
	log         *slog.Logger
	validator   *validator.Validate
	extraFields map[string]bool
	enqueuer    Enqueuer
	ownClient   *asynq.Client // created by New, closed by Close
	inspector   inspector     // on Config.Redis; nil without it
	suspects    suspects      // chunks held by a worker that never started them
	tel         *telemetry
	opt         optional
	adm         *admitter
	reads       readCache // what MarkRead needs of the batches read
}

// optional holds the optional interfaces of the seams a host implements
// (its Directory, Messages and Deliverer), found once by New: the only
// type assertions on the seams. A nil field is a capability the seam
// lacks; the package documentation of store and delivery says what
// chatbatch does without each. Config.Batches has none: it is one
// required contract.
type optional struct {
	namer     store.DirectRoomNamer    // dry runs name the room; known rooms are not re-created
	resolver  store.DirectRoomResolver // a chunk's one-on-one rooms in one call
	reader    store.MessageReader      // GET BasePath?batchID=
	deleter   store.MessageDeleter     // recall
	retractor delivery.Retractor       // recall
}

func optionalOf(cfg *Config) optional {
	var o optional
	o.namer, _ = cfg.Directory.(store.DirectRoomNamer)
	o.resolver, _ = cfg.Directory.(store.DirectRoomResolver)
	o.reader, _ = cfg.Messages.(store.MessageReader)
	o.deleter, _ = cfg.Messages.(store.MessageDeleter)
	o.retractor, _ = cfg.Deliverer.(delivery.Retractor)
	return o
}

// New returns a Service for cfg. It checks cfg and returns an error naming
// every field that is missing or wrong. It starts no goroutines; the only
// resources it may create are an asynq client (when Config.Enqueuer is
// nil) and an asynq inspector on Config.Redis, which connect lazily and
// are closed by Close.
func New(cfg Config) (*Service, error) {
	if errs := cfg.checkNotNegative(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tel, err := newTelemetry(&cfg)
	if err != nil {
		return nil, fmt.Errorf("batch: OpenTelemetry instruments: %w", err)
	}
	s := &Service{
		cfg:         cfg,
		log:         slog.New(traceHandler{cfg.Logger.Handler()}),
		tel:         tel,
		validator:   newValidator(cfg.MaxIDLength),
		extraFields: map[string]bool{},
		enqueuer:    cfg.Enqueuer,
		opt:         optionalOf(&cfg),
	}
	for _, f := range cfg.ExtraFields {
		s.extraFields[f] = true
	}
	if s.enqueuer == nil {
		s.ownClient = asynq.NewClient(cfg.Redis)
		s.enqueuer = s.ownClient
	}
	if cfg.Redis != nil {
		s.inspector = asynq.NewInspector(cfg.Redis)
	}
	s.adm = newAdmitter(s)
	return s, nil
}

// Close releases the asynq client and inspector New created, if any, and
// the Redis client of the default rate limiter (Config.RateLimit). It
// does not close the Store or anything else the host passed in.
func (s *Service) Close() error {
	var errs []error
	if s.ownClient != nil {
		errs = append(errs, s.ownClient.Close())
	}
	if s.inspector != nil {
		errs = append(errs, s.inspector.Close())
	}
	errs = append(errs, s.cfg.RateLimit.close()) // the rate limiter's Redis client, if made
	return errors.Join(errs...)
}
