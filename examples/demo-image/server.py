"""A stand-in for an agent's dev server: answers on $PORT (default 3000) with
the agent's name and the files it sees in /workspace."""

import http.server
import json
import os

PORT = int(os.environ.get("PORT", "3000"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ws = "/workspace"
        body = json.dumps(
            {
                "agent": os.environ.get("FLEET_AGENT"),
                "host": os.environ.get("FLEET_HOST"),
                "fleet": os.environ.get("FLEET_NAME"),
                "url": os.environ.get("FLEET_URL_WEB"),
                "workspace": sorted(os.listdir(ws)) if os.path.isdir(ws) else [],
                "path": self.path,
            },
            indent=2,
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)


http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
