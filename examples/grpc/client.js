// A grpc-js client for the example service, as a user would write one:
// one channel to the target, then the calls that argv names. Each result
// is one JSON line on stdout, so that tests and benchmarks can read it.
//
//   node client.js <target> unary <n> [ms] [deadline_ms] [fail]
//   node client.js <target> load <calls> <inflight> <ms>  (a progress line after a quarter)
//   node client.js <target> count <n> <interval_ms>
//   node client.js <target> sum <n>
//   node client.js <target> echo <n> [interval_ms]
//   node client.js <target> streams <seconds> <every_ms> <messages> <interval_ms>
//   node client.js <target> mixed <seconds> <rate> <cheap_ms> <costly_ms> <costly_share>
//   node client.js <target> health [service]
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, file), {
  keepCase: true, longs: Number, enums: String, defaults: true,
}));
const demo = load('pool.proto').pool.example;
const health = load('health.proto').grpc.health.v1;

const [target, what, ...args] = process.argv.slice(2);
const num = (i, d) => (args[i] === undefined ? d : Number(args[i]));
const creds = grpc.credentials.createInsecure();
const client = new demo.Demo(target, creds);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const failure = (err) => ({ code: err.code, details: err.details, metadata: err.metadata ? err.metadata.getMap() : {} });

function unary(ms, deadline, fail, method = 'Work') {
  return new Promise((resolve) => {
    const opts = deadline > 0 ? { deadline: Date.now() + deadline } : {};
    const start = process.hrtime.bigint();
    let trailers = {};
    const call = client[method]({ ms, fail }, new grpc.Metadata(), opts, (err, res) => {
      const took = Number(process.hrtime.bigint() - start) / 1e6;
      resolve(err ? { ...failure(err), took } : { code: 0, pid: res.pid, worker: res.worker, took, trailers });
    });
    call.on('status', (s) => { trailers = s.metadata.getMap(); });
  });
}

const quantile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];

// count is a server-streaming call of n messages, interval_ms apart;
// opened is told at its first message.
function count(n, interval, opened) {
  return new Promise((resolve) => {
    const call = client.Count({ n, interval_ms: interval });
    call.on('error', () => {}); // the status says it
    let got = 0;
    const pids = new Set();
    call.on('data', (m) => {
      if (got++ === 0) opened();
      pids.add(m.pid);
    });
    call.on('status', (s) => resolve({ kind: 'count', code: s.code, details: s.details, messages: got, pids: [...pids] }));
  });
}

// echo is a bidirectional call: each of n messages is sent interval_ms
// after the previous one's echo came; opened is told at the first echo.
function echo(n, interval, opened) {
  return new Promise((resolve) => {
    const call = client.Echo();
    call.on('error', () => {}); // the status says it
    let got = 0;
    let pid = 0;
    let wrong = 0;
    call.on('metadata', (md) => { pid = Number(md.get('x-pid')[0] || 0); });
    call.on('data', (m) => {
      got++;
      if (got === 1) opened();
      if (m.value !== got) wrong++;
      if (got >= n) call.end();
      else if (interval > 0) setTimeout(() => call.write({ value: got + 1 }), interval);
      else call.write({ value: got + 1 });
    });
    call.on('status', (s) => resolve({ kind: 'echo', code: s.code, details: s.details, messages: got, wrong, pids: pid ? [pid] : [] }));
    call.write({ value: 1 });
  });
}

// exponential is the wait until the next arrival of a Poisson process
// of rate per second, in ms.
const exponential = (rate) => (-Math.log(1 - Math.random()) / rate) * 1000;

