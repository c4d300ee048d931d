package consul

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
)

// DefaultCheckInterval is how often Consul runs the registered HTTP
// check, and how often the Registrar makes sure the agent still knows
// the service.
const DefaultCheckInterval = 10 * time.Second

// Registration is a service to register with the local Consul agent,
// with an HTTP check (typically a pool's aggregated health endpoint).
type Registration struct {
	Agent
	// ID of the service instance; unique on the agent.
	ID string
	// Name of the service.
	Name string
	// Address and Port where the service is reached; an empty Address
	// means the agent's node address.
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// CheckURL is the HTTP check's URL: 2xx passing, 429 warning,
	// anything else critical.
	CheckURL string
	// CheckInterval between checks, and between the Registrar's checks
	// that the agent still has the service. Default 10s.
	CheckInterval time.Duration
}

// Validate reports the first bad field.
func (r Registration) Validate() error {
	switch {
	case r.Name == "":
		return errors.New("name: give the service name to register")
	case r.ID == "":
		return errors.New("id: give the service instance id")
	case r.Port < 1 || r.Port > 65535:
		return fmt.Errorf("port %d: give the port (1-65535) where Consul's clients reach this Caddy", r.Port)
	case r.CheckInterval < 0:
		return fmt.Errorf("check_interval %v: must not be negative", r.CheckInterval)
	}
	u, err := url.Parse(r.CheckURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("check_url %q: give an http:// or https:// URL of the pool's health endpoint", r.CheckURL)
	}
	return r.Agent.Validate()
}

// Registrar keeps a service registered with the local agent from Start
// to Stop: it registers it, checks every CheckInterval that the agent
// still lists it (an agent that restarted without its state has lost
// it) and registers it again if not, and deregisters it on Stop. Its
// goroutine is started by Start and ended by Stop.
type Registrar struct {
	reg Registration
	c   *client
	log *zap.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

// NewRegistrar prepares a registrar; nothing happens before Start.
func NewRegistrar(reg Registration, log *zap.Logger) (*Registrar, error) {
	if reg.CheckInterval == 0 {
		reg.CheckInterval = DefaultCheckInterval
	}
	if err := reg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	c, err := reg.Agent.client()
	if err != nil {
		return nil, err
	}
	return &Registrar{reg: reg, c: c, log: log.With(zap.String("consul_service", reg.Name), zap.String("consul_service_id", reg.ID))}, nil
}

// Start registers the service in the background and keeps it registered.
func (r *Registrar) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go r.run(ctx)
}

// Stop ends the upkeep and deregisters the service, waiting at most
// timeout for the agent.
func (r *Registrar) Stop(timeout time.Duration) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	defer r.c.close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.c.api.Agent().ServiceDeregisterOpts(r.reg.ID, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		r.log.Warn("consul: deregistering failed; the agent removes the service once its check stays critical, or deregister it by hand", zap.Error(err))
		return
	}
	r.log.Info("consul: deregistered")
}

func (r *Registrar) run(ctx context.Context) {
	defer close(r.done)
	registered, failing := false, false
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.upkeep(ctx, &registered)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && !failing:
			failing = true
			r.log.Warn("consul agent unreachable; registering again once it answers", zap.Error(err))
		case err == nil && failing:
			failing = false
			r.log.Info("consul agent reachable again")
		}
		t.Reset(r.reg.CheckInterval)
	}
}

// upkeep registers the service if the agent does not list it.
func (r *Registrar) upkeep(ctx context.Context, registered *bool) error {
	agent := r.c.api.Agent()
	if *registered {
		services, err := agent.ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		if services[r.reg.ID] != nil {
			return nil
		}
		r.log.Warn("consul agent lost the registration (restarted?); registering again")
	}
	err := agent.ServiceRegisterOpts(&api.AgentServiceRegistration{
		ID: r.reg.ID, Name: r.reg.Name, Address: r.reg.Address, Port: r.reg.Port,
		Tags: r.reg.Tags, Meta: r.reg.Meta,
		Check: &api.AgentServiceCheck{
			Name:     "worker pool health",
			HTTP:     r.reg.CheckURL,
			Method:   "GET",
			Interval: r.reg.CheckInterval.String(),
			Timeout:  min(r.reg.CheckInterval, 5*time.Second).String(),
		},
	}, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx))
	if err != nil {
		return err
	}
	*registered = true
	r.log.Info("consul: registered", zap.String("check", r.reg.CheckURL))
	return nil
}
