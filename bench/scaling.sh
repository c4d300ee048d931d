#!/bin/sh
# scaling.sh: the CPU-bound scaling scenario on a machine that has neither
# Go nor Node.js, from prebuilt binaries (see "Many-core machines" in
# bench/README.md). It runs only what it is given, installs nothing, and
# writes results/<date>-<host>.{json,md,svg} beside the harness.
#
#   ./scaling.sh --node ./node [--workers N] [--quick] [--caddy ./caddy] [--bench ./bench]
#                [--app ./server.js] [--peers DIR] [--out DIR] [--scenarios scaling]
#
# Paths default to the files next to this script (the layout pack.sh
# makes). --workers defaults to the number of CPUs minus one, the figure
# the efficiency goal is set for. With a lib/ directory next to the node
# binary (pack.sh copies node's C++ runtime there), node loads it first.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
node="" caddy="$here/caddy" harness="$here/bench" app="$here/server.js" peers="$here"
out="$here/results" workers="" quick="" scenarios="scaling"

die() { echo "scaling.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--node) node=$2; shift 2 ;;
	--caddy) caddy=$2; shift 2 ;;
	--bench) harness=$2; shift 2 ;;
	--app) app=$2; shift 2 ;;
	--peers) peers=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--workers) workers=$2; shift 2 ;;
	--scenarios) scenarios=$2; shift 2 ;;
	--quick) quick="-quick"; shift ;;
	-h | --help) sed -n '2,14p' "$0"; exit 0 ;;
	*) die "unknown argument $1 (--help)" ;;
	esac
done

[ -n "$node" ] || die "--node PATH is required: a node binary (copy it from a machine that has Node.js)"
for f in "$node" "$caddy" "$harness"; do
	[ -x "$f" ] || die "$f is not an executable file"
done
for f in "$app" "$peers/node-cluster.js"; do
	[ -f "$f" ] || die "$f is missing"
done

node=$(cd "$(dirname "$node")" && pwd)/$(basename "$node")
if [ -d "$(dirname "$node")/lib" ]; then
	LD_LIBRARY_PATH="$(dirname "$node")/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	export LD_LIBRARY_PATH
fi
"$node" --version >/dev/null 2>&1 || die "$node does not run here (ldd $node: a missing library?)"

if [ -z "$workers" ]; then
	cpus=$(getconf _NPROCESSORS_ONLN)
	workers=$((cpus > 1 ? cpus - 1 : 1))
fi

# The harness finds the app and node-cluster.js by these flags, runs
# node by absolute path, and Caddy spawns it the same way: nothing is
# looked up in PATH but the optional wrk, nginx, haproxy and pm2.
echo "scaling.sh: $workers workers, node $("$node" --version), $(getconf _NPROCESSORS_ONLN) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cd "$(dirname "$harness")"
exec "$harness" suite $quick -scenarios "$scenarios" -workers "$workers" \
	-caddy "$caddy" -node "$node" -app "$app" -peers "$peers" -out "$out"
