'use strict';
// Example worker for caddy-workerpool: a plain Node.js HTTP server with no
// npm dependencies. Run one per core behind the pool; each process is
// single-threaded, and the pool keeps requests in Go until one is free.
//
//   GET  /          {"pid", "worker"}: which process answered
//   GET  /work?ms=N busy-loops until it has used N ms of CPU time (at most 10 s),
//                   then answers
//   GET  /report?ms=N the same on another route (an expensive endpoint
//                   beside cheap ones, for the scheduling benchmarks)
//   GET  /sleep?ms=N waits N ms without using the CPU (like a database call)
//   GET  /healthz   200 "ok" (the pool's health check)
//   GET  /stats     {"pid", "worker", "requests"}: requests this process served
//   POST /echo      answers with the request body and its Content-Type
//   POST /upload    reads the whole body, then answers {"bytes", "sha256"}
//   POST /orders    reads a JSON order (openapi.json's Order), answers 201
//                   {"bytes", "sha256", "items"}: the body as it arrived
//   GET  /orders/ID {"id"}
//   GET  /events?n=N&every=MS  a server-sent event stream: N events (default
//                   10), one every MS ms (default 100), then it ends; on
//                   SIGTERM it says "event: bye" and ends at once
//
// /stats counts every request this process received except /healthz and
// /stats themselves, unknown paths included: the validation tests use it
// to show that a refused request never reached a worker.
//
// VALIDATE_WITH=ajv makes POST /orders check the body against
// openapi.json's Order schema itself, with ajv (for the benchmark that
// compares validating in Go with validating in the worker). Only then
// does it need npm packages: `npm install ajv ajv-formats` where Node
// finds them (NODE_PATH). Without it the app has no dependencies.
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
const crypto = require('node:crypto');

const pid = process.pid;
const worker = Number(process.env.WORKER_ID || 0);
let requests = 0;
// Open event streams, ended with a goodbye when the process is asked to stop.
const streams = new Set();

function json(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(data),
  });
  res.end(data);
}

// cpuMS is the CPU time this process has used, in ms.
function cpuMS() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

// busy spins until the process has used ms more of CPU time: the same
// work whatever else runs on the machine. (Spinning for ms of wall time
// would do less work whenever the worker is descheduled, and so the
// more, the busier the host: a benchmark would credit a proxy that
// competes for the CPUs with the work it took from the app.)
function busy(ms) {
  if (ms <= 0) return;
  const end = cpuMS() + ms;
  while (cpuMS() < end) {
    // Spin: this is the CPU-heavy request a single-threaded worker
    // cannot serve anything else during.
  }
}

// checkOrder is ajv's compiled Order schema, or null: the body is trusted
// (checked before it got here, or not at all).
let checkOrder = null;
if (process.env.VALIDATE_WITH === 'ajv') {
  const Ajv2020 = require('ajv/dist/2020');
  const addFormats = require('ajv-formats');
  const doc = require('./openapi.json');
  const ajv = new Ajv2020({ allErrors: false, strict: false });
  addFormats(ajv);
  ajv.addSchema({ $id: 'openapi', components: doc.components });
  checkOrder = ajv.compile({ $ref: 'openapi#/components/schemas/Order' });
}

function readBody(req, done) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => done(Buffer.concat(chunks)));
  req.on('error', () => {});
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
    case '/work':
    case '/report': {
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
    case '/events': {
      const n = Math.min(Math.max(Number(url.searchParams.get('n')) || 10, 1), 100000);
      const every = Math.min(Math.max(Number(url.searchParams.get('every')) || 100, 1), 60000);
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      let i = 0;
      const stream = {
        goodbye() {
          clearInterval(timer);
          streams.delete(stream);
          res.end('event: bye\ndata: shutting down\n\n');
        },
      };
      const timer = setInterval(() => {
        i++;
        res.write(`id: ${i}\ndata: ${JSON.stringify({ pid, worker, i })}\n\n`);
        if (i >= n) {
          clearInterval(timer);
          streams.delete(stream);
          res.end();
        }
      }, every);
      streams.add(stream);
      req.on('close', () => {
        clearInterval(timer);
        streams.delete(stream);
      });
      return;
    }
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
    case '/upload':
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        return json(res, 405, { error: 'use POST' });
      }
      return readBody(req, (body) => {
        const sha256 = crypto.createHash('sha256').update(body).digest('hex');
        return json(res, 200, { bytes: body.length, sha256 });
      });
    case '/orders':
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        return json(res, 405, { error: 'use POST' });
      }
      return readBody(req, (body) => {
        let order;
        try {
          order = JSON.parse(body);
        } catch {
          return json(res, 400, { error: 'not JSON' });
        }
        if (checkOrder && !checkOrder(order)) {
          return json(res, 400, { error: 'invalid order', errors: checkOrder.errors });
        }
        const sha256 = crypto.createHash('sha256').update(body).digest('hex');
        const items = Array.isArray(order && order.items) ? order.items.length : 0;
        return json(res, 201, { bytes: body.length, sha256, items });
      });
    default:
      if (url.pathname.startsWith('/orders/')) {
        return json(res, 200, { id: decodeURIComponent(url.pathname.slice('/orders/'.length)) });
      }
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
  for (const s of streams) s.goodbye();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
