// A gRPC service on @grpc/grpc-js, the way grpc-js's examples write one:
// one single-threaded process that speaks only HTTP/2. The pool runs
// several and balances every call, not every connection.
//
// It listens on process.env.HOST:process.env.PORT (the pool sets both),
// and serves the standard health protocol, grpc.health.v1.Health/Check:
// SERVING, until a call of Work with fail = -1 makes it NOT_SERVING.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, file), {
  keepCase: true, longs: Number, enums: String, defaults: true,
}));
const demo = load('pool.proto').pool.example;
const health = load('health.proto').grpc.health.v1;

const worker = process.env.WORKER_ID || '';
let served = 0;
let serving = true;
let open = 0; // streaming calls under way

// opened counts a streaming call until it ends, however it ends.
function opened(call) {
  open++;
  let ended = false;
  const end = () => {
    if (!ended) {
      ended = true;
      open--;
    }
  };
  call.on('finish', end);
  call.on('cancelled', end);
  return end;
}

// busy spins until this process has used ms milliseconds of CPU time,
// as examples/node's /work does.
function busy(ms) {
  if (ms <= 0) return;
  const start = process.cpuUsage();
  for (;;) {
    const used = process.cpuUsage(start);
    if ((used.user + used.system) / 1000 >= ms) return;
  }
}

function reply() {
  served++;
  return { pid: process.pid, worker, n: served };
}

// work is Work and Report: it spins for ms of CPU time, or fails with
// the status fail names.
function work(call, callback) {
  const { ms, fail } = call.request;
  if (fail === -1) {
    serving = false;
    callback(null, reply());
    return;
  }
  busy(ms);
  if (fail > 0) {
    const md = new grpc.Metadata();
    md.set('x-worker', worker);
    callback({ code: fail, details: `failing with ${fail} on purpose`, metadata: md });
    return;
  }
  const md = new grpc.Metadata();
  md.set('x-worker', worker);
  call.sendMetadata(md);
  callback(null, reply(), md);
}

const server = new grpc.Server();
server.addService(demo.Demo.service, {
  Work: work,
  Report: work,
  Count(call) {
    const { n, interval_ms: interval } = call.request;
    const end = opened(call);
    let i = 0;
    const next = () => {
      if (call.cancelled) return;
      if (i++ >= n) {
        end();
        call.end();
        return;
      }
      call.write(reply());
      setTimeout(next, interval);
    };
    next();
  },
  Sum(call, callback) {
    let sum = 0;
    call.on('data', (m) => { sum += m.value; });
    call.on('end', () => callback(null, { value: sum }));
  },
  Echo(call) {
    const end = opened(call);
    const md = new grpc.Metadata();
    md.set('x-pid', String(process.pid));
    call.sendMetadata(md);
    call.on('data', (m) => call.write(m));
    call.on('end', () => {
      end();
      call.end();
    });
  },
});
server.addService(health.Health.service, {
  Check(call, callback) {
    callback(null, { status: serving ? 'SERVING' : 'NOT_SERVING' });
  },
});

const host = process.env.HOST || '127.0.0.1';
const port = process.env.PORT || '50051';
server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log(`grpc worker ${worker} listening on ${host}:${port}`);
});

process.on('SIGTERM', () => {
  console.log(`SIGTERM with ${open} streaming calls open`);
  server.tryShutdown(() => process.exit(0));
});
