package pool

import (
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/health"
)

// The lifecycle's transitions, event by state, without processes.
func TestLifecycleTransitions(t *testing.T) {
	cfg := health.Config{Passes: 2, Fails: 2}
	t0 := time.Unix(1000, 0)
	before, after := t0.Add(-time.Second), t0.Add(time.Second)
	at := func(k eventKind, when time.Time) event { return event{kind: k, at: when} }
	ev := func(k eventKind) event { return at(k, after) }
	up := lifecycle{state: serving}
	streak := func(l lifecycle, passes, fails int) lifecycle {
		l.streak = health.Streak{Passes: passes, Fails: fails}
		return l
	}
	heldFor := func(h hold) lifecycle { return lifecycle{state: serving, held: h, heldAt: t0} }
	for _, c := range []struct {
		name string
		from lifecycle
		ev   event
		to   lifecycle
		act  action
	}{
		{"first pass counts", lifecycle{}, ev(evProbePass), streak(lifecycle{}, 1, 0), 0},
		{"passes threshold: serving", streak(lifecycle{}, 1, 0), ev(evProbePass), streak(up, 2, 0), actReady | actAdd},
		{"failing while starting stays starting", lifecycle{}, ev(evProbeFail), streak(lifecycle{}, 0, 1), 0},
		{"startup timeout kills a starting worker", lifecycle{}, ev(evStartupExpired), lifecycle{}, actKill},
		{"startup timeout spares a serving one", up, ev(evStartupExpired), up, 0},
		{"one failed check is not enough", up, ev(evProbeFail), streak(up, 0, 1), 0},
		{"fails threshold: out, kill timer armed",
			streak(up, 0, 1), at(evProbeFail, t0), lifecycle{state: serving, held: heldProbe, heldAt: t0, streak: health.Streak{Fails: 2}},
			actRemove | actArmKill},
		{"passive failures: out, fresh passes needed",
			streak(up, 5, 0), at(evPassive, t0), heldFor(heldPassive), actRemove | actArmKill},
		{"request timeout: out as hung", up, at(evHung, t0), heldFor(heldHung), actRemove | actArmKill},
		{"a probe that started before the hold lifts nothing",
			streak(heldFor(heldPassive), 1, 0), at(evProbePass, before), streak(heldFor(heldPassive), 1, 0), 0},
		{"passes after the hold bring it back",
			streak(heldFor(heldPassive), 1, 0), ev(evProbePass), lifecycle{state: serving, heldAt: t0, streak: health.Streak{Passes: 2}},
			actAdd | actDisarmKill},
		{"passive again while held keeps the one kill timer",
			heldFor(heldProbe), at(evPassive, t0), heldFor(heldProbe | heldPassive), 0},
		{"kill due while sick", heldFor(heldHung), ev(evKillDue), heldFor(heldHung), actKill},
		{"kill due after recovery does nothing", up, ev(evKillDue), up, 0},
		{"breaker opens: out, no kill", up, ev(evBreakerOpen), lifecycle{state: serving, held: heldBreaker}, actRemove | actArmBreaker},
		{"breaker may probe: back", lifecycle{state: serving, held: heldBreaker}, ev(evBreakerProbe), up, actAdd},
		{"breaker probe while sick stays out",
			heldFor(heldProbe | heldBreaker), ev(evBreakerProbe), heldFor(heldProbe), 0},
		{"health passes do not close a breaker",
			streak(lifecycle{state: serving, held: heldBreaker | heldProbe, heldAt: t0}, 1, 0), ev(evProbePass),
			lifecycle{state: serving, held: heldBreaker, heldAt: t0, streak: health.Streak{Passes: 2}}, actDisarmKill},
		{"breaker closes", lifecycle{state: serving, held: heldBreaker}, ev(evBreakerClosed), up, actAdd},
		{"breaker opens on a starting worker: nothing", lifecycle{}, ev(evBreakerOpen), lifecycle{}, 0},
		{"exposed while starting: held before it serves", lifecycle{}, ev(evExposed), lifecycle{held: heldExposed}, 0},
		{"exposed and starting: passes make it ready, not in rotation",
			streak(lifecycle{held: heldExposed}, 1, 0), ev(evProbePass), streak(lifecycle{state: serving, held: heldExposed}, 2, 0), actReady},
		{"exposed while serving: out, not killed", up, ev(evExposed), lifecycle{state: serving, held: heldExposed}, actRemove},
		{"passes do not lift exposure",
			streak(lifecycle{state: serving, held: heldExposed}, 1, 0), ev(evProbePass), streak(lifecycle{state: serving, held: heldExposed}, 2, 0), 0},
		{"kill due does not kill an exposed worker", lifecycle{state: serving, held: heldExposed}, ev(evKillDue), lifecycle{state: serving, held: heldExposed}, 0},
		{"drain takes it out for good", up, ev(evDrain), lifecycle{state: draining}, actRemove},
		{"drain of a sick worker stops its kill timer", heldFor(heldProbe), ev(evDrain), lifecycle{state: draining, held: heldProbe, heldAt: t0}, actDisarmKill},
		{"draining ignores passes", lifecycle{state: draining}, ev(evProbePass), lifecycle{state: draining}, 0},
		{"draining ignores passive failures", lifecycle{state: draining}, ev(evPassive), lifecycle{state: draining}, 0},
		{"gone while serving", up, ev(evGone), lifecycle{state: stopped}, actRemove | actStop},
		{"gone while starting", lifecycle{}, ev(evGone), lifecycle{state: stopped}, actStop},
		{"gone while sick", heldFor(heldHung), ev(evGone), lifecycle{state: stopped, held: heldHung, heldAt: t0}, actStop | actDisarmKill},
		{"stopped stays stopped", lifecycle{state: stopped}, ev(evProbePass), lifecycle{state: stopped}, 0},
		{"gone twice", lifecycle{state: stopped}, ev(evGone), lifecycle{state: stopped}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			to, act := c.from.on(c.ev, cfg)
			if to != c.to || act != c.act {
				t.Fatalf("%+v on %d:\n got %+v, actions %b\nwant %+v, actions %b", c.from, c.ev.kind, to, act, c.to, c.act)
			}
		})
	}
}

// Passive health takes an endpoint out every time it fails, not only
// the first time: after it came back it can go again.
func TestLifecyclePassiveDownRepeats(t *testing.T) {
	cfg := health.Config{Passes: 1, Fails: 2}
	l := lifecycle{state: serving}
	now := time.Unix(1000, 0)
	for round := range 3 {
		now = now.Add(time.Second)
		var act action
		l, act = l.on(event{kind: evPassive, at: now}, cfg)
		if act&actRemove == 0 || l.inRotation() {
			t.Fatalf("round %d: passive failure left it in rotation", round)
		}
		l, act = l.on(event{kind: evProbePass, at: now.Add(time.Millisecond)}, cfg)
		if act&actAdd == 0 || !l.inRotation() {
			t.Fatalf("round %d: passing check did not bring it back", round)
		}
	}
}
