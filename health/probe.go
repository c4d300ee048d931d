// Package health decides whether an endpoint is alive and ready to serve:
// active probes (an HTTP GET or a plain connect) on a schedule, with
// rise and fall thresholds so that one slow answer does not flap a worker
// in and out of rotation.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Defaults, the same as the Caddyfile documents.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = time.Second
	DefaultPasses   = 1
	DefaultFails    = 2
)

// Config says how to probe and when to change an endpoint's state.
type Config struct {
	// URI is the path (and query) of an HTTP GET that must answer 2xx;
	// empty means a successful connect is enough.
	URI string
	// Interval between probes once the endpoint has been healthy.
	Interval time.Duration
	// Timeout of one probe.
	Timeout time.Duration
	// Passes is how many consecutive passes make an endpoint healthy.
	Passes int
	// Fails is how many consecutive failures make it unhealthy.
	Fails int
}

// WithDefaults returns c with zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Passes <= 0 {
		c.Passes = DefaultPasses
	}
	if c.Fails <= 0 {
		c.Fails = DefaultFails
	}
	return c
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	if c.URI != "" && !strings.HasPrefix(c.URI, "/") {
		return fmt.Errorf("health_uri %q: must be a path starting with /", c.URI)
	}
	if c.Interval < 0 || c.Timeout < 0 || c.Passes < 0 || c.Fails < 0 {
		return errors.New("health_interval, health_timeout, health_passes and health_fails must not be negative")
	}
	return nil
}

// Target is where an endpoint listens: network "tcp" or "unix".
type Target struct {
	Network string
	Address string
}

// Prober runs one check against one target.
type Prober struct {
	cfg    Config
	target Target
	client *http.Client
	url    string
}

// NewProber prepares probes of target. cfg should have its defaults set.
func NewProber(cfg Config, target Target) *Prober {
	p := &Prober{cfg: cfg, target: target}
	if cfg.URI != "" {
		host := "localhost"
		if target.Network == "tcp" {
			host = target.Address
		}
		p.url = "http://" + host + cfg.URI
		dialer := &net.Dialer{}
		p.client = &http.Client{
			Transport: &http.Transport{
				// A fresh connection per probe also checks that the worker
				// still accepts, and never races a keep-alive close.
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return dialer.DialContext(ctx, target.Network, target.Address)
				},
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return p
}

// Probe checks the target once; nil means it passed.
func (p *Prober) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if p.client == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, p.target.Network, p.target.Address)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "caddy-workerpool-health")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: status %d", p.cfg.URI, resp.StatusCode)
	}
	return nil
}
