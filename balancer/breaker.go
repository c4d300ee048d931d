package balancer

import (
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerConfig sets up the circuit breaker of every endpoint.
type BreakerConfig struct {
	// Failures is how many failures in a row open the breaker. Default 5.
	Failures uint32
	// OpenFor is how long an open breaker keeps its endpoint out of
	// rotation before it lets probes through. Default 10s.
	OpenFor time.Duration
	// HalfOpenRequests is how many probe requests a half-open breaker
	// lets through; that many successes in a row close it. Default 1.
	HalfOpenRequests uint32
	// Statuses are the response codes that count as failures; empty
	// means every 5xx.
	Statuses []int
}

// Breaker defaults.
const (
	DefaultBreakerFailures  = 5
	DefaultBreakerOpenFor   = 10 * time.Second
	DefaultHalfOpenRequests = 1
)

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.Failures == 0 {
		c.Failures = DefaultBreakerFailures
	}
	if c.OpenFor <= 0 {
		c.OpenFor = DefaultBreakerOpenFor
	}
	if c.HalfOpenRequests == 0 {
		c.HalfOpenRequests = DefaultHalfOpenRequests
	}
	return c
}

func (b *Balancer) newBreaker(e *Endpoint) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	cfg := b.cfg.Breaker
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        e.workerName(),
		MaxRequests: cfg.HalfOpenRequests,
		Timeout:     cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.Failures },
		IsExcluded:  func(err error) bool { return err == errClientFault },
		// Called under the breaker's lock: it mirrors the half-open state
		// for the lock-free request path and tells the owner of the
		// endpoint's lifecycle, which takes an open breaker's endpoint
		// out of rotation for open_for. The hook must not read the
		// breaker.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			e.halfOpen.Store(to == gobreaker.StateHalfOpen)
			if b.cfg.OnBreakerChange != nil {
				b.cfg.OnBreakerChange(e, from.String(), to.String())
			}
		},
	})
}

// statusVerdict is the verdict on a worker's answer with this code.
func (b *Balancer) statusVerdict(code int) verdict {
	if b.failureStatus(code) {
		return failedStatus
	}
	return answered
}

// failureStatus reports whether a response code counts against a breaker.
func (b *Balancer) failureStatus(code int) bool {
	if len(b.cfg.Breaker.Statuses) == 0 {
		return code >= 500 && code <= 599
	}
	for _, s := range b.cfg.Breaker.Statuses {
		if s == code {
			return true
		}
	}
	return false
}
