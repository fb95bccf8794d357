"""A minimal Language Server Protocol client for yaml-language-server (the server
behind VS Code's and other editors' YAML support): open documents, collect the
diagnostics the editor would show."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

SERVER = Path(sys.executable).parent.parent / "node" / "node_modules" / ".bin" / "yaml-language-server"


class YamlLanguageServer:
    def __init__(self):
        assert SERVER.exists(), f"{SERVER} is missing: run `make install` (it installs yaml-language-server with npm)"
        self.proc = subprocess.Popen([str(SERVER), "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buf = b""
        self.next_id = 1
        self.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": {"yaml": {"validate": True}}})

    def _send(self, msg: dict) -> None:
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: dict, timeout: float = 30.0) -> dict:
        rid = self.next_id
        self.next_id += 1
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.read(deadline - time.monotonic())
            if msg and msg.get("id") == rid:
                return msg
        raise TimeoutError(method)

    def read(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            if b"\r\n\r\n" in self.buf:
                head, rest = self.buf.split(b"\r\n\r\n", 1)
                length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
                if len(rest) >= length:
                    self.buf = rest[length:]
                    return json.loads(rest[:length])
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.2))
            if ready:
                chunk = self.proc.stdout.read1(65536)
                if not chunk:
                    return None
                self.buf += chunk

    def diagnostics(self, texts: dict[str, str], schema: Path, quiet: float = 1.0, timeout: float = 60.0) -> dict[str, list[dict]]:
        """Open every document (each naming `schema` on its first line, as fleet
        files do) and return each one's last published diagnostics."""
        uris = {}
        for i, (name, text) in enumerate(texts.items()):
            uri = f"file:///fleet-editor-check/{i}/fleet.yaml"
            uris[uri] = name
            self.notify("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": "yaml", "version": 1,
                "text": f"# yaml-language-server: $schema={schema.resolve().as_uri()}\n{text}",
            }})
        out: dict[str, list[dict]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.read(quiet)
            if msg is None:
                if len(out) == len(uris):
                    break
                continue
            if msg.get("method") == "textDocument/publishDiagnostics" and msg["params"]["uri"] in uris:
                out[uris[msg["params"]["uri"]]] = msg["params"]["diagnostics"]
        missing = set(uris.values()) - set(out)
        assert not missing, f"no diagnostics published for {sorted(missing)}"
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
