"""A small web service for the chaos examples.

It answers ``ok`` on every path, after a warm-up (a real service loads its data or opens its
connections first), so that a restart is something a probe can see:

    python3 webapp.py PORT [WARM_UP_SECONDS]
"""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per probe would flood the log


if __name__ == "__main__":
    port = int(sys.argv[1])
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.3)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
