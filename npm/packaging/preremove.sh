#!/bin/sh
# Runs before the package's files are removed: on removal (not on an
# upgrade, where $1 is "upgrade" for dpkg and 1 for rpm) stop the service.
set -e

case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now caddy-workerpool.service || true
	fi
	;;
esac
