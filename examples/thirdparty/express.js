// An Express 5 app as its guide writes one: it knows nothing of the
// pool but the PORT it is given.
const express = require('express');

const app = express();
app.use(express.json());

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

const server = app.listen(process.env.PORT || 3000, process.env.HOST);

process.on('SIGTERM', () => server.close(() => process.exit(0)));
