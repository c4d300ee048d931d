package pool

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// simPool drives a scalePolicy with a virtual clock and a fluid model
// of a pool: requests arrive (offer), the workers in rotation hold up to
// limit each and the rest wait in the queue; each request spends service
// in a worker. A started worker serves after startup. This is a model,
// not the pool: the pool itself is tested with real processes in
// scaler_test.go and through Caddy in caddymodule.
type simPool struct {
	t       *testing.T
	policy  *scalePolicy
	now     time.Time
	slots   int
	serving int
	readyAt time.Time
	backlog float64 // requests in the pool: held by workers or queued

	limit   float64
	service time.Duration
	startup time.Duration
	cpus    int
	kind    string // "cpu", "io" or "" (not judged)
	memEach int64  // resident memory of one worker
	replace bool   // a worker is being replaced: the pool settles
	done    float64

	decisions []simDecision
}

type simDecision struct {
	at time.Time
	d  scaleDecision
}

func (d simDecision) String() string {
	return fmt.Sprintf("%v %s/%s %d→%d", d.at.Sub(time.Unix(0, 0)), d.d.Direction, d.d.Reason, d.d.From, d.d.To)
}

func newSim(t *testing.T, floor int, scale Scale) *simPool {
	start := time.Unix(0, 0)
	return &simPool{
		t: t, policy: newScalePolicy(floor, scale, start), now: start, slots: floor, serving: floor,
		limit: 1, service: 100 * time.Millisecond, startup: 500 * time.Millisecond, cpus: 64, kind: "io",
	}
}

// offer says how many requests arrive in the tick that ends at at (time
// since the start), given the requests already in the pool.
type offer func(at time.Duration, backlog float64) float64

// clients is a closed loop: n clients, each sending its next request
// when the last is answered.
func clients(n float64) offer {
	return func(_ time.Duration, backlog float64) float64 { return max(n-backlog, 0) }
}

// rate is an open loop: r requests per second, whatever the pool does.
func rate(r float64) offer {
	return func(time.Duration, float64) float64 { return r * scaleTick.Seconds() }
}

// run offers requests for d, one reading per scaleTick, and applies the
// decisions as the scaler would.
func (s *simPool) run(d time.Duration, arrive offer) {
	for end := s.now.Add(d); s.now.Before(end); {
		s.now = s.now.Add(scaleTick)
		if s.serving < s.slots && !s.now.Before(s.readyAt) {
			s.serving = s.slots
		}
		s.backlog += arrive(s.now.Sub(time.Unix(0, 0)), s.backlog)
		capacity := float64(s.serving) * s.limit
		inflight := math.Min(s.backlog, capacity)
		finished := inflight * scaleTick.Seconds() / s.service.Seconds()
		s.backlog -= finished
		s.done += finished
		l := balancer.Load{
			Endpoints: s.serving, Inflight: int64(math.Round(inflight)), Queued: int(math.Round(s.backlog + finished - inflight)),
			Busy: inflight / s.limit, Finished: uint64(s.done),
		}
		s.done -= float64(l.Finished)
		if l.Queued > 0 {
			l.AtLimit = s.serving
		}
		switch s.kind {
		case "cpu":
			l.CPUBound = s.serving
		case "io":
			l.IOBound = s.serving
		}
		dec := s.policy.decide(scaleSample{
			at: s.now, load: l, slots: s.slots, cpus: s.cpus,
			settling: s.replace || s.serving < s.slots,
		}, func() (int64, int64) { return int64(s.serving) * s.memEach, s.memEach })
		switch dec.Direction {
		case ScaleUp:
			s.slots++
			s.readyAt = s.now.Add(s.startup)
		case ScaleDown:
			s.slots = dec.To
			s.serving = min(s.serving, s.slots)
		}
		if dec.Direction != "" {
			s.decisions = append(s.decisions, simDecision{s.now, dec})
		}
	}
}

// count returns how many decisions went in direction.
func (s *simPool) count(direction string) int {
	n := 0
	for _, d := range s.decisions {
		if d.d.Direction == direction {
			n++
		}
	}
	return n
}

func (s *simPool) String() string {
	var b strings.Builder
	for _, d := range s.decisions {
		b.WriteString(d.String() + "\n")
	}
	return b.String()
}

// holds returns the holds for reason, and checks that each came at
// least scale_idle after the one before.
func (s *simPool) holds(reason string) int {
	s.t.Helper()
	n := 0
	var last time.Time
	for _, d := range s.decisions {
		if d.d.Direction != ScaleHold {
			continue
		}
		if d.d.Reason != reason {
			s.t.Fatalf("hold for %s, want %s:\n%s", d.d.Reason, reason, s)
		}
		if n > 0 && d.at.Sub(last) < s.policy.idle {
			s.t.Fatalf("holds %v apart, less than scale_idle:\n%s", d.at.Sub(last), s)
		}
		n, last = n+1, d.at
	}
	return n
}

