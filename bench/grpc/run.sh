#!/bin/bash
# The gRPC scenario, side by side in one run: examples/grpc's grpc-js
# service with 2 workers behind the pool (defaults, plus health_grpc),
# Node's cluster (2 workers of the same server), and Caddy's stock
# reverse_proxy h2c to 2 processes of it. One grpc-js client channel
# keeps 16 calls in flight (closed loop), CALLS calls at 0, 1 and 5 ms of
# CPU each. Then the mixed-method run: an open loop, calls arriving as a
# Poisson process of RATE per second for SECS seconds on one channel, 95%
# of them Work (1 ms of CPU), 5% Report (50 ms, a method of its own),
# whether or not earlier calls have been answered; client.js reports
# each method's p50/p99 from when its call was due.
# Usage: bench/grpc/run.sh [calls] [secs] [rate] (calls 0 or secs 0
# skips that part), with CADDY the binary (default: go build ./cmd/caddy
# into a temporary file).
set -u
cd "$(dirname "$0")/../.."
D=$PWD/examples/grpc
CALLS=${1:-2000}
SECS=${2:-20}
RATE=${3:-180}
T=$(mktemp -d)
if [ -z "${CADDY:-}" ]; then CADDY=$T/caddy; go build -o "$CADDY" ./cmd/caddy; fi
(cd "$D" && [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null)
C="node $D/client.js"
out=$T/results.txt; : > $out
wait_ok() { for i in $(seq 100); do $C $1 unary 1 2>/dev/null | grep -q '"code":0' && return 0; sleep 0.2; done; echo "not up: $1"; }
load() {
	if [ "$CALLS" -gt 0 ]; then for ms in 0 1 5; do echo "$1 ms=$ms $($C $2 load $CALLS 16 $ms | tail -1)" >> $out; done; fi
	if [ "$SECS" -gt 0 ]; then echo "$1 mixed rate=$RATE $($C $2 mixed $SECS $RATE 1 50 0.05 | tail -1)" >> $out; fi
}
# pool, defaults (+ health_grpc, which a grpc-js pool needs)
cat > $T/pool.caddy <<C2
{
	admin off
	auto_https off
	servers {
		protocols h1 h2c
	}
}
http://127.0.0.1:7001 {
	worker_pool {
		command node $D/server.js
		count 2
		health_grpc
	}
}
C2
"$CADDY" run --config $T/pool.caddy --adapter caddyfile >$T/pool.log 2>&1 & P=$!
sleep 1; wait_ok 127.0.0.1:7001; sleep 2; load pool-default 127.0.0.1:7001; kill -INT $P; wait $P
# node cluster
PORT=7002 HOST=127.0.0.1 SERVER=$D/server.js node bench/grpc/node-cluster.js >$T/cluster.log 2>&1 & P=$!
wait_ok 127.0.0.1:7002; sleep 1; load node-cluster 127.0.0.1:7002; kill $P; wait $P 2>/dev/null; sleep 1
# stock reverse_proxy h2c to two processes
PORT=7011 HOST=127.0.0.1 WORKER_ID=1 node $D/server.js >/dev/null 2>&1 & A=$!
PORT=7012 HOST=127.0.0.1 WORKER_ID=2 node $D/server.js >/dev/null 2>&1 & B=$!
cat > $T/rp.caddy <<C2
{
	admin off
	auto_https off
	servers {
		protocols h1 h2c
	}
}
http://127.0.0.1:7003 {
	reverse_proxy 127.0.0.1:7011 127.0.0.1:7012 {
		transport http {
			versions h2c
		}
	}
}
C2
"$CADDY" run --config $T/rp.caddy --adapter caddyfile >$T/rp.log 2>&1 & P=$!
sleep 1; wait_ok 127.0.0.1:7003; sleep 1; load reverse_proxy-h2c 127.0.0.1:7003; kill -INT $P; wait $P; kill $A $B
cat $out
