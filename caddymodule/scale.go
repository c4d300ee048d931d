package caddymodule

import (
	"runtime"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"

	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// Scaling lets a pool that spawns its workers run more than Count of
// them while requests keep waiting for a free worker, and go back to
// Count when they are not needed. Count is the floor: that many always
// run.
type Scaling struct {
	// MaxCount is the most workers the pool runs: a number at least
	// Count, or "auto" for four per usable CPU. A worker starts when
	// requests keep waiting in the queue with every worker at its
	// in-flight limit, one at a time, each once the one before serves.
	// Workers that compute (as max_inflight auto judges from their CPU
	// time) never go beyond the usable CPUs; workers that wait on I/O go
	// up to MaxCount. Default: Count, no scaling.
	MaxCount *WorkerCeiling `json:"max_count,omitempty"`

	// ScaleIdle is how long the pool must have had a worker more than
	// it needed before a worker above Count drains (bounded by
	// StopTimeout) and stops. Default: 30s.
	ScaleIdle caddy.Duration `json:"scale_idle,omitempty"`

	// MaxTotalMemory in bytes: no worker starts while the resident
	// memory of the pool's workers, plus what one of them holds on
	// average, would pass it. Default: no limit.
	MaxTotalMemory int64 `json:"max_total_memory,omitempty"`
}

// WorkerCeiling is a number of workers, or "auto". In JSON it is a
// number or the string "auto".
type WorkerCeiling struct {
	N    int
	Auto bool
}

// MarshalJSON writes a number, or "auto".
func (c WorkerCeiling) MarshalJSON() ([]byte, error) { return marshalNumberOrAuto(c.N, c.Auto) }

// UnmarshalJSON reads a number, or "auto".
func (c *WorkerCeiling) UnmarshalJSON(b []byte) (err error) {
	c.N, c.Auto, err = unmarshalNumberOrAuto(b, "max_count")
	return err
}

// autoCeilingPerCPU is max_count auto's workers per usable CPU.
const autoCeilingPerCPU = 4

// scaleConfig is the pool's Scale, with auto resolved on this machine.
func (h *Handler) scaleConfig() pool.Scale {
	s := pool.Scale{Idle: time.Duration(h.ScaleIdle), MaxTotalMemory: h.MaxTotalMemory}
	switch c := h.MaxCount; {
	case c == nil:
	case c.Auto:
		floor := h.Count
		if floor == 0 {
			floor = runtime.GOMAXPROCS(0)
		}
		s.MaxCount = max(floor, autoCeilingPerCPU*runtime.GOMAXPROCS(0))
	default:
		s.MaxCount = c.N
	}
	return s
}

func (h *Handler) validateScaling(bad func(field, format string, a ...any)) {
	if h.ScaleIdle < 0 {
		bad("scale_idle", "%v is negative: give a duration such as 30s", time.Duration(h.ScaleIdle))
	}
	if h.MaxTotalMemory < 0 {
		bad("max_total_memory", "%d is negative: give a size such as 2GiB", h.MaxTotalMemory)
	}
	c := h.MaxCount
	if c == nil {
		if h.ScaleIdle != 0 || h.MaxTotalMemory != 0 {
			bad("scale_idle/max_total_memory", "apply only to a pool that scales: add max_count <n>|auto above count")
		}
		return
	}
	switch {
	case !h.spawns():
		bad("max_count", "only a pool that spawns its workers (command) can scale; remove max_count for workers found by discover or consul")
	case !c.Auto && c.N < 1:
		bad("max_count", "%d: give a number of workers at least count, or auto for %d per CPU", c.N, autoCeilingPerCPU)
	case !c.Auto && h.Count > 0 && c.N < h.Count:
		bad("max_count", "%d is below count %d: the ceiling must be at least the floor; raise max_count or lower count", c.N, h.Count)
	case !h.maxInflight().Auto && h.maxInflight().N == 0:
		bad("max_count", "requests never wait for a worker with max_inflight 0, so the pool would never scale up; set max_inflight to auto or a number")
	}
}

// unmarshalScaling reads the scaling options; false if opt is none of
// them.
func (h *Handler) unmarshalScaling(d *caddyfile.Dispenser, opt string) (bool, error) {
	switch opt {
	case "max_count":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		if d.Val() == "auto" {
			h.MaxCount = &WorkerCeiling{Auto: true}
			return true, nil
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil || n < 1 {
			return true, d.Errf("max_count: %q is not a number of workers; give a positive integer at least count, or auto for %d per CPU", d.Val(), autoCeilingPerCPU)
		}
		h.MaxCount = &WorkerCeiling{N: n}
	case "scale_idle":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil || dur <= 0 {
			return true, d.Errf("scale_idle: %q is not a positive duration; write e.g. 30s or 2m", d.Val())
		}
		h.ScaleIdle = caddy.Duration(dur)
	case "max_total_memory":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		size, err := humanize.ParseBytes(d.Val())
		if err != nil || size == 0 {
			return true, d.Errf("max_total_memory: %q is not a size; write e.g. 2GiB or 1500MB", d.Val())
		}
		h.MaxTotalMemory = int64(size)
	default:
		return false, nil
	}
	return true, nil
}
