# A Python app on the standard library's http.server, as its
# documentation writes one: HTTP/1.0 (each answer closes its
# connection), a thread per request, listening on the PORT it is given.
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        else:
            body = json.dumps({"pid": os.getpid(), "worker": int(os.environ.get("WORKER_ID", "0")), "framework": "http.server"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path != "/stream":
            self.send_header("Content-Length", str(len(body)))
        # /stream: no length, the body ends when the connection closes.
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
