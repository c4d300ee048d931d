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
// Failover is nginx's default, written out: a request whose upstream
// fails before answering (error, timeout) goes to the next server
// (proxy_next_upstream; never for a non-idempotent request once sent),
// and a server that failed once is left out for 10 s (max_fails,
// fail_timeout).
func nginxConf(dir string, port int, ports []int, nofile uint64) string {
	var up strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&up, "\t\tserver 127.0.0.1:%d max_fails=1 fail_timeout=10s;\n", p)
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
			proxy_next_upstream error timeout;
			proxy_next_upstream_tries 0;
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
// extra adds lines to the backend and options to each server line.
func haproxyConf(port int, ports []int, nofile uint64, extra haproxyExtra) string {
	var srv strings.Builder
	for i, p := range ports {
		fmt.Fprintf(&srv, "\tserver w%d 127.0.0.1:%d%s\n", i+1, p, extra.server)
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
%[4]s%[2]s`, port, srv.String(), max(nofile/2, 200)-100, extra.backend)
}

// haproxyExtra are lines added to HAProxy's backend and options added to
// each of its server lines.
type haproxyExtra struct{ backend, server string }

// haproxyFailover is what HAProxy's documentation of retry-on and its
// blog post "HAProxy Layer 7 Retries and Chaos Engineering" give for
// servers that fail: layer-7 retries of requests that got no usable
// answer (refused, reset, empty or garbled answer, timeout), each retry
// on another server (option redispatch 1), never for POST, and active
// health checks that take a dead server out.
var haproxyFailover = haproxyExtra{
	backend: "\tretries 3\n\toption redispatch 1\n\tretry-on all-retryable-errors\n" +
		"\thttp-request disable-l7-retry if METH_POST\n\toption httpchk GET /healthz\n",
	server: " check",
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
// lb_policy least_conn; options are extra lines inside the block,
// everything else is at Caddy's defaults.
func caddyRPConf(port int, ports []int, options string) string {
	ups := make([]string, len(ports))
	for i, p := range ports {
		ups[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return caddyGlobal + fmt.Sprintf(`
http://127.0.0.1:%d {
	reverse_proxy %s {
		lb_policy least_conn
		%s
	}
}
`, port, strings.Join(ups, " "), options)
}

// caddyRPFailover are the options Caddy's reverse_proxy documentation
// gives for upstreams that fail: retry another upstream for up to 5 s
// ("a reasonable starting point"), every 250 ms (the default interval),
// and passive health checks that leave an upstream out for 30 s after
// one failed request ("a reasonable starting point"; max_fails 1 is the
// default). Without them a request to a dead upstream fails at once and
// least_conn keeps choosing it (it has no connections).
const caddyRPFailover = "lb_try_duration 5s\n\t\tlb_try_interval 250ms\n\t\tfail_duration 30s\n\t\tmax_fails 1"

// caddyRespondConf has Caddy answer every request itself with a JSON body
// like the example app's answer to GET / (20 bytes against its 24–26).
func caddyRespondConf(port int) string {
	return caddyGlobal + fmt.Sprintf(`
http://127.0.0.1:%d {
	header Content-Type application/json
	respond `+"`"+`{"pid":0,"worker":0}`+"`"+` 200
}
`, port)
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
