package pool

import (
	"strings"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/health"
)

// lifecycle is the one state of one endpoint: whether it serves, and if
// not, why. Everything that learns something about the endpoint — its
// health checks, its requests (passive failures, request timeouts), its
// breaker, its source (the process exited, discovery no longer lists
// it), recycling and restarts — sends an event; on returns the next
// state and the actions that the change calls for. The balancer's live
// set is derived from it: an endpoint is in rotation exactly while its
// lifecycle says so.
//
//	            probe passes         (passes in a row)
//	starting ─────────────────────▶ serving ◀──────────────┐
//	    │                            │   │                  │ probe passes again /
//	    │ startup_timeout: kill      │   │ probe fails,     │ breaker may probe
//	    │                            │   ▼ passive fails,   │
//	    │                            │ out of rotation ─────┘
//	    │                            │   (held: probe, passive, hung, breaker,
//	    │                            │    exposed; killed after
//	    │                            │    unhealthy_kill_after unless only
//	    │                            │    the breaker or exposure holds it)
//	    ▼          drain             ▼   │
//	  draining ◀───────────────────────────┘  (recycle, rolling restart,
//	    │                                        scale-down, pool stop)
//	    ▼  process gone / no longer listed (from any state)
//	  stopped
//
// A lifecycle is a value; the pool keeps one per member under Pool.mu
// and applies the actions under the same lock, so that no two
// transitions of an endpoint interleave.
type lifecycle struct {
	state  state
	held   hold
	streak health.Streak
	// heldAt is when the endpoint was last held out for sickness: a
	// probe that started before it passed on old news and lifts
	// nothing.
	heldAt time.Time
}

type state uint8

const (
	starting state = iota // not passed its health check yet
	serving               // passed; in rotation unless held out
	draining              // leaving for good: finishes what it holds
	stopped               // gone
)

func (s state) String() string {
	return [...]string{"starting", "serving", "draining", "stopped"}[s]
}

// hold is a set of reasons that keep a serving endpoint out of rotation.
type hold uint8

const (
	heldProbe   hold = 1 << iota // its health check fails
	heldPassive                  // its requests failed in a row
	heldHung                     // a request exceeded request_timeout
	heldBreaker                  // its circuit breaker is open
	heldExposed                  // it listens beyond loopback, and bind_check refuses that

	// heldSick is what only a passing health check lifts, and what gets
	// a worker killed if it lasts.
	heldSick = heldProbe | heldPassive | heldHung
)

func (h hold) String() string {
	var why []string
	for _, r := range []struct {
		h    hold
		name string
	}{{heldProbe, "health check fails"}, {heldPassive, "requests failed"}, {heldHung, "request timed out"}, {heldBreaker, "breaker open"}, {heldExposed, "listens beyond loopback"}} {
		if h&r.h != 0 {
			why = append(why, r.name)
		}
	}
	return strings.Join(why, ", ")
}

// event is something learnt about an endpoint.
type event struct {
	kind eventKind
	// at is when a probe started, for probe results.
	at time.Time
}

type eventKind uint8

const (
	evProbePass      eventKind = iota // a health check passed
	evProbeFail                       // a health check failed
	evPassive                         // requests failed in a row
	evHung                            // a request exceeded request_timeout
	evBreakerOpen                     // the breaker opened
	evBreakerProbe                    // open_for passed: the breaker may let probes through
	evBreakerClosed                   // the breaker closed
	evStartupExpired                  // startup_timeout passed
	evKillDue                         // unhealthy_kill_after passed
	evDrain                           // leave for good, finishing what it holds
	evGone                            // the process exited, or the source no longer lists it
	evExposed                         // it listens beyond loopback, and that is refused
)

// action is what a transition asks of the pool.
type action uint16

const (
	actAdd        action = 1 << iota // put in rotation
	actRemove                        // take out of rotation
	actReady                         // first health check passed: stop the startup timer
	actArmKill                       // start the unhealthy_kill_after timer
	actDisarmKill                    // stop it
	actKill                          // kill the process (its source restarts it)
	actArmBreaker                    // start the open_for timer
	actStop                          // stop every timer: the endpoint is gone
)

// inRotation reports whether the endpoint may take requests.
func (l lifecycle) inRotation() bool { return l.state == serving && l.held == 0 }

// sick reports whether a serving endpoint is held out for what only its
// health check can clear; the kill timer runs while it is.
func (l lifecycle) sick() bool { return l.state == serving && l.held&heldSick != 0 }

// on returns the state after ev, and the actions that the change calls
// for, with the health thresholds of cfg.
func (l lifecycle) on(ev event, cfg health.Config) (lifecycle, action) {
	was := l
	var act action
	switch ev.kind {
	case evProbePass, evProbeFail:
		if l.state != starting && l.state != serving {
			break
		}
		if ev.kind == evProbePass && ev.at.Before(l.heldAt) {
			break // the probe started before the endpoint was held out
		}
		if ev.kind == evProbePass {
			l.streak.Add(nil)
		} else {
			l.streak.Add(errProbe)
		}
		switch {
		case l.state == starting && cfg.Rose(l.streak):
			l.state = serving
			act |= actReady
		case l.state == serving && cfg.Rose(l.streak):
			l.held &^= heldSick
		case l.state == serving && cfg.Fell(l.streak):
			if l.held&heldSick == 0 {
				l.heldAt = ev.at
			}
			l.held |= heldProbe
		}
	case evPassive, evHung:
		if l.state != serving {
			break
		}
		// Only passes that come after this count towards coming back.
		l.streak = health.Streak{}
		l.heldAt = ev.at
		if ev.kind == evPassive {
			l.held |= heldPassive
		} else {
			l.held |= heldHung
		}
	case evBreakerOpen:
		if l.state == serving {
			l.held |= heldBreaker
			act |= actArmBreaker
		}
	case evBreakerProbe, evBreakerClosed:
		l.held &^= heldBreaker
	case evExposed:
		// For good: the process keeps its sockets. It is not sick
		// either, so it is not killed: a restart would bind the same.
		if l.state == starting || l.state == serving {
			l.held |= heldExposed
		}
	case evStartupExpired:
		if l.state == starting {
			act |= actKill
		}
	case evKillDue:
		if l.sick() {
			act |= actKill
		}
	case evDrain:
		if l.state == starting || l.state == serving {
			l.state = draining
		}
	case evGone:
		if l.state != stopped {
			l.state = stopped
			act |= actStop
		}
	}
	switch {
	case !was.inRotation() && l.inRotation():
		act |= actAdd
	case was.inRotation() && !l.inRotation():
		act |= actRemove
	}
	switch {
	case !was.sick() && l.sick():
		act |= actArmKill
	case was.sick() && !l.sick():
		act |= actDisarmKill
	}
	return l, act
}
