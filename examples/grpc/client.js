// A grpc-js client for the example service, as a user would write one:
// one channel to the target, then the calls that argv names. Each result
// is one JSON line on stdout, so that tests and benchmarks can read it.
//
//   node client.js <target> unary <n> [ms] [deadline_ms] [fail]
//   node client.js <target> load <calls> <inflight> <ms>  (a progress line after a quarter)
//   node client.js <target> count <n> <interval_ms>
//   node client.js <target> sum <n>
//   node client.js <target> echo <n>
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

function unary(ms, deadline, fail) {
  return new Promise((resolve) => {
    const opts = deadline > 0 ? { deadline: Date.now() + deadline } : {};
    const start = process.hrtime.bigint();
    let trailers = {};
    const call = client.Work({ ms, fail }, new grpc.Metadata(), opts, (err, res) => {
      const took = Number(process.hrtime.bigint() - start) / 1e6;
      resolve(err ? { ...failure(err), took } : { code: 0, pid: res.pid, worker: res.worker, took, trailers });
    });
    call.on('status', (s) => { trailers = s.metadata.getMap(); });
  });
}

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
      const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
      out({ calls, errors, secs, rate: calls / secs, p50: q(0.5), p99: q(0.99), pids });
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
      const n = num(0, 5);
      const call = client.Echo();
      call.on('error', () => {}); // the status says it
      let got = 0;
      await new Promise((resolve) => {
        call.on('data', (m) => {
          got++;
          if (m.value !== got) out({ error: `echo ${m.value}, want ${got}` });
          if (got < n) call.write({ value: got + 1 }); else call.end();
        });
        call.on('status', (s) => { out({ code: s.code, details: s.details, echoes: got }); resolve(); });
        call.write({ value: 1 });
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
