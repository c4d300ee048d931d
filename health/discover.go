package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxCandidates bounds the addresses one discover list may name: each is
// probed on its own schedule.
const MaxCandidates = 1024

// Candidates are the places where a sidecar looks for workers that
// something else started: loopback addresses, loopback port ranges and
// unix socket globs. Each candidate is probed like a spawned worker; the
// ones that pass serve. Globs are expanded again on every rescan, so a
// worker that creates its socket later is found without a reload.
type Candidates struct {
	fixed []Target
	globs []string
	// Rescan is the time between expansions of the globs; zero means
	// DefaultInterval.
	Rescan time.Duration
}

// ParseCandidates reads discover specs: "127.0.0.1:3001",
// "127.0.0.1:3001-3016", "[::1]:3001", "localhost:3001", or
// "unix/<path>" where the path may hold a glob ("unix//run/app/*.sock").
// TCP hosts must be loopback: workers beside Caddy listen there, and a
// sidecar must not become a proxy to other hosts (use Consul for those).
func ParseCandidates(specs []string) (*Candidates, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("discover: give at least one address, port range or unix socket glob, e.g. 'discover 127.0.0.1:3001-3004'")
	}
	c := &Candidates{}
	seen := map[Target]bool{}
	for _, spec := range specs {
		if path, ok := strings.CutPrefix(spec, "unix/"); ok {
			if !filepath.IsAbs(path) {
				return nil, fmt.Errorf("discover %q: the socket path must be absolute, e.g. unix//run/app/*.sock", spec)
			}
			if _, err := filepath.Match(path, ""); err != nil {
				return nil, fmt.Errorf("discover %q: bad glob: %v", spec, err)
			}
			c.globs = append(c.globs, path)
			continue
		}
		targets, err := parseTCP(spec)
		if err != nil {
			return nil, err
		}
		for _, t := range targets {
			if !seen[t] {
				seen[t] = true
				c.fixed = append(c.fixed, t)
			}
		}
		if len(c.fixed) > MaxCandidates {
			return nil, fmt.Errorf("discover: more than %d addresses; name narrower port ranges", MaxCandidates)
		}
	}
	return c, nil
}

// parseTCP reads "host:port" or "host:lo-hi".
func parseTCP(spec string) ([]Target, error) {
	host, ports, err := net.SplitHostPort(spec)
	if err != nil {
		return nil, fmt.Errorf("discover %q: want host:port, host:first-last or unix/<path glob>: %v", spec, err)
	}
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("discover %q: %s is not a loopback address; discover finds workers beside Caddy (127.0.0.1, [::1], localhost or unix sockets); for workers on other hosts use consul", spec, host)
		}
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	first, err := parsePort(lo)
	if err != nil {
		return nil, fmt.Errorf("discover %q: %v", spec, err)
	}
	last := first
	if isRange {
		if last, err = parsePort(hi); err != nil {
			return nil, fmt.Errorf("discover %q: %v", spec, err)
		}
		if first > last {
			return nil, fmt.Errorf("discover %q: the range %d-%d runs backwards; write the lower port first", spec, first, last)
		}
		if last-first >= MaxCandidates {
			return nil, fmt.Errorf("discover %q: %d ports; a range may hold at most %d", spec, last-first+1, MaxCandidates)
		}
	}
	targets := make([]Target, 0, last-first+1)
	for p := first; p <= last; p++ {
		targets = append(targets, Target{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(p))})
	}
	return targets, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q: give a number from 1 to 65535", s)
	}
	return p, nil
}

// Expand returns the candidates now: the fixed addresses, then the unix
// sockets that match the globs, in a stable order.
func (c *Candidates) Expand() []Target {
	out := slices.Clone(c.fixed)
	seen := map[string]bool{}
	for _, g := range c.globs {
		// Match errors were ruled out by ParseCandidates.
		paths, _ := filepath.Glob(g)
		for _, p := range paths {
			if !seen[p] {
				seen[p] = true
				out = append(out, Target{Network: "unix", Address: p})
			}
		}
	}
	return out
}

// Run reports the candidates at once and, if there are globs, again each
// time a rescan finds a different set, until ctx ends. It is the sidecar
// source of a pool.
func (c *Candidates) Run(ctx context.Context, update func([]Target)) {
	cur := c.Expand()
	update(cur)
	if len(c.globs) == 0 {
		return
	}
	every := c.Rescan
	if every <= 0 {
		every = DefaultInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if next := c.Expand(); !slices.Equal(next, cur) {
			cur = next
			update(cur)
		}
	}
}
