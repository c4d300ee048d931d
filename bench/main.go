// Command bench runs caddy-workerpool against the tools its users would
// otherwise pick, on this machine, and writes the figures to results/.
//
//	cd bench && go run . suite [--quick] [--workers N] [--scenarios proxy,cost,scaling,hetero,failure,memory,overload,autoscale]
//	cd bench && go run . scheduling [-mix cpu|single] [-duration 20s] [-loads 0.5,0.75] [-arrivals poisson,even]
//	cd bench && go run . scheduling -mix io [-io-rate 400]
//	cd bench && go run . report results/<date>-<host>.json
//	cd bench && (cd validation-js && npm install) && go run . validation [-rounds 5] [-duration 5s]
//
// It installs nothing: it needs Node.js and our Caddy (built from
// ../cmd/caddy unless -caddy names one); wrk, nginx, HAProxy and PM2 are
// used when installed, and a missing one is reported as skipped with the
// command that installs it. Every process it starts listens on loopback
// and is stopped before it exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "scheduling":
		fs := flag.NewFlagSet("scheduling", flag.ExitOnError)
		opts := schedulingOptions{}
		fs.DurationVar(&opts.duration, "duration", defaultDuration, "length of each measured run")
		fs.StringVar(&opts.mix, "mix", "cpu", "cpu: 95% 1 ms and 5% 50 ms of CPU; single: every request 2 ms of CPU; io: every request waits 20 ms without CPU")
		fs.StringVar(&opts.loads, "loads", "0.5,0.75", "cpu and single mixes: offered loads as fractions of Node cluster's capacity, measured first")
		fs.StringVar(&opts.arrivals, "arrivals", "poisson,even", "arrival processes, each run in turn: poisson (exponential gaps), even (one gap)")
		fs.Float64Var(&opts.ioRate, "io-rate", 400, "io mix: offered requests per second")
		fs.StringVar(&opts.only, "only", "", "comma-separated contender names to run (default: all)")
		fs.StringVar(&opts.caddy, "caddy", "", "our Caddy binary (default: build ../cmd/caddy)")
		fs.StringVar(&opts.out, "out", "results", "directory for the JSON and Markdown results")
		fs.BoolVar(&opts.keep, "keep", false, "keep the contenders' configs and logs (the path is printed)")
		fs.Uint64Var(&opts.seed, "seed", 0, "seed of the open-loop runs' random draws (Poisson arrivals, which requests are slow); 0: from the clock. Recorded in the results")
		_ = fs.Parse(os.Args[2:])
		opts.seed = pickSeed(opts.seed)
		if err := runScheduling(opts); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	case "validation":
		fs := flag.NewFlagSet("validation", flag.ExitOnError)
		opts := validationOptions{}
		fs.IntVar(&opts.rounds, "rounds", 5, "rounds; each runs every contender once, in turn")
		fs.DurationVar(&opts.duration, "duration", 5*time.Second, "length of each measured run")
		fs.IntVar(&opts.concurrency, "concurrency", 16, "clients sending back to back")
		fs.StringVar(&opts.caddy, "caddy", "", "our Caddy binary (default: build ../cmd/caddy)")
		fs.StringVar(&opts.out, "out", "results", "directory for the Markdown result")
		_ = fs.Parse(os.Args[2:])
		if err := runValidation(opts); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	case "suite":
		fs := flag.NewFlagSet("suite", flag.ExitOnError)
		opts := suiteOptions{}
		fs.BoolVar(&opts.quick, "quick", false, "short runs: the whole suite in about 15 minutes on 2 cores")
		fs.IntVar(&opts.workers, "workers", 0, "app processes per contender (default: the number of CPUs)")
		fs.StringVar(&opts.scenarios, "scenarios", "", "comma-separated scenarios: "+strings.Join(allScenarios, ",")+" (default: all; --quick leaves out "+strings.Join(notQuick, ",")+")")
		fs.StringVar(&opts.only, "only", "", "comma-separated contender names to run (default: all)")
		fs.StringVar(&opts.caddy, "caddy", "", "our Caddy binary (default: build ../cmd/caddy)")
		fs.StringVar(&opts.out, "out", "results", "directory for the JSON, Markdown and SVG results")
		fs.BoolVar(&opts.keep, "keep", false, "keep the contenders' configs and logs (the path is printed)")
		fs.IntVar(&opts.idleConns, "idle-conns", 10000, "memory: idle keep-alive client connections to open")
		fs.StringVar(&nodeBin, "node", "node", "the node binary")
		fs.StringVar(&appFile, "app", "", "the example app (default: ../examples/node/server.js)")
		fs.StringVar(&peersDir, "peers", "", "directory of node-cluster.js (default: peers/)")
		fs.Uint64Var(&opts.seed, "seed", 0, "seed of the open-loop runs' random draws (Poisson arrivals, which requests are slow); 0: from the clock. Recorded in the results")
		_ = fs.Parse(os.Args[2:])
		opts.seed = pickSeed(opts.seed)
		if err := runSuite(opts); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	case "report":
		if len(os.Args) != 3 {
			usage()
		}
		if err := rerender(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	default:
		usage()
	}
}

// pickSeed returns seed, or one from the clock when it is 0; the
// harness prints and records it, so a run can be repeated with -seed.
func pickSeed(seed uint64) uint64 {
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	fmt.Fprintln(os.Stderr, "bench: seed", seed)
	return seed
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: go run . suite [flags]        (go run . suite -h for the flags)
       go run . scheduling [flags]   (go run . scheduling -h for the flags)
       go run . validation [flags]   (go run . validation -h for the flags)
       go run . report results/<date>-<host>.json   (Markdown and charts again)`)
	os.Exit(2)
}
