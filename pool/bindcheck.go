package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// BindCheck says what a pool does with a spawned worker that listens
// beyond loopback: on a wildcard (0.0.0.0, ::) or on an address other
// machines can reach. Such a worker can be reached on its port past the
// pool, its validation and its limits. `app.listen(process.env.PORT)`,
// as Express's, Fastify's and Koa's guides write it, does that: without
// a host, Node listens on every interface.
type BindCheck string

const (
	// BindWarn (the default, also "") logs an error that names the fix
	// and shows the addresses in the worker's status; the worker serves.
	BindWarn BindCheck = "warn"
	// BindRefuse does the same and keeps the worker out of rotation.
	BindRefuse BindCheck = "refuse"
	// BindOff does not look.
	BindOff BindCheck = "off"
)

// Validate refuses a BindCheck that is not one of the three.
func (b BindCheck) Validate() error {
	switch b {
	case "", BindWarn, BindRefuse, BindOff:
		return nil
	}
	return fmt.Errorf("bind_check %q: use warn, refuse or off", string(b))
}

// bindFix is what a worker that listens beyond loopback should do.
const bindFix = "listen on the address the pool gives: listen(process.env.PORT, process.env.HOST), " +
	"or set listen unix and listen(process.env.SOCKET_PATH)"

// noBindCheck says once per process that the platform cannot check.
var noBindCheck sync.Once

// checkBind looks once, when a spawned worker's health check first
// passes and so before it can join rotation, at the addresses its
// processes listen on. One beyond loopback is logged and shown in its
// status; under BindRefuse it also holds the worker out of rotation.
// It runs on the health checker's goroutine, outside p.mu: reading
// /proc takes a moment.
func (p *Pool) checkBind(m *member) {
	if m.proc == nil || p.cfg.BindCheck == BindOff {
		return // an endpoint something else started is not ours to read
	}
	if !m.bindChecked.CompareAndSwap(false, true) {
		return
	}
	log := p.log.With(zap.Int("worker", m.id), zap.Int("pid", m.pid()))
	addrs, err := m.proc.Listening()
	if errors.Is(err, errors.ErrUnsupported) {
		noBindCheck.Do(func() { p.log.Info("bind check off: "+err.Error(), zap.String("pool", p.cfg.Name)) })
		return
	}
	if err != nil {
		log.Warn("bind check: cannot tell where the worker listens", zap.Error(err))
		return
	}
	var exposed []netip.AddrPort
	for _, a := range addrs {
		if worker.BeyondLoopback(a) {
			exposed = append(exposed, a)
		}
	}
	if len(exposed) == 0 {
		return
	}
	shown := make([]string, len(exposed))
	for i, a := range exposed {
		shown[i] = a.String()
	}
	refuse := p.cfg.BindCheck == BindRefuse
	verdict := "serving anyway; bind_check refuse keeps such a worker out of rotation"
	if refuse {
		verdict = "kept out of rotation (bind_check refuse)"
	}
	log.Error("worker listens beyond loopback: it can be reached from the network past the pool; "+bindFix,
		zap.Strings("listening", shown), zap.String("address", m.target.Address), zap.String("bind_check", verdict))
	p.mu.Lock()
	defer p.mu.Unlock()
	m.exposed = shown
	if refuse {
		p.applyLocked(m, event{kind: evExposed})
	}
	p.notifyLocked()
}

// findServer looks once, when a spawned worker's health check first
// passes, for the process that listens on its port: where the command
// is a launcher (npm start, a shell script) that runs the server as a
// child, the CPU that max_inflight auto and park_idle judge is the
// child's, not the launcher's, which computes nothing. It runs on the
// health checker's goroutine, outside p.mu.
func (p *Pool) findServer(m *member) {
	if m.proc == nil || m.target.Network != "tcp" || !m.serverFound.CompareAndSwap(false, true) {
		return
	}
	a, err := netip.ParseAddrPort(m.target.Address)
	if err != nil {
		return
	}
	pid, shared, ok := m.proc.ServerPID(a.Port())
	switch {
	case !ok:
	case shared:
		// A prefork server: which process computes is not one pid's CPU.
		m.ep.SharedServer()
		p.log.Info("several processes of the worker hold its listening socket: its idle requests are never parked",
			zap.Int("worker", m.id), zap.Int("pid", m.proc.PID))
	case pid != m.proc.PID:
		m.ep.SetServerPID(pid)
		p.log.Info("worker serves from a child process: its CPU is read there",
			zap.Int("worker", m.id), zap.Int("pid", m.proc.PID), zap.Int("server_pid", pid))
	}
}
