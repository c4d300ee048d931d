// Package consul finds endpoints through Consul's health API (the
// passing instances of a service, followed with blocking queries) and
// registers a service with the local agent, keeping it registered when
// the agent restarts. It does not import Caddy.
package consul

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Agent says how to reach Consul. Zero fields take Consul's own
// defaults from the environment (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
// CONSUL_HTTP_TOKEN_FILE …), as the consul CLI does.
type Agent struct {
	// Address is host:port or a URL (http://, https://, unix://).
	Address string
	// Datacenter to query; empty means the agent's own.
	Datacenter string
	// Token is an ACL token; TokenFile names a file that holds one.
	// At most one may be set. Neither is ever logged.
	Token     string
	TokenFile string
}

// Validate reports the first bad field.
func (a Agent) Validate() error {
	if a.Token != "" && a.TokenFile != "" {
		return errors.New("token and token_file: set only one")
	}
	return nil
}

// client is an API client and the transport it owns, whose idle
// connections are closed when the client is done.
type client struct {
	api       *api.Client
	transport *http.Transport
}

func (a Agent) client() (*client, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	cfg := api.DefaultConfig()
	if a.Address != "" {
		cfg.Address = a.Address
	}
	if a.Datacenter != "" {
		cfg.Datacenter = a.Datacenter
	}
	if a.Token != "" {
		cfg.Token, cfg.TokenFile = a.Token, ""
	}
	if a.TokenFile != "" {
		b, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token_file: %w", err)
		}
		cfg.Token, cfg.TokenFile = strings.TrimSpace(string(b)), ""
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return &client{api: c, transport: cfg.Transport}, nil
}

func (c *client) close() {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
}
