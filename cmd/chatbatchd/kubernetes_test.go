package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"
)

// TestKubernetesManifests reads deploy/kubernetes/*.yaml and compose.yaml
// with a YAML parser and checks the facts docs/operations.md states:
// a Deployment per role whose arguments chatbatchd's own flag parsing
// accepts (API: -worker=false; worker: -api=false with -metrics-addr),
// the same -app and Secret for both, probes on the paths and ports
// chatbatchd serves (/healthz, /readyz; a worker's on -metrics-addr), a
// grace period longer than chatbatchd's graceful stop (the HTTP side's
// shutdownTimeout, the worker's workerShutdownTimeout), rolling updates
// that keep an API pod serving, PodDisruptionBudgets that select the
// Deployments' pods and let a drain proceed, and compose.yaml's services
// with the same roles.
func TestKubernetesManifests(t *testing.T) {
	root := filepath.Join("..", "..")
	files, err := filepath.Glob(filepath.Join(root, "deploy", "kubernetes", "*.yaml"))
	must(t, err)
	if len(files) == 0 {
		t.Fatal("no deploy/kubernetes/*.yaml")
	}
	objs := map[string]map[string]any{} // "Kind/name"
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o map[string]any
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o == nil {
				continue
			}
			key := str(o, "kind") + "/" + str(o, "metadata", "name")
			if str(o, "apiVersion") == "" || objs[key] != nil {
				t.Fatalf("%s: %s without apiVersion, or twice", f, key)
			}
			objs[key] = o
		}
	}
	for _, want := range []string{"Deployment/chatbatchd-api", "Service/chatbatchd-api", "PodDisruptionBudget/chatbatchd-api",
		"Deployment/chatbatchd-worker", "PodDisruptionBudget/chatbatchd-worker"} {
		if objs[want] == nil {
			t.Fatalf("deploy/kubernetes has no %s (has %v)", want, keys(objs))
		}
	}

	apps := map[string]string{}
	for _, role := range []string{"api", "worker"} {
		d := objs["Deployment/chatbatchd-"+role]
		spec := get(d, "spec", "template", "spec").(map[string]any)
		containers := spec["containers"].([]any)
		if len(containers) != 1 {
			t.Fatalf("%s: %d containers", role, len(containers))
		}
		c := containers[0].(map[string]any)
		// The arguments, with the environment the pod gets (the Secret's
		// keys stand in for their values), through chatbatchd's flags.
		env := map[string]string{"IM_API_KEY": "k", "CHATBATCHD_DB": "postgres://db/chat", "CHATBATCHD_REDIS": "redis://redis:6379/0"}
		for _, e := range list(c, "env") {
			env[str(e, "name")] = str(e, "value")
		}
		if secret := str(list(c, "envFrom")[0], "secretRef", "name"); secret != "chatbatchd" {
			t.Errorf("%s: envFrom Secret %q, want chatbatchd", role, secret)
		}
		var args []string
		for _, a := range c["args"].([]any) {
			args = append(args, a.(string))
		}
		o, err := parseFlags(args, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("%s: chatbatchd %v: %v", role, args, err)
		}
		apps[role] = o.app
		ports := map[string]int{}
		for _, p := range list(c, "ports") {
			ports[str(p, "name")] = num(p, "containerPort")
		}
		probePort := func(probe string) (string, int) {
			p := get(c, probe, "httpGet")
			if p == nil {
				t.Fatalf("%s: no %s httpGet", role, probe)
			}
			port := get(p, "port")
			if name, ok := port.(string); ok {
				return str(p, "path"), ports[name]
			}
			return str(p, "path"), num(p, "port")
		}
		var served int // the port chatbatchd serves its probes on
		switch role {
		case "api":
			if !o.api || o.worker {
				t.Errorf("api: chatbatchd %v runs api=%v worker=%v, want the API only", args, o.api, o.worker)
			}
			served = port(t, o.addr)
			if path, p := probePort("readinessProbe"); path != "/readyz" || p != served {
				t.Errorf("api: readinessProbe %s on %d, want /readyz on %d", path, p, served)
			}
		case "worker":
			if o.api || !o.worker || o.metricsAddr == "" {
				t.Errorf("worker: chatbatchd %v runs api=%v worker=%v metrics-addr=%q, want the worker only, with -metrics-addr", args, o.api, o.worker, o.metricsAddr)
			}
			served = port(t, o.metricsAddr)
			if path, p := probePort("readinessProbe"); path != "/readyz" || p != served {
				t.Errorf("worker: readinessProbe %s on %d, want /readyz on %d (-metrics-addr)", path, p, served)
			}
		}
		if path, p := probePort("livenessProbe"); path != "/healthz" || p != served {
			t.Errorf("%s: livenessProbe %s on %d, want /healthz on %d", role, path, p, served)
		}
		// The grace period outlasts the graceful stop.
		grace := time.Duration(num(spec, "terminationGracePeriodSeconds")) * time.Second
		stop := shutdownTimeout
		if role == "worker" {
			stop = workerShutdownTimeout
		}
		if grace <= stop+5*time.Second {
			t.Errorf("%s: terminationGracePeriodSeconds %v, want more than chatbatchd's stop (%v) and 5 s", role, grace, stop)
		}
		// Rolling updates; the PDB selects these pods and lets a drain go on.
		replicas := num(d, "spec", "replicas")
		if role == "api" && (num(d, "spec", "strategy", "rollingUpdate", "maxUnavailable") != 0 || replicas < 2) {
			t.Errorf("api: %d replicas, rolling update %v: want at least 2 and maxUnavailable 0", replicas, get(d, "spec", "strategy"))
		}
		labels := get(d, "spec", "template", "metadata", "labels").(map[string]any)
		for _, sel := range []any{get(d, "spec", "selector", "matchLabels"), get(objs["PodDisruptionBudget/chatbatchd-"+role], "spec", "selector", "matchLabels")} {
			for k, v := range sel.(map[string]any) {
				if labels[k] != v {
					t.Errorf("%s: selector %v does not select the pods (labels %v)", role, sel, labels)
				}
			}
		}
		pdb := objs["PodDisruptionBudget/chatbatchd-"+role]
		minAvail, hasMin := get(pdb, "spec", "minAvailable").(int)
		if maxUnavail, ok := get(pdb, "spec", "maxUnavailable").(int); (hasMin && minAvail >= replicas) || (ok && maxUnavail < 1) || (!hasMin && !ok) {
			t.Errorf("%s: PodDisruptionBudget %v with %d replicas blocks every drain", role, get(pdb, "spec"), replicas)
		}
	}
	if apps["api"] != apps["worker"] {
		t.Errorf("-app: the API runs %q, the workers %q", apps["api"], apps["worker"])
	}
	svc := objs["Service/chatbatchd-api"]
	if sp := list(svc, "spec", "ports"); len(sp) != 1 || str(sp[0], "targetPort") != "http" {
		t.Errorf("Service/chatbatchd-api ports %v, want the API's http port", sp)
	}

	// compose.yaml, through a YAML parser: the same roles and probe paths.
	b, err := os.ReadFile(filepath.Join(root, "compose.yaml"))
	must(t, err)
	var compose map[string]any
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for _, c := range []struct{ svc, role, probe string }{{"api", "-worker=false", "/readyz"}, {"worker", "-api=false", "/metrics"}} {
		var args []string
		for _, a := range list(compose, "services", c.svc, "command") {
			args = append(args, a.(string))
		}
		env := map[string]string{"IM_API_KEY": "k"}
		for k, v := range get(compose, "services", c.svc, "environment").(map[string]any) {
			env[k] = v.(string)
		}
		if _, err := parseFlags(args, func(k string) string { return env[k] }, io.Discard); err != nil || !slices.Contains(args, c.role) {
			t.Errorf("compose.yaml %s: chatbatchd %v: %v (want %s)", c.svc, args, err, c.role)
		}
		test := list(compose, "services", c.svc, "healthcheck", "test")
		if len(test) < 4 || !strings.HasSuffix(test[3].(string), c.probe) {
			t.Errorf("compose.yaml %s: health check %v, want chatbatchd -healthcheck …%s", c.svc, test, c.probe)
		}
	}
}

func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func str(v any, path ...string) string {
	switch x := get(v, path...).(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

func num(v any, path ...string) int {
	n, _ := get(v, path...).(int)
	return n
}

func list(v any, path ...string) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	must(t, err)
	n, err := strconv.Atoi(p)
	must(t, err)
	return n
}
