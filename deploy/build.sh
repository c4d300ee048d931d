#!/bin/sh
# Builds our Caddy (cmd/caddy: Caddy's standard modules and worker_pool)
# as one static binary: no cgo, so no libc to load at run time, which is
# what lets it run in a distroless or scratch image.
#
#   deploy/build.sh <output path>
#
# The Dockerfile's build stage runs this script, and deploy's tests run it
# outside a container, so both build with the same flags. GOOS and GOARCH
# are honoured for cross builds.
set -eu
if [ $# -ne 1 ]; then
	echo "usage: $0 <output path>" >&2
	exit 2
fi
out=$1
cd "$(dirname "$0")/.."
# -trimpath: no build machine paths in the binary; -s -w: no symbol table
# or DWARF (about a third smaller); -buildvcs=false: a source tree without
# .git (as in a container build) builds the same; the tags leave out the
# database drivers of smallstep's nosql, which Caddy never uses, as xcaddy does.
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" \
	-tags nobadger,nomysql,nopgx -o "$out" ./cmd/caddy
