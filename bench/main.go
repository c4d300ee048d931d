// Command bench runs caddy-workerpool against the tools its users would
// otherwise pick, on this machine, and writes the figures to results/.
//
//	cd bench && go run . scheduling [-duration 20s] [-loads 0.5,0.8]
//	cd bench && go run . scheduling -mix io [-io-rate 400]
//	cd bench && (cd validation-js && npm install) && go run . validation [-rounds 5] [-duration 5s]
//
// It installs nothing: it needs Node.js (on every machine of this
// project) and builds our Caddy from ../cmd/caddy. Every process it
// starts listens on loopback and is stopped before it exits.
package main

import (
	"flag"
	"fmt"
	"os"
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
		fs.StringVar(&opts.mix, "mix", "cpu", "cpu: 95% 1 ms and 5% 50 ms of CPU; io: every request waits 20 ms without CPU")
		fs.StringVar(&opts.loads, "loads", "0.5,0.8", "cpu mix: offered loads as fractions of the pool's measured capacity")
		fs.Float64Var(&opts.ioRate, "io-rate", 400, "io mix: offered requests per second")
		fs.StringVar(&opts.only, "only", "", "comma-separated contender names to run (default: all)")
		fs.StringVar(&opts.caddy, "caddy", "", "our Caddy binary (default: build ../cmd/caddy)")
		fs.StringVar(&opts.out, "out", "results", "directory for the JSON and Markdown results")
		fs.BoolVar(&opts.keep, "keep", false, "keep the contenders' configs and logs (the path is printed)")
		_ = fs.Parse(os.Args[2:])
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
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go run . scheduling|validation [flags]   (go run . <scenario> -h for the flags)")
	os.Exit(2)
}
