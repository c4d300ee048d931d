// A Fastify 5 app as its guide writes one, listening where the pool
// says (PORT and HOST).
const fastify = require('fastify')();

fastify.get('/', async () => ({ pid: process.pid, worker: Number(process.env.WORKER_ID || 0), framework: 'fastify' }));

fastify.get('/healthz', async () => 'ok');

// Fastify parses JSON bodies itself and answers malformed JSON with 400.
fastify.post('/echo', async (req) => ({ pid: process.pid, body: req.body }));

fastify.listen({ port: Number(process.env.PORT || 3000), host: process.env.HOST || '127.0.0.1' }).catch((err) => {
  console.error(err);
  process.exit(1);
});

process.on('SIGTERM', () => fastify.close().then(() => process.exit(0)));
