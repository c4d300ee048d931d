'use strict';
// Node's own cluster module serving examples/node/server.js: the peer the
// benchmark compares caddy-workerpool with. The primary forks WORKERS
// workers that share one listening port; Node hands out connections round
// robin, and each connection's requests queue in its worker.
//
//   PORT=8080 WORKERS=2 node bench/peers/node-cluster.js

const cluster = require('node:cluster');
const os = require('node:os');
const path = require('node:path');

const workers = Number(process.env.WORKERS || os.availableParallelism());
const app = process.env.APP || path.join(__dirname, '..', '..', 'examples', 'node', 'server.js');

if (cluster.isPrimary) {
  let stopping = false;
  cluster.setupPrimary({ exec: app });
  const fork = (id) => {
    const w = cluster.fork({ WORKER_ID: String(id), WORKER_COUNT: String(workers) });
    w.workerID = id;
  };
  for (let i = 1; i <= workers; i++) fork(i);
  cluster.on('exit', (worker) => {
    if (!stopping) fork(worker.workerID);
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 5000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
