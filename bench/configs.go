package main

import (
	"fmt"
	"strings"
)

// The proxies' configurations: each is what a user who knows the tool
// would write for N Node processes on loopback ports, with access logs
// off (Caddy logs no access by default either).

// nginxConf configures nginx on port in front of the app processes on
// ports: one worker process per core, least_conn over a shared zone (so
// the workers agree on the counts), HTTP/1.1 upstream keep-alive that
// idles out before Node's 5 s keepAliveTimeout, and client keep-alive
// without nginx's default cap of 1,000 requests per connection; half the
// open-file limit per worker process (a proxied connection takes two).
func nginxConf(dir string, port int, ports []int, nofile uint64) string {
	var up strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&up, "\t\tserver 127.0.0.1:%d;\n", p)
	}
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile %[4]d;
pid %[1]s/nginx.pid;
error_log stderr warn;

events {
	worker_connections %[5]d;
}

http {
	access_log off;
	keepalive_requests 1000000;
	keepalive_timeout 75s;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;

	upstream app {
		zone app 64k;
		least_conn;
%[3]s		keepalive 64;
		keepalive_timeout 4s;
	}

	server {
		listen 127.0.0.1:%[2]d;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
		}
	}
}
`, dir, port, up.String(), nofile, nofile/2)
}

// haproxyConf configures HAProxy on port: balance leastconn, keep-alive
// on both sides, idle server connections shared between clients
// (http-reuse always), and a retry on another server when a connection
// to one fails (retries, option redispatch). Threads default to one per
// core. HAProxy reserves two descriptors per connection (client and
// server side), so its maxconn is half the open-file limit, less a margin.
func haproxyConf(port int, ports []int, nofile uint64) string {
	var srv strings.Builder
	for i, p := range ports {
		fmt.Fprintf(&srv, "\tserver w%d 127.0.0.1:%d\n", i+1, p)
	}
	return fmt.Sprintf(`global
	maxconn %[3]d

defaults
	mode http
	timeout connect 5s
	timeout client 75s
	timeout server 60s
	timeout http-keep-alive 75s
	option http-keep-alive
	option forwardfor
	http-reuse always
	retries 2
	option redispatch

frontend web
	bind 127.0.0.1:%[1]d
	maxconn %[3]d
	default_backend app

backend app
	balance leastconn
%[2]s`, port, srv.String(), max(nofile/2, 200)-100)
}

// caddyGlobal are the global options of every Caddy the harness runs:
// no admin endpoint, no HTTPS, nothing persisted.
const caddyGlobal = `{
	admin off
	auto_https off
	persist_config off
}
`

// caddyRPConf is stock reverse_proxy with static upstreams and
// lb_policy least_conn; everything else at Caddy's defaults.
func caddyRPConf(port int, ports []int) string {
	ups := make([]string, len(ports))
	for i, p := range ports {
		ups[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return caddyGlobal + fmt.Sprintf(`
http://127.0.0.1:%d {
	reverse_proxy %s {
		lb_policy least_conn
	}
}
`, port, strings.Join(ups, " "))
}

// workerPoolConf is our worker_pool spawning workers processes of app;
// options are extra lines inside the block.
func workerPoolConf(port int, node, app string, workers int, options string) string {
	return caddyGlobal + fmt.Sprintf(`
http://127.0.0.1:%d {
	worker_pool {
		command %s %s
		count %d
		health_uri /healthz
		%s
	}
}
`, port, node, app, workers, options)
}