// A burst that the queue absorbs in a moment starts no worker.
func TestScaleIgnoresABurst(t *testing.T) {
	s := newSim(t, 2, Scale{MaxCount: 4, Idle: 2 * time.Second})
	s.run(5*time.Second, func(at time.Duration, _ float64) float64 {
		if at == time.Second || at == 3*time.Second {
			return 6 // six requests at once: the two workers clear them in 300 ms
		}
		return 1 // 10/s, half the workers' capacity
	})
	if len(s.decisions) != 0 || s.slots != 2 {
		t.Fatalf("bursts led to:\n%s", s)
	}
}

// A backlog that the workers clear before a new worker would serve
// starts none; the same backlog with workers that start faster does.
func TestScaleLetsABacklogDrain(t *testing.T) {
	for _, c := range []struct {
		startup time.Duration
		starts  int // 0: none; else some
	}{{3 * time.Second, 0}, {100 * time.Millisecond, 1}} {
		t.Run("start-up "+c.startup.String(), func(t *testing.T) {
			s := newSim(t, 2, Scale{MaxCount: 4, Idle: time.Minute})
			s.policy.startup, s.startup = c.startup, c.startup
			s.run(5*time.Second, func(at time.Duration, _ float64) float64 {
				if at == time.Second {
					return 60 // three seconds of work for the two workers
				}
				return 0
			})
			if n := s.count(ScaleUp); (c.starts == 0) != (n == 0) {
				t.Fatalf("%d starts, want %s:\n%s", n, map[bool]string{true: "none", false: "some"}[c.starts == 0], s)
			}
		})
	}
}

// Sustained queueing adds workers one start-up time at a time, up to
// the ceiling, where it holds; when the load stops, the pool goes back
// to the floor after scale_idle and not before.
func TestScaleSustainedLoadThenIdle(t *testing.T) {
	s := newSim(t, 1, Scale{MaxCount: 3, Idle: 2 * time.Second})
	s.run(10*time.Second, clients(6)) // six clients for one worker
	if s.slots != 3 || s.count(ScaleUp) != 2 {
		t.Fatalf("after sustained load: %d slots\n%s", s.slots, s)
	}
	if s.holds(ReasonMaxCount) < 1 {
		t.Fatalf("at the ceiling, want a hold for max_count:\n%s", s)
	}
	first, second := s.decisions[0], s.decisions[1]
	if first.at.Sub(time.Unix(0, 0)) > 1500*time.Millisecond {
		t.Fatalf("first start only at %v", first.at.Sub(time.Unix(0, 0)))
	}
	if gap := second.at.Sub(first.at); gap < s.startup+scaleWindow {
		t.Fatalf("two starts %v apart: less than start-up time and a window\n%s", gap, s)
	}
	if first.d.QueueWait < 100*time.Millisecond || (first.d.Service-s.service).Abs() > time.Millisecond {
		t.Fatalf("first start saw queue wait %v, service %v", first.d.QueueWait, first.d.Service)
	}

	stopped := s.now
	s.run(1900*time.Millisecond, clients(0))
	if s.slots != 3 {
		t.Fatalf("stopped workers %v after the load ended, before scale_idle\n%s", s.now.Sub(stopped), s)
	}
	s.run(time.Second, clients(0))
	if s.slots != 1 || s.count(ScaleDown) != 1 {
		t.Fatalf("%v after the load ended: %d slots\n%s", s.now.Sub(stopped), s.slots, s)
	}
	last := s.decisions[len(s.decisions)-1].d
	if last.Reason != ReasonIdle || last.From != 3 || last.To != 1 {
		t.Fatalf("scale-down %+v", last)
	}
	s.run(10*time.Second, clients(0))
	if s.slots != 1 {
		t.Fatalf("went below the floor: %d", s.slots)
	}
}

// Lighter load stops only the workers it does not need.
func TestScaleDownKeepsWhatTheLoadNeeds(t *testing.T) {
	s := newSim(t, 1, Scale{MaxCount: 4, Idle: 2 * time.Second})
	s.run(20*time.Second, clients(8))
	if s.slots != 4 {
		t.Fatalf("%d slots under heavy load\n%s", s.slots, s)
	}
	s.run(5*time.Second, clients(1.5)) // one and a half workers' worth
	if s.slots != 2 {
		t.Fatalf("%d slots for 1.5 workers' worth of load, want 2\n%s", s.slots, s)
	}
}

// Load that comes and goes faster than a worker starts must not make
// the pool start and stop workers at that pace: decisions are at least a
// start-up time apart, and with scale_idle longer than the load's
// period the pool does not go down while the load keeps coming back.
func TestScaleFlappingLoadDoesNotOscillate(t *testing.T) {
	flap := func(at time.Duration, _ float64) float64 {
		if at/(300*time.Millisecond)%2 == 0 {
			return 5 // 50/s for 300 ms, then nothing for 300 ms: 25/s on average
		}
		return 0
	}
	for _, idle := range []time.Duration{500 * time.Millisecond, 5 * time.Second} {
		t.Run("scale_idle "+idle.String(), func(t *testing.T) {
			s := newSim(t, 1, Scale{MaxCount: 6, Idle: idle})
			s.startup = 2 * time.Second
			s.run(60*time.Second, flap)
			if s.count(ScaleUp) == 0 {
				t.Fatalf("25/s for one worker of 10/s started none:\n%s", s)
			}
			for i := 1; i < len(s.decisions); i++ {
				if gap := s.decisions[i].at.Sub(s.decisions[i-1].at); gap < s.startup {
					t.Fatalf("decisions %v apart, faster than the start-up time %v:\n%s", gap, s.startup, s)
				}
			}
			if s.slots >= 6 {
				t.Fatalf("ran up to the ceiling for three workers' worth of load:\n%s", s)
			}
			if idle > 600*time.Millisecond && s.count(ScaleDown) > 0 {
				t.Fatalf("scaled down while the load kept coming back:\n%s", s)
			}
		})
	}
}

