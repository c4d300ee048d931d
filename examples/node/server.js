'use strict';
// Example worker for caddy-workerpool: a plain Node.js HTTP server with no
// npm dependencies. Run one per core behind the pool; each process is
// single-threaded, and the pool keeps requests in Go until one is free.
//
//   GET  /          {"pid", "worker"}: which process answered
//   GET  /work?ms=N busy-loops the CPU for N ms (at most 10 s), then answers
//   GET  /sleep?ms=N waits N ms without using the CPU (like a database call)
//   GET  /healthz   200 "ok" (the pool's health check)
//   GET  /stats     {"pid", "worker", "requests"}: requests this process served
//   POST /echo      answers with the request body and its Content-Type
//
// Every response carries X-Seen-Traceparent with the W3C traceparent the
// request came with, if any: the pool's tracing continues the client's
// trace, and this shows (and lets tests check) what the worker got. A
// worker with its own OpenTelemetry SDK would start its spans from it.
//
// It listens on SOCKET_PATH when set, else on HOST:PORT (HOST defaults to
// 127.0.0.1, so a worker is never reachable from outside the machine).
//
// For the fault-injection tests, FAULT_WORKER=<id> with FAULT=garbage
// (answer bytes that are not HTTP) or FAULT=truncate (promise a body,
// send part of it, close) makes that one worker misbehave on every route
// but /healthz.

const http = require('node:http');

const pid = process.pid;
const worker = Number(process.env.WORKER_ID || 0);
let requests = 0;

function json(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(data),
  });
  res.end(data);
}

function busy(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // Spin: this is the CPU-heavy request a single-threaded worker
    // cannot serve anything else during.
  }
}

const faulty = process.env.FAULT_WORKER === String(worker) ? process.env.FAULT : '';

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://worker');
  if (req.headers.traceparent) res.setHeader('X-Seen-Traceparent', req.headers.traceparent);
  if (faulty && url.pathname !== '/healthz') {
    if (faulty === 'garbage') {
      req.socket.end('this is not HTTP\r\n\r\n');
      return;
    }
    if (faulty === 'truncate') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 1000 });
      res.write('only part of it');
      setTimeout(() => req.socket.destroy(), 20);
      return;
    }
  }
  if (url.pathname !== '/healthz' && url.pathname !== '/stats') {
    requests++;
  }
  switch (url.pathname) {
    case '/':
      return json(res, 200, { pid, worker });
    case '/work': {
      const ms = Math.min(Math.max(Number(url.searchParams.get('ms')) || 0, 0), 10000);
      busy(ms);
      return json(res, 200, { pid, worker, ms });
    }
    case '/sleep': {
      const ms = Math.min(Math.max(Number(url.searchParams.get('ms')) || 0, 0), 10000);
      setTimeout(() => json(res, 200, { pid, worker, ms }), ms);
      return;
    }
    case '/healthz':
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      return res.end('ok\n');
    case '/stats':
      return json(res, 200, { pid, worker, requests });
    case '/echo': {
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        return json(res, 405, { error: 'use POST' });
      }
      res.writeHead(200, {
        'Content-Type': req.headers['content-type'] || 'application/octet-stream',
      });
      req.pipe(res);
      return;
    }
    default:
      return json(res, 404, { error: 'not found', path: url.pathname });
  }
});

if (process.env.SOCKET_PATH) {
  server.listen(process.env.SOCKET_PATH);
} else {
  server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');
}

function shutdown() {
  // Finish the requests in flight, refuse new ones, then exit. The pool
  // sends SIGKILL after its stop_timeout if this takes too long.
  server.close(() => process.exit(0));
  server.closeIdleConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
