package mounttest

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/go-chi/chi/v5"
	"github.com/labstack/echo/v4"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/dashboard"
)

// The mounts below are docs/embedding.md's, line for line: each builds a
// host's router with the batch API and the dashboard on it. At the root
// the API is at /messages/batch and the dashboard at /admin/batches/;
// under the prefix /api/v1 they are at /api/v1/messages/batch and
// /api/v1/admin/batches/, and the Service has
// Config.BasePath = "/api/v1/messages/batch" (but for
// netHTTPStripPrefix, which strips /api/v1 and keeps the default).
// In every one the dashboard's API is the host's whole router: the
// events endpoint calls Options.BatchPath in-process, the path the
// browser uses.

func netHTTPAtRoot(svc *batch.Service) (http.Handler, error) {
	mux := http.NewServeMux()
	svc.Mount(mux) // /messages/batch and /messages/batch/
	dash, err := dashboard.New(dashboard.Options{API: mux})
	if err != nil {
		return nil, err
	}
	mux.Handle("/admin/batches/", http.StripPrefix("/admin/batches", dash))
	return mux, nil
}

func netHTTPUnderPrefix(svc *batch.Service) (http.Handler, error) {
	mux := http.NewServeMux()
	svc.Mount(mux) // Config.BasePath: /api/v1/messages/batch and /api/v1/messages/batch/
	dash, err := dashboard.New(dashboard.Options{API: mux, BatchPath: "/api/v1/messages/batch"})
	if err != nil {
		return nil, err
	}
	mux.Handle("/api/v1/admin/batches/", http.StripPrefix("/api/v1/admin/batches", dash))
	return mux, nil
}

func netHTTPStripPrefix(svc *batch.Service) (http.Handler, error) {
	mux := http.NewServeMux()
	api := http.StripPrefix("/api/v1", svc.Handler()) // Config.BasePath left at /messages/batch
	mux.Handle("/api/v1/messages/batch", api)
	mux.Handle("/api/v1/messages/batch/", api)
	dash, err := dashboard.New(dashboard.Options{API: mux, BatchPath: "/api/v1/messages/batch"})
	if err != nil {
		return nil, err
	}
	mux.Handle("/api/v1/admin/batches/", http.StripPrefix("/api/v1/admin/batches", dash))
	return mux, nil
}

func chiAtRoot(svc *batch.Service) (http.Handler, error) {
	r := chi.NewRouter()
	r.Mount("/messages/batch", svc.Handler())
	dash, err := dashboard.New(dashboard.Options{API: r})
	if err != nil {
		return nil, err
	}
	r.Mount("/admin/batches", http.StripPrefix("/admin/batches", dash))
	return r, nil
}

func chiUnderPrefix(svc *batch.Service) (http.Handler, error) {
	r := chi.NewRouter()
	dash, err := dashboard.New(dashboard.Options{
		API:       r, // the root router, not the /api/v1 one: BatchPath is the full path
		BatchPath: "/api/v1/messages/batch",
	})
	if err != nil {
		return nil, err
	}
	r.Route("/api/v1", func(v1 chi.Router) {
		v1.Mount("/messages/batch", svc.Handler()) // Config.BasePath: /api/v1/messages/batch
		v1.Mount("/admin/batches", http.StripPrefix("/api/v1/admin/batches", dash))
	})
	return r, nil
}

func ginAtRoot(svc *batch.Service) (http.Handler, error) {
	g := gin.New()
	g.Any("/messages/batch", gin.WrapH(svc.Handler()))
	g.Any("/messages/batch/*rest", gin.WrapH(svc.Handler()))
	dash, err := dashboard.New(dashboard.Options{API: g})
	if err != nil {
		return nil, err
	}
	g.Any("/admin/batches/*rest", gin.WrapH(http.StripPrefix("/admin/batches", dash)))
	return g, nil
}

func ginUnderPrefix(svc *batch.Service) (http.Handler, error) {
	g := gin.New()
	dash, err := dashboard.New(dashboard.Options{API: g, BatchPath: "/api/v1/messages/batch"})
	if err != nil {
		return nil, err
	}
	v1 := g.Group("/api/v1")
	v1.Any("/messages/batch", gin.WrapH(svc.Handler())) // Config.BasePath: /api/v1/messages/batch
	v1.Any("/messages/batch/*rest", gin.WrapH(svc.Handler()))
	v1.Any("/admin/batches/*rest", gin.WrapH(http.StripPrefix("/api/v1/admin/batches", dash)))
	return g, nil
}

func echoAtRoot(svc *batch.Service) (http.Handler, error) {
	e := echo.New()
	e.Any("/messages/batch", echo.WrapHandler(svc.Handler()))
	e.Any("/messages/batch/*", echo.WrapHandler(svc.Handler()))
	dash, err := dashboard.New(dashboard.Options{API: e})
	if err != nil {
		return nil, err
	}
	page := echo.WrapHandler(http.StripPrefix("/admin/batches", dash))
	e.Any("/admin/batches", page) // the dashboard redirects it to /admin/batches/
	e.Any("/admin/batches/*", page)
	return e, nil
}

func echoUnderPrefix(svc *batch.Service) (http.Handler, error) {
	e := echo.New()
	dash, err := dashboard.New(dashboard.Options{API: e, BatchPath: "/api/v1/messages/batch"})
	if err != nil {
		return nil, err
	}
	v1 := e.Group("/api/v1")
	v1.Any("/messages/batch", echo.WrapHandler(svc.Handler())) // Config.BasePath: /api/v1/messages/batch
	v1.Any("/messages/batch/*", echo.WrapHandler(svc.Handler()))
	page := echo.WrapHandler(http.StripPrefix("/api/v1/admin/batches", dash))
	v1.Any("/admin/batches", page) // the dashboard redirects it to /api/v1/admin/batches/
	v1.Any("/admin/batches/*", page)
	return e, nil
}

// host is one framework/placement: its mount, and where it puts things.
type host struct {
	name     string // framework/placement
	prefix   string // before /messages/batch and /admin/batches
	basePath string // batch.Config.BasePath ("" for the default)
	mount    func(*batch.Service) (http.Handler, error)
}

var hosts = []host{
	{"nethttp/root", "", "", netHTTPAtRoot},
	{"nethttp/prefix", "/api/v1", "/api/v1/messages/batch", netHTTPUnderPrefix},
	{"nethttp/prefix-stripped", "/api/v1", "", netHTTPStripPrefix},
	{"chi/root", "", "", chiAtRoot},
	{"chi/prefix", "/api/v1", "/api/v1/messages/batch", chiUnderPrefix},
	{"gin/root", "", "", ginAtRoot},
	{"gin/prefix", "/api/v1", "/api/v1/messages/batch", ginUnderPrefix},
	{"echo/root", "", "", echoAtRoot},
	{"echo/prefix", "/api/v1", "/api/v1/messages/batch", echoUnderPrefix},
}

func init() { gin.SetMode(gin.ReleaseMode) } // no route dump on stdout
