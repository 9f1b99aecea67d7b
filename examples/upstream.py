#!/usr/bin/env python3
"""A legacy API that only takes a static key, for the README's proxy example.

It answers GET /tickets/<id> when the X-Api-Key header equals $UPSTREAM_KEY,
and carelessly echoes the key back (in a header and in the body) so you can
watch Mandate's proxy redact it. Standard library only.

    UPSTREAM_KEY=... python3 examples/upstream.py 127.0.0.1:9000
"""
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = os.environ.get("UPSTREAM_KEY", "")


class Tickets(BaseHTTPRequestHandler):
    def do_GET(self):
        got = self.headers.get("X-Api-Key", "")
        if not KEY or not hmac.compare_digest(got.encode(), KEY.encode()):
            return self.reply(401, {"error": "missing or wrong X-Api-Key"})
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] != "tickets":
            return self.reply(404, {"error": "no such route"})
        self.reply(200, {"id": parts[1], "title": "Login page is slow",
                         "debug": {"authenticated_with": got}}, echo=got)

    def reply(self, status, body, echo=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if echo:
            self.send_header("X-Debug-Key", echo)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: %s %s\n" % (self.command, self.path))


if __name__ == "__main__":
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9000").rsplit(":", 1)
    if not KEY:
        sys.exit("set UPSTREAM_KEY to the key this API accepts")
    print(f"upstream listening on http://{host}:{port}", flush=True)
    ThreadingHTTPServer((host, int(port)), Tickets).serve_forever()
