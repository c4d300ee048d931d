package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The validation scenario: a CPU-saturated pool of the example app
// answering valid POST /orders, (a) checked by Go before the worker, the
// worker trusting its input; (b) checked by the worker itself with ajv
// against the same schema; (c) checked by nobody. Each round runs every
// contender once, in turn, so slow drifts of a shared machine hit them
// alike; the figures are medians over rounds.

type validationOptions struct {
	rounds      int
	duration    time.Duration
	concurrency int
	caddy       string
	out         string
}

// validationOrder is a valid order of examples/node/openapi.json.
const validationOrder = `{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","createdAt":"2026-11-20T10:00:00Z","status":"paid",` +
	`"customer":{"email":"ann@example.com","name":"Ann","address":{"street":"Main 1","city":"Oslo","zip":"0150","country":"NO"}},` +
	`"items":[{"sku":"ABC-1234","qty":2,"price":9.5,"note":null},{"sku":"XYZ-0001","qty":1,"price":100},` +
	`{"sku":"QRS-0042","qty":12,"price":0.5,"note":"gift wrap"}],"tags":["web","eu"]}`

func ajvDir() string { return filepath.Join(repoRoot(), "bench", "validation-js") }

func runValidation(o validationOptions) error {
	modules := filepath.Join(ajvDir(), "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "ajv")); err != nil {
		return fmt.Errorf("the worker-validates contender needs ajv: run `npm install` in %s first (it installs ajv and ajv-formats there, nowhere else)", ajvDir())
	}
	tmp, err := os.MkdirTemp("", "workerpool-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	caddy := o.caddy
	if caddy == "" {
		if caddy, err = buildCaddy(tmp); err != nil {
			return err
		}
	}
	doc := filepath.Join(repoRoot(), "examples", "node", "openapi.json")
	contenders := []contender{
		workerPool("go-validates", caddy, benchWorkers, "validate {\n\t\t\topenapi "+doc+"\n\t\t}", tmp),
		workerPool("worker-validates-ajv", caddy, benchWorkers, "env VALIDATE_WITH ajv\n\t\tenv NODE_PATH "+modules, tmp),
		workerPool("no-validation", caddy, benchWorkers, "", tmp),
	}
	results := map[string][]float64{}
	for round := 1; round <= o.rounds; round++ {
		// Rotate the order so that no contender always goes first.
		for i := range contenders {
			c := contenders[(i+round)%len(contenders)]
			rps, err := postOrders(c, o.concurrency, o.duration)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			results[c.name] = append(results[c.name], rps)
			fmt.Fprintf(os.Stderr, "round %d %-22s %.0f requests/s\n", round, c.name, rps)
		}
	}
	base := median(results["no-validation"])
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Validation: where the schema check runs\n\n")
	fmt.Fprintf(&b, "%s on %s (%d CPUs), %d workers of examples/node, POST /orders (%d bytes, valid), %d clients back to back, %d rounds of %s per contender, interleaved; medians.\n\n",
		time.Now().UTC().Format("2006-01-02"), host, cpuCount(), benchWorkers, len(validationOrder), o.concurrency, o.rounds, o.duration)
	fmt.Fprintf(&b, "| contender | requests/s (median) | rounds | vs no-validation |\n|---|---|---|---|\n")
	for _, c := range contenders {
		m := median(results[c.name])
		fmt.Fprintf(&b, "| %s | %.0f | %s | %.1f%% |\n", c.name, m, joinRates(results[c.name]), 100*m/base)
	}
	fmt.Print(b.String())
	if o.out != "" {
		if err := os.MkdirAll(o.out, 0o755); err != nil {
			return err
		}
		path := filepath.Join(o.out, time.Now().UTC().Format("2006-01-02")+"-"+host+"-validation.md")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", path)
	}
	return nil
}

// postOrders starts c, warms it up, then has concurrency clients post
// orders back to back for d, and returns the 201s per second. Any other
// answer is an error: every contender must accept every request.
func postOrders(c contender, concurrency int, d time.Duration) (float64, error) {
	r, err := launch(c)
	if err != nil {
		return 0, err
	}
	defer r.stop()
	url := r.url
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	body := []byte(validationOrder)
	post := func() (int, error) {
		resp, err := client.Post(url+"/orders", "application/json", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	run := func(d time.Duration) (int64, error) {
		var done atomic.Int64
		var firstErr atomic.Value
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					code, err := post()
					if err == nil && code != http.StatusCreated {
						err = fmt.Errorf("POST /orders answered %d", code)
					}
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return 0, err
		}
		return done.Load(), nil
	}
	if _, err := run(time.Second); err != nil {
		return 0, err
	}
	n, err := run(d)
	return float64(n) / d.Seconds(), err
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func joinRates(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, ", ")
}
