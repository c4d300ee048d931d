// socket.io clients, as an app's users would open them: default
// transports (long-polling, then WebSocket) and withCredentials, so that
// they keep cookies as a browser does (the pool's affinity cookie).
// Each sends an event with an acknowledgement every interval while it
// is connected, and the run prints one JSON line of what happened:
//
//   node client.js <url> [clients=8] [seconds=20] [interval_ms=200] [transports]
//
// transports, if given, is a comma-separated list (polling,websocket);
// by default socket.io's own: polling, then an upgrade to websocket.
//
// { clients, connectedFirstTry, connectErrors, errors: [...], sent,
//   acked, lost, upgraded, perClient: [{ pids: [...], connects,
//   disconnects: [{ pid, reason }] }] }
'use strict';

const { io } = require('socket.io-client');

const [url, n = '8', seconds = '20', interval = '200', transports] = process.argv.slice(2);
if (!url) {
  console.error('usage: node client.js <url> [clients] [seconds] [interval_ms]');
  process.exit(2);
}

const result = {
  clients: Number(n), connectedFirstTry: 0, connectErrors: 0, errors: [],
  sent: 0, acked: 0, lost: 0, upgraded: 0, perClient: [],
};

function client(i) {
  const me = { pids: [], connects: 0, disconnects: [], errorsBeforeFirst: 0, pid: 0, transport: '' };
  result.perClient.push(me);
  const socket = io(url, {
    withCredentials: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 1000,
    ...(transports ? { transports: transports.split(',') } : {}),
  });
  socket.on('connect', () => {
    me.connects++;
    if (me.connects === 1 && me.errorsBeforeFirst === 0) result.connectedFirstTry++;
  });
  socket.on('connect_error', (err) => {
    result.connectErrors++;
    if (me.connects === 0) me.errorsBeforeFirst++;
    if (result.errors.length < 20) result.errors.push(`client ${i}: ${err.message}${err.description ? ` (${err.description})` : ''}`);
  });
  let stopped = false;
  let pending = 0;
  socket.on('disconnect', (reason) => {
    if (!stopped) me.disconnects.push({ pid: me.pid, reason });
  });
  let seq = 0;
  const timer = setInterval(() => {
    if (!socket.connected) return;
    result.sent++;
    pending++;
    socket.timeout(5000).emit('echo', `${i}:${seq++}`, (err, res) => {
      pending--;
      if (err) {
        result.lost++;
        if (result.errors.length < 20) result.errors.push(`client ${i}: ack: ${err.message}`);
        return;
      }
      result.acked++;
      if (res.pid !== me.pid) {
        me.pid = res.pid;
        me.pids.push(res.pid);
      }
      me.transport = res.transport;
    });
  }, Number(interval));
  return () => new Promise((resolve) => {
    clearInterval(timer);
    if (me.transport === 'websocket') result.upgraded++;
    // Acknowledgements still on their way get their 5 s.
    const wait = setInterval(() => {
      if (pending > 0) return;
      clearInterval(wait);
      stopped = true;
      socket.close();
      resolve();
    }, 20);
  });
}

const stops = [];
for (let i = 0; i < Number(n); i++) stops.push(client(i));
setTimeout(async () => {
  await Promise.all(stops.map((stop) => stop()));
  for (const c of result.perClient) {
    delete c.pid; delete c.transport; delete c.errorsBeforeFirst;
  }
  console.log(JSON.stringify(result));
  process.exit(0);
}, Number(seconds) * 1000);
