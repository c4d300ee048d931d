package caddymodule

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// poolMetrics is the Prometheus view of one pool: counters and histograms
// fed per request, and gauges read from the pool's status at scrape time.
// It lives as long as the pool, across reloads, and is registered in the
// registry of every config that uses the pool (Caddy gives each config a
// registry of its own), so reloads cause no duplicate registrations.
type poolMetrics struct {
	pool *pool.Pool // set once the pool exists

	requests  *prometheus.CounterVec
	duration  prometheus.Observer
	queueWait prometheus.Observer
	retries   prometheus.Counter
	vecs      []prometheus.Collector

	workers, healthy, inflight, streams, parked, limit, queue, restarts, breaker, cost, scaling, grpc *prometheus.Desc

	mu      sync.Mutex               // serialises growing workerL
	workerL atomic.Pointer[[]string] // "0", "1", …: label values, made once
}

const metricsPrefix = "caddy_worker_pool_"

func newPoolMetrics(name string) *poolMetrics {
	constant := prometheus.Labels{"pool": name}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricsPrefix + "requests_total", ConstLabels: constant,
		Help: "Requests answered, by worker (0: none reached) and status class.",
	}, []string{"worker", "code"})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: metricsPrefix + "request_duration_seconds", ConstLabels: constant,
		Help:    "Time from a request's arrival in the pool to its answer, queueing and retries included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	queueWait := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: metricsPrefix + "queue_wait_seconds", ConstLabels: constant,
		Help:    "Time requests spent waiting for a free worker (0 for most).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	})
	retries := prometheus.NewCounter(prometheus.CounterOpts{
		Name: metricsPrefix + "retries_total", ConstLabels: constant,
		Help: "Attempts sent to another worker after one failed.",
	})
	desc := func(n, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(metricsPrefix+n, help, labels, constant)
	}
	return &poolMetrics{
		requests: requests, duration: duration, queueWait: queueWait, retries: retries,
		vecs:     []prometheus.Collector{requests, duration, queueWait, retries},
		workers:  desc("workers", "Worker slots by state.", "state"),
		healthy:  desc("worker_healthy", "1 if the worker is in rotation.", "worker"),
		inflight: desc("worker_inflight", "Requests the worker is serving.", "worker"),
		streams:  desc("worker_streams", "Long-lived answers the worker holds open outside its limit: WebSockets, event and gRPC streams, parked long polls.", "worker"),
		parked:   desc("worker_parked_total", "Requests parked so far: held while the worker was idle at its limit (park_idle), they stopped counting toward it.", "worker"),
		limit:    desc("worker_max_inflight", "The worker's in-flight limit now (0: none).", "worker"),
		queue:    desc("queue_depth", "Requests waiting for a free worker."),
		restarts: desc("worker_restarts_total", "Processes replaced, by reason: crash (exited, killed as hung or never healthy) or recycle (rolling restart, max_requests, max_memory, max_lifetime, watch).", "worker", "reason"),
		breaker:  desc("worker_breaker_state", "The worker's circuit breaker: 0 closed, 1 half-open, 2 open.", "worker"),
		cost: desc("route_cost_seconds", fmt.Sprintf("What a route's requests cost: the decaying average time they took at a worker (at most %d routes, the most recently used).",
			balancer.DefaultCostKeys), "route"),
		scaling: desc("scaling_decisions_total", "Scaling decisions of a pool with max_count, by direction (up, down, hold: a worker was needed but not started) and reason.", "direction", "reason"),
		grpc: desc("grpc_call_duration_seconds", fmt.Sprintf("gRPC calls by full method (at most %d by name, the rest %q) and the grpc-status their client got: time from arrival in the pool to the end of the answer.",
			pool.MaxGRPCMethods, pool.OtherGRPCMethod), "method", "grpc_status"),
	}
}