async function main() {
  switch (what) {
    case 'unary': {
      const n = num(0, 1);
      for (let i = 0; i < n; i++) out(await unary(num(1, 0), num(2, 0), num(3, 0)));
      break;
    }
    case 'load': {
      // calls calls of ms each, inflight at a time on the one channel.
      const calls = num(0, 100);
      const inflight = num(1, 16);
      const ms = num(2, 0);
      let started = 0;
      const lat = [];
      const pids = {};
      let errors = 0;
      const t0 = process.hrtime.bigint();
      const lane = async () => {
        while (started < calls) {
          started++;
          const r = await unary(ms, 0, 0);
          if (r.code !== 0) errors++;
          else pids[r.pid] = (pids[r.pid] || 0) + 1;
          lat.push(r.took);
          if (lat.length === Math.floor(calls / 4)) out({ progress: lat.length });
        }
      };
      await Promise.all(Array.from({ length: inflight }, lane));
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      lat.sort((a, b) => a - b);
      out({ calls, errors, secs, rate: calls / secs, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), pids });
      break;
    }
    case 'count': {
      const call = client.Count({ n: num(0, 3), interval_ms: num(1, 10) });
      call.on('error', () => {}); // the status says it
      const pids = [];
      call.on('data', (m) => { pids.push(m.pid); out({ message: m.n, pid: m.pid }); });
      await new Promise((resolve) => call.on('status', (s) => { out({ code: s.code, details: s.details, messages: pids.length }); resolve(); }));
      break;
    }
    case 'sum': {
      await new Promise((resolve) => {
        const call = client.Sum((err, res) => { out(err ? failure(err) : { code: 0, sum: res.value }); resolve(); });
        for (let i = 1; i <= num(0, 10); i++) call.write({ value: i });
        call.end();
      });
      break;
    }
    case 'echo': {
      // Full duplex: each message is sent only after the previous echo came.
      const r = await echo(num(0, 5), num(1, 0), () => {});
      if (r.wrong > 0) out({ error: `${r.wrong} echoes out of order` });
      out({ code: r.code, details: r.details, echoes: r.messages, pid: r.pids[0] });
      break;
    }
    case 'streams': {
      // Server-streaming and bidirectional calls in turn, one begun every
      // every_ms for seconds, each of messages messages interval_ms
      // apart, all on the one channel; a progress line once four are
      // open. A stream is whole when it ends OK with all its messages.
      const seconds = num(0, 5);
      const every = num(1, 200);
      const n = num(2, 20);
      const interval = num(3, 100);
      let open = 0;
      const opened = () => { if (++open === 4) out({ progress: open }); };
      const calls = [];
      const until = Date.now() + seconds * 1000;
      for (let i = 0; Date.now() < until; i++) {
        calls.push(i % 2 === 0 ? count(n, interval, opened) : echo(n, interval, opened));
        await new Promise((resolve) => setTimeout(resolve, every));
      }
      const results = await Promise.all(calls);
      const whole = (r) => r.code === 0 && r.messages === n && !r.wrong;
      const pids = {};
      for (const r of results) for (const pid of r.pids) pids[pid] = (pids[pid] || 0) + 1;
      out({
        streams: results.length,
        whole: results.filter(whole).length,
        counts: results.filter((r) => r.kind === 'count').length,
        cut: results.filter((r) => !whole(r)).slice(0, 5),
        pids,
      });
      break;
    }
    case 'mixed': {
      // Open loop: calls arrive as a Poisson process of rate per second
      // for seconds, costly_share of them Report (costly_ms of CPU), the
      // rest Work (cheap_ms), whether or not earlier ones have been
      // answered. A call's latency counts from when it was due, so a
      // client that falls behind does not hide the wait.
      const seconds = num(0, 5);
      const rate = num(1, 100);
      const cheapMs = num(2, 1);
      const costlyMs = num(3, 20);
      const share = num(4, 0.05);
      const byMethod = { Work: { lat: [], errors: 0 }, Report: { lat: [], errors: 0 } };
      const late = [];
      const calls = [];
      const t0 = performance.now();
      const end = t0 + seconds * 1000;
      let due = t0 + exponential(rate);
      await new Promise((resolve) => {
        const tick = () => {
          const now = performance.now();
          for (; due <= now && due < end; due += exponential(rate)) {
            const method = Math.random() < share ? 'Report' : 'Work';
            const at = due;
            late.push(now - at);
            calls.push(unary(method === 'Report' ? costlyMs : cheapMs, 0, 0, method).then((r) => {
              const m = byMethod[method];
              if (r.code !== 0) m.errors++;
              m.lat.push(performance.now() - at);
            }));
          }
          if (due >= end) resolve();
          else setTimeout(tick, Math.max(0, due - performance.now()));
        };
        tick();
      });
      await Promise.all(calls);
      const summary = (m) => {
        const lat = m.lat.sort((a, b) => a - b);
        return { calls: lat.length, errors: m.errors, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) };
      };
      out({
        seconds,
        rate,
        sent: calls.length,
        late: late.filter((l) => l > 1).length / Math.max(1, late.length),
        cheap: summary(byMethod.Work),
        costly: summary(byMethod.Report),
      });
      break;
    }
    case 'health': {
      const h = new health.Health(target, creds);
      await new Promise((resolve) => h.Check({ service: args[0] || '' }, (err, res) => {
        out(err ? failure(err) : { code: 0, status: res.status });
        resolve();
      }));
      break;
    }
    default:
      console.error(`unknown call ${what}`);
      process.exit(2);
  }
  client.close();
}

main();
