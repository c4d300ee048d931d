// Package health decides whether an endpoint is alive and ready to serve:
// active probes (an HTTP GET or a plain connect) on a schedule, with
// rise and fall thresholds so that one slow answer does not flap a worker
// in and out of rotation.
package health

import (
	"bytes"
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
	// GRPC probes with the standard gRPC health protocol over h2c
	// (grpc.health.v1.Health/Check, which must answer SERVING) instead:
	// for HTTP/2-only workers, which cannot answer an HTTP/1.1 GET.
	// GRPCService is the service it asks about; empty means the server
	// as a whole.
	GRPC        bool
	GRPCService string
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
	if c.URI != "" && c.GRPC {
		return errors.New("health_uri and health_grpc: give one; health_grpc probes gRPC workers, which cannot answer an HTTP GET")
	}
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
	if cfg.URI == "" && !cfg.GRPC {
		return p
	}
	host := "localhost"
	if target.Network == "tcp" {
		host = target.Address
	}
	p.url = "http://" + host + cfg.URI
	dialer := &net.Dialer{}
	transport := &http.Transport{
		// A fresh connection per probe also checks that the worker still
		// accepts, and never races a keep-alive close.
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, target.Network, target.Address)
		},
	}
	if cfg.GRPC {
		p.url = "http://" + host + "/grpc.health.v1.Health/Check"
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		transport.Protocols = &protocols
	}
	p.client = &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
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
	if p.cfg.GRPC {
		return p.probeGRPC(ctx)
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

// probeGRPC asks the worker grpc.health.v1.Health/Check about the
// configured service, and passes when it answers SERVING. The messages
// are small enough to write and read by hand: HealthCheckRequest is
// field 1, the service name; HealthCheckResponse field 1, the status.
func (p *Prober) probeGRPC(ctx context.Context) error {
	svc := p.cfg.GRPCService
	if len(svc) > 127 {
		return fmt.Errorf("health_grpc service %q: longer than 127 bytes", svc)
	}
	msg := []byte{}
	if svc != "" {
		msg = append([]byte{0x0a, byte(len(svc))}, svc...)
	}
	// A gRPC message: not compressed, its length, the message.
	body := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "caddy-workerpool-health")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	status := resp.Header.Get("Grpc-Status")
	if status == "" {
		status = resp.Trailer.Get("Grpc-Status")
	}
	if resp.StatusCode != http.StatusOK || status != "0" {
		return fmt.Errorf("grpc.health.v1.Health/Check: HTTP %d, grpc-status %q %s", resp.StatusCode, status, resp.Trailer.Get("Grpc-Message"))
	}
	// The reply: 5 bytes of prefix, then field 1 (varint) = status; a
	// message without it has the default, UNKNOWN.
	serving := 0
	if len(reply) >= 7 && reply[5] == 0x08 {
		serving = int(reply[6])
	}
	if serving != 1 {
		names := map[int]string{0: "UNKNOWN", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
		return fmt.Errorf("grpc.health.v1.Health/Check: %s", names[serving])
	}
	return nil
}