// worker returns the label value of worker id; on the request path it
// neither allocates nor locks once the id has been seen.
func (m *poolMetrics) worker(id int) string {
	if l := m.workerL.Load(); l != nil && id < len(*l) {
		return (*l)[id]
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var next []string
	if l := m.workerL.Load(); l != nil {
		next = slices.Clone(*l)
	}
	for len(next) <= id {
		next = append(next, strconv.Itoa(len(next)))
	}
	m.workerL.Store(&next)
	return next[id]
}

var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// observe is the balancer's OnResult.
func (m *poolMetrics) observe(_ *http.Request, res *balancer.Result) {
	worker := 0
	if res.Endpoint != nil {
		worker = res.Endpoint.Worker
	}
	class := "5xx"
	if c := res.Status / 100; c >= 1 && c <= 5 {
		class = codeClasses[c-1]
	} else if res.Status == 499 {
		class = "4xx"
	}
	m.requests.WithLabelValues(m.worker(worker), class).Inc()
	m.duration.Observe(res.Duration.Seconds())
	m.queueWait.Observe(res.QueueWait.Seconds())
	if res.Attempts > 1 {
		m.retries.Add(float64(res.Attempts - 1))
	}
}

// Describe implements prometheus.Collector.
func (m *poolMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.vecs {
		c.Describe(ch)
	}
	for _, d := range []*prometheus.Desc{m.workers, m.healthy, m.inflight, m.streams, m.parked, m.limit, m.queue, m.restarts, m.breaker, m.cost, m.scaling, m.grpc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *poolMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.vecs {
		c.Collect(ch)
	}
	if m.pool == nil {
		return
	}
	st := m.pool.Status()
	states := map[string]int{}
	for _, w := range st.Workers {
		states[w.State]++
		id := m.worker(w.ID)
		ch <- prometheus.MustNewConstMetric(m.healthy, prometheus.GaugeValue, b2f(w.Healthy), id)
		ch <- prometheus.MustNewConstMetric(m.inflight, prometheus.GaugeValue, float64(w.Inflight), id)
		ch <- prometheus.MustNewConstMetric(m.streams, prometheus.GaugeValue, float64(w.Streams), id)
		ch <- prometheus.MustNewConstMetric(m.parked, prometheus.CounterValue, float64(w.Parked), id)
		ch <- prometheus.MustNewConstMetric(m.limit, prometheus.GaugeValue, float64(w.Limit), id)
		ch <- prometheus.MustNewConstMetric(m.restarts, prometheus.CounterValue, float64(w.Restarts), id, "crash")
		ch <- prometheus.MustNewConstMetric(m.restarts, prometheus.CounterValue, float64(w.Recycles), id, "recycle")
		ch <- prometheus.MustNewConstMetric(m.breaker, prometheus.GaugeValue, breakerValue(w.Breaker), id)
	}
	for _, s := range []string{"starting", "running", "backoff", "failed", "stopped"} {
		ch <- prometheus.MustNewConstMetric(m.workers, prometheus.GaugeValue, float64(states[s]), s)
	}
	ch <- prometheus.MustNewConstMetric(m.queue, prometheus.GaugeValue, float64(st.Queued))
	for _, c := range st.Costs {
		ch <- prometheus.MustNewConstMetric(m.cost, prometheus.GaugeValue, c.CostMS/1000, c.Route)
	}
	if st.Scaling != nil {
		for _, c := range st.Scaling.Totals {
			ch <- prometheus.MustNewConstMetric(m.scaling, prometheus.CounterValue, float64(c.Count), c.Direction, c.Reason)
		}
	}
	for _, c := range st.GRPC {
		buckets := make(map[float64]uint64, len(pool.GRPCDurationBuckets))
		var below uint64
		for i, le := range pool.GRPCDurationBuckets {
			below += c.Buckets[i]
			buckets[le] = below
		}
		ch <- prometheus.MustNewConstHistogram(m.grpc, c.Calls, c.Seconds, buckets, c.Method, c.Status)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func breakerValue(s string) float64 {
	switch s {
	case "half-open":
		return 1
	case "open":
		return 2
	}
	return 0
}

var _ prometheus.Collector = (*poolMetrics)(nil)