// Workers that compute stop at the usable CPUs; workers that wait go on
// to max_count; workers not judged yet count as computing.
func TestScaleCPUBoundStopsAtCPUs(t *testing.T) {
	for _, c := range []struct {
		kind string
		want int
	}{{"cpu", 2}, {"", 2}, {"io", 8}} {
		t.Run("kind "+cmp.Or(c.kind, "unknown"), func(t *testing.T) {
			s := newSim(t, 1, Scale{MaxCount: 8, Idle: time.Minute})
			s.kind, s.cpus, s.startup = c.kind, 2, 200*time.Millisecond
			s.run(30*time.Second, clients(20))
			if s.slots != c.want {
				t.Fatalf("%d slots, want %d\n%s", s.slots, c.want, s)
			}
			if c.kind != "io" && s.holds(ReasonCPUs) != 1 {
				t.Fatalf("want one hold for cpus:\n%s", s)
			}
		})
	}
	// A floor above the CPUs is the user's choice: kept, not grown.
	s := newSim(t, 3, Scale{MaxCount: 6, Idle: time.Minute})
	s.kind, s.cpus = "cpu", 2
	s.run(10*time.Second, clients(20))
	if s.slots != 3 {
		t.Fatalf("%d slots with a floor of 3 on 2 CPUs\n%s", s.slots, s)
	}
}

// No worker starts that would take the pool past max_total_memory.
func TestScaleMemoryGuard(t *testing.T) {
	s := newSim(t, 1, Scale{MaxCount: 8, Idle: time.Minute, MaxTotalMemory: 350 << 20})
	s.memEach = 100 << 20
	s.run(20*time.Second, clients(20))
	if s.slots != 3 || s.holds(ReasonMemory) != 1 {
		t.Fatalf("%d slots of 100 MiB under a 350 MiB guard, want 3 and a hold\n%s", s.slots, s)
	}
}

// While a worker is being replaced (recycling, rolling restart) the pool
// neither starts nor stops workers, and judges afresh after.
func TestScaleWaitsForReplacements(t *testing.T) {
	s := newSim(t, 1, Scale{MaxCount: 4, Idle: time.Second})
	s.replace = true
	s.run(5*time.Second, clients(6))
	if len(s.decisions) != 0 {
		t.Fatalf("decided during a replacement:\n%s", s)
	}
	s.replace = false
	s.run(900*time.Millisecond, clients(6))
	if len(s.decisions) != 0 {
		t.Fatalf("decided on readings from before the replacement ended:\n%s", s)
	}
	s.run(300*time.Millisecond, clients(6))
	if s.count(ScaleUp) != 1 {
		t.Fatalf("no start a window after the replacement:\n%s", s)
	}
}

// A ceiling at or below the floor does not scale; a bad one is refused
// with the field named.
func TestScaleConfig(t *testing.T) {
	if (Scale{MaxCount: 2}).enabled(2) || !(Scale{MaxCount: 3}).enabled(2) {
		t.Fatal("enabled")
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Scale: Scale{MaxCount: -1}}, "max_count -1"},
		{Config{Scale: Scale{Idle: -time.Second}}, "scale_idle"},
		{Config{Scale: Scale{MaxTotalMemory: -1}}, "max_total_memory"},
		{Config{Workers: workerCount(4), Scale: Scale{MaxCount: 2}, Balancer: balancer.Config{AdaptiveLimit: true}}, "below count 4"},
		{Config{Workers: workerCount(1), Scale: Scale{MaxCount: 4}}, "set max_inflight"},
		{Config{Source: staticSource{}, Scale: Scale{MaxCount: 4}, Balancer: balancer.Config{AdaptiveLimit: true}}, "only a pool that spawns"},
	} {
		err := c.cfg.checkScale()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg.Scale, err, c.want)
		}
	}
	ok := Config{Workers: workerCount(1), Scale: Scale{MaxCount: 4}, Balancer: balancer.Config{MaxInflight: 1}}
	if err := ok.checkScale(); err != nil {
		t.Fatal(err)
	}
}

func workerCount(n int) worker.Spec { return worker.Spec{Count: n} }

// staticSource lists nothing; checkScale only looks at whether a Source
// is set.
type staticSource struct{}

func (staticSource) Run(context.Context, func([]health.Target)) {}
