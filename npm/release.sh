#!/bin/sh
# Builds a caddy-workerpool release from a tag (or any version) into
# npm/dist: binaries for every platform, the npm packages in lock step,
# the archives, SHA256SUMS, a .deb and an .rpm.
#
#   npm/release.sh v1.2.3            # the tag checked out
#
# Then publish the platform packages before the root package that
# depends on them:
#
#   for p in npm/dist/npm/caddy-workerpool-*-*-1.2.3.tgz; do npm publish --access public "$p"; done
#   npm publish npm/dist/npm/caddy-workerpool-1.2.3.tgz
set -eu
cd "$(dirname "$0")"
version=${1:-$(git describe --tags --exact-match)}
rm -rf dist
exec go run ./cmd/release -root .. -out dist -version "$version"
