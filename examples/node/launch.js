'use strict';
// Launcher for the Kubernetes sidecar mode: the app container runs this,
// and the Caddy sidecar in the same pod finds the workers on loopback
// (worker_pool { discover 127.0.0.1:3001-3004 }).
//
//   node launch.js [app.js]
//
// It starts WORKERS copies of the app (default: server.js beside this
// file; WORKERS defaults to the CPUs Node may use) on
// HOST:PORT_BASE … PORT_BASE+WORKERS-1 (default 127.0.0.1:3001), each with
// PORT, HOST, WORKER_ID (1 … WORKERS) and WORKER_COUNT set as the pool
// sets them. A worker that exits is started again after 100 ms, doubling
// with each exit in a row up to 10 s; the delay resets once it has run
// for 10 s. SIGTERM or SIGINT is passed on to every worker, which
// finishes its requests and exits; the launcher exits 0 once all have,
// and kills what is left after STOP_TIMEOUT_MS (default 10000).

const { fork } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');

function intEnv(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`launch: ${name}=${JSON.stringify(raw)} is not an integer from ${min} to ${max}`);
    process.exit(2);
  }
  return n;
}

const app = path.resolve(process.argv[2] || path.join(__dirname, 'server.js'));
const count = intEnv('WORKERS', os.availableParallelism(), 1, 1024);
const portBase = intEnv('PORT_BASE', 3001, 1, 65535 - count + 1);
const host = process.env.HOST || '127.0.0.1';
const stopTimeout = intEnv('STOP_TIMEOUT_MS', 10000, 0, 3600000);

const minDelay = 100;
const maxDelay = 10000;
const stableAfter = 10000;

let stopping = false;
const workers = [];

function start(w) {
  w.startedAt = Date.now();
  w.child = fork(app, [], {
    env: {
      ...process.env,
      HOST: host,
      PORT: String(w.port),
      WORKER_ID: String(w.id),
      WORKER_COUNT: String(count),
    },
  });
  w.child.on('exit', (code, signal) => {
    w.child = null;
    if (stopping) {
      if (workers.every((x) => x.child === null)) {
        process.exit(0);
      }
      return;
    }
    if (Date.now() - w.startedAt >= stableAfter) {
      w.delay = minDelay;
    }
    const why = signal ? `signal ${signal}` : `code ${code}`;
    console.error(`launch: worker ${w.id} (port ${w.port}) exited with ${why}; restarting in ${w.delay} ms`);
    w.timer = setTimeout(() => {
      w.timer = null;
      start(w);
    }, w.delay);
    w.delay = Math.min(w.delay * 2, maxDelay);
  });
}

function stop(signal) {
  if (stopping) {
    return;
  }
  stopping = true;
  for (const w of workers) {
    clearTimeout(w.timer);
    if (w.child) {
      w.child.kill(signal);
    }
  }
  if (workers.every((w) => w.child === null)) {
    process.exit(0);
  }
  setTimeout(() => {
    for (const w of workers) {
      if (w.child) {
        console.error(`launch: worker ${w.id} still running after ${stopTimeout} ms; killing it`);
        w.child.kill('SIGKILL');
      }
    }
  }, stopTimeout).unref();
}

process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGTERM'));

for (let i = 0; i < count; i++) {
  const w = { id: i + 1, port: portBase + i, child: null, timer: null, delay: minDelay, startedAt: 0 };
  workers.push(w);
  start(w);
}
console.error(`launch: ${count} workers of ${app} on ${host}:${portBase}-${portBase + count - 1}`);
