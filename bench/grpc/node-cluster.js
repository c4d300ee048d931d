// Node cluster for the gRPC scenario: two workers of the grpc-js server
// at $SERVER, sharing one port, as cluster users run it.
const cluster = require('node:cluster');
if (cluster.isPrimary) {
  for (let i = 1; i <= 2; i++) cluster.fork({ WORKER_ID: String(i) });
} else {
  require(process.env.SERVER);
}
