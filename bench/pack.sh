#!/bin/sh
# pack.sh DIR: build what scaling.sh needs into DIR, on a machine with Go
# and Node.js, to copy to a machine with neither:
#
#   DIR/caddy           our Caddy, CGO_ENABLED=0 (static)
#   DIR/bench           the harness, CGO_ENABLED=0 (static)
#   DIR/node            this machine's node binary
#   DIR/lib/            node's shared libraries other than glibc's (libstdc++, libgcc_s)
#   DIR/server.js       examples/node/server.js
#   DIR/node-cluster.js bench/peers/node-cluster.js
#   DIR/scaling.sh
#
# The target needs a glibc at least as new as the one node was built
# against (see `ldd DIR/node` there) and nothing else.
set -eu
[ $# -eq 1 ] || { echo "usage: pack.sh DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
mkdir -p "$1/lib"
dir=$(cd "$1" && pwd)

(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$dir/caddy" ./cmd/caddy)
(cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$dir/bench" .)
node=$(command -v node)
cp "$node" "$dir/node"
# Everything node links but glibc's own libraries, which must come from
# the target's glibc itself.
ldd "$node" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
	case "$(basename "$lib")" in
	libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux*) ;;
	*) cp -L "$lib" "$dir/lib/" ;;
	esac
done
cp "$root/examples/node/server.js" "$dir/server.js"
cp "$here/peers/node-cluster.js" "$dir/node-cluster.js"
cp "$here/scaling.sh" "$dir/scaling.sh"
chmod +x "$dir/scaling.sh"
echo "packed into $dir:" >&2
ls -la "$dir" "$dir/lib" >&2
