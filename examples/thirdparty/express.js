// An Express 5 app as its guide writes one: it knows nothing of the
// pool but the PORT it is given.
const express = require('express');

const app = express();

// Counts the requests that reach the app, but /healthz and /stats: tests
// read it to tell that the pool kept a request from the app.
let requests = 0;
app.use((req, res, next) => {
  if (req.path !== '/healthz' && req.path !== '/stats') requests++;
  next();
});
app.use(express.json());

app.get('/stats', (req, res) => {
  res.json({ requests });
});

app.get('/', (req, res) => {
  res.json({ pid: process.pid, worker: Number(process.env.WORKER_ID || 0), framework: 'express' });
});

app.get('/healthz', (req, res) => {
  res.send('ok');
});

// Echoes a JSON body; express.json() answers malformed JSON with 400.
app.post('/echo', (req, res) => {
  res.json({ pid: process.pid, body: req.body });
});

// Creates an order, as openapi.json documents it; says which path it
// was sent to.
app.post('/orders', (req, res) => {
  res.status(201).json({ path: req.originalUrl, body: req.body });
});

const server = app.listen(process.env.PORT || 3000, process.env.HOST);

process.on('SIGTERM', () => server.close(() => process.exit(0)));
