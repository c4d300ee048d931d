// A socket.io 4 server as socket.io's own guides write one: an HTTP
// server with socket.io attached, default transports (HTTP long-polling
// first, then an upgrade to WebSocket), sessions in this process's
// memory. Behind the pool it needs `balance cookie`: every request of a
// session must reach the worker that holds it.
//
// Besides socket.io it serves:
//   GET /healthz       ok
//   GET /hello         a short answer, with this worker's pid
//   GET /wait?ms=N     a plain long poll: answers after N ms without
//                      computing anything meanwhile
//
// It listens on process.env.HOST:process.env.PORT (the pool sets both).
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

const worker = process.env.WORKER_ID || '';

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  switch (url.pathname) {
    case '/healthz':
      res.end('ok\n');
      return;
    case '/hello':
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ pid: process.pid, worker }));
      return;
    case '/wait': {
      const ms = Math.min(Number(url.searchParams.get('ms')) || 1000, 60000);
      const t = setTimeout(() => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ pid: process.pid, waited: ms }));
      }, ms);
      req.on('close', () => clearTimeout(t));
      return;
    }
  }
  // socket.io answers its own path (/socket.io/) before this handler.
  res.statusCode = 404;
  res.end('not found\n');
});

const io = new Server(server);

io.on('connection', (socket) => {
  // An event with an acknowledgement: the client learns which worker
  // holds its session.
  socket.on('echo', (msg, ack) => {
    if (typeof ack === 'function') {
      ack({ msg, pid: process.pid, worker, transport: socket.conn.transport.name });
    }
  });
});

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 3000);
server.listen(port, host, () => {
  console.log(`socket.io worker ${worker} (pid ${process.pid}) on ${host}:${port}`);
});

process.on('SIGTERM', () => {
  // Close the sessions cleanly, then the server.
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
