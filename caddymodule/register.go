package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/health/consul"
)

// ConsulRegister registers this Caddy as an instance of a Consul
// service, with an HTTP check on the pool's health endpoint, so that
// whoever discovers the service through Consul reaches only instances
// with enough healthy workers. The registration lasts as long as a
// loaded config has it (reloads keep it), is renewed when the agent
// restarts and forgets it, and is removed when Caddy unloads it.
type ConsulRegister struct {
	// Name of the service. Default: the pool's name.
	Name string `json:"name,omitempty"`
	// ID of this instance. Default: <name>-<host>-<port>, host being
	// Address or the machine's host name.
	ID string `json:"id,omitempty"`
	// Address where clients reach this Caddy. Default: the agent's node
	// address.
	Address string `json:"address,omitempty"`
	// Port where clients reach this Caddy. Required.
	Port int `json:"port,omitempty"`
	// Tags and Meta of the instance.
	Tags []string          `json:"tags,omitempty"`
	Meta map[string]string `json:"meta,omitempty"`
	// CheckURL is the URL the agent checks. Default:
	// http://<address, or 127.0.0.1>:<port>/healthz, where a
	// worker_pool_health handler should answer.
	CheckURL string `json:"check_url,omitempty"`
	// CheckInterval of the check, and of this Caddy's checks that the
	// agent still has the registration. Default: 10s.
	CheckInterval caddy.Duration `json:"check_interval,omitempty"`
	// Agent is the Consul HTTP API to register with. Default:
	// CONSUL_HTTP_ADDR, else 127.0.0.1:8500.
	Agent string `json:"agent,omitempty"`
	// Token or TokenFile: an ACL token (placeholders are replaced; never
	// logged). Default: CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"token_file,omitempty"`
}

// registrations holds the running registrations across reloads, keyed by
// their whole configuration.
var registrations = caddy.NewUsagePool()

type runningRegistration struct{ *consul.Registrar }

// Destruct deregisters once no loaded config has the registration.
func (r runningRegistration) Destruct() error {
	r.Stop(5 * time.Second)
	return nil
}

// registration resolves defaults and placeholders.
func (h *Handler) registration() consul.Registration {
	c := h.ConsulRegister
	repl := caddy.NewReplacer()
	reg := consul.Registration{
		Agent: consul.Agent{
			Address: repl.ReplaceKnown(c.Agent, ""),
			Token:   repl.ReplaceKnown(c.Token, ""), TokenFile: repl.ReplaceKnown(c.TokenFile, ""),
		},
		ID: c.ID, Name: c.Name, Address: c.Address, Port: c.Port, Tags: c.Tags, Meta: c.Meta,
		CheckURL: c.CheckURL, CheckInterval: time.Duration(c.CheckInterval),
	}
	if reg.Name == "" {
		reg.Name = h.Name
	}
	if reg.ID == "" {
		host := reg.Address
		if host == "" {
			host, _ = os.Hostname()
		}
		reg.ID = fmt.Sprintf("%s-%s-%d", reg.Name, host, reg.Port)
	}
	if reg.CheckURL == "" {
		host := reg.Address
		if host == "" {
			host = "127.0.0.1"
		}
		reg.CheckURL = "http://" + net.JoinHostPort(host, strconv.Itoa(reg.Port)) + "/healthz"
	}
	return reg
}

func (h *Handler) validateRegistration(bad func(field, format string, a ...any)) {
	if h.ConsulRegister == nil {
		return
	}
	reg := h.registration()
	if reg.CheckInterval == 0 {
		reg.CheckInterval = consul.DefaultCheckInterval
	}
	if err := reg.Validate(); err != nil {
		bad("consul_register", "%v", err)
	}
}

// provisionRegistration starts the registration, or keeps the one that
// an earlier config with the same registration started.
func (h *Handler) provisionRegistration() error {
	if h.ConsulRegister == nil {
		return nil
	}
	reg := h.registration()
	b, err := json.Marshal(reg)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	key := "consul_register:" + hex.EncodeToString(sum[:])
	_, _, err = registrations.LoadOrNew(key, func() (caddy.Destructor, error) {
		log := caddy.Log().Named("http.handlers.worker_pool").With(zap.String("pool", h.Name))
		r, err := consul.NewRegistrar(reg, log)
		if err != nil {
			return nil, fmt.Errorf("worker_pool %q: consul_register: %w", h.Name, err)
		}
		r.Start()
		return runningRegistration{r}, nil
	})
	if err != nil {
		return err
	}
	h.registrationKey = key
	return nil
}

func (h *Handler) cleanupRegistration() error {
	if h.registrationKey == "" {
		return nil
	}
	_, err := registrations.Delete(h.registrationKey)
	h.registrationKey = ""
	return err
}

// unmarshalRegister reads the consul_register block.
func unmarshalRegister(d *caddyfile.Dispenser) (*ConsulRegister, error) {
	if d.NextArg() {
		return nil, d.Errf("consul_register: unexpected argument %q; options go in a block", d.Val())
	}
	r := &ConsulRegister{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 {
			return nil, d.Errf("consul_register %s: give a value", opt)
		}
		one := func() error {
			if len(args) != 1 {
				return d.Errf("consul_register %s: want one value, got %d", opt, len(args))
			}
			return nil
		}
		switch opt {
		case "tags":
			r.Tags = append(r.Tags, args...)
			continue
		case "meta":
			if len(args) != 2 {
				return nil, d.Errf("consul_register meta: want a key and a value, e.g. 'meta version 1.2'")
			}
			if r.Meta == nil {
				r.Meta = map[string]string{}
			}
			r.Meta[args[0]] = args[1]
			continue
		}
		if err := one(); err != nil {
			return nil, err
		}
		v := args[0]
		switch opt {
		case "name":
			r.Name = v
		case "id":
			r.ID = v
		case "address":
			r.Address = v
		case "port":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return nil, d.Errf("consul_register port: %q is not a port; give a number from 1 to 65535", v)
			}
			r.Port = n
		case "check_url":
			r.CheckURL = v
		case "check_interval":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return nil, d.Errf("consul_register check_interval: %q is not a positive duration; write e.g. 10s", v)
			}
			r.CheckInterval = caddy.Duration(dur)
		case "agent":
			r.Agent = v
		case "token":
			r.Token = v
		case "token_file":
			r.TokenFile = v
		default:
			return nil, d.Errf("unrecognized consul_register option %q; use name, id, address, port, tags, meta, check_url, check_interval, agent, token or token_file", opt)
		}
	}
	if r.Port == 0 {
		return nil, d.Err("consul_register: give the port where clients reach this Caddy, e.g. 'port 443'")
	}
	return r, nil
}
