#!/bin/sh
# Runs after the package is installed or upgraded: the caddy user (shared
# with Caddy's own package, which creates the same one), then the service.
set -e

if ! getent group caddy >/dev/null; then
	groupadd --system caddy
fi
if ! getent passwd caddy >/dev/null; then
	useradd --system --gid caddy --create-home --home-dir /var/lib/caddy \
		--shell /usr/sbin/nologin --comment "Caddy web server" caddy
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable caddy-workerpool.service
	if systemctl is-active --quiet caddy-workerpool.service; then
		systemctl reload-or-restart caddy-workerpool.service
	else
		systemctl start caddy-workerpool.service || true
	fi
fi
