// A WebSocket echo server with the ws library on Node's http server, as
// ws's README writes one. On SIGTERM it tells every client it is going
// away (close code 1001) and exits once they are gone.
const http = require('node:http');
const { WebSocketServer } = require('ws');

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.end('ok');
    return;
  }
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ pid: process.pid, worker: Number(process.env.WORKER_ID || 0), framework: 'ws' }));
});

const wss = new WebSocketServer({ server });
wss.on('connection', (socket) => {
  socket.on('message', (data) => socket.send(`${process.pid}:${data}`));
});

server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');

process.on('SIGTERM', () => {
  for (const socket of wss.clients) socket.close(1001, 'going away');
  wss.close();
  server.close(() => process.exit(0));
});
