#!/bin/sh
# Runs after the package's files are removed.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
