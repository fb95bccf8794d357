"""What the Modal provider stamps on a host sandbox: its tags (the state, as
Docker labels are for the Docker provider) and the encodings they use.

The same keys as Docker's labels (project, kind, host, spec-hash) plus one tag
per agent holding its spec hash, a generation and flags. Tag values stay within
63 characters of `[A-Za-z0-9._-]`: a sha256 is stored in base64url (43
characters), whole, so the hashes compared by reconcile are the same as Docker's.

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import base64
import secrets
import time
from datetime import datetime, timezone

from reconciler.core import labels as L
from reconciler.core.model import ModalOptions

AGENT_TAG = L.PREFIX + "agent."  # + agent name -> "<spec hash b64>.<generation>.<flags>"
PORTS_TAG = L.PREFIX + "ports"  # host: its tunnelled ports: the port router's ("3000.8080" before it)
CREATED_TAG = L.PREFIX + "created"  # host: epoch seconds
PENDING = "pending"  # spec-hash of a host still being set up (workspace upload)
WORKDIR = "/workspace"


def _b64(hex_hash: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_hash)).rstrip(b"=").decode()


def _hex(b64: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except (ValueError, TypeError):
        return ""
    return raw.hex() if len(raw) == 32 else ""


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _generation() -> str:
    """A new agent incarnation: its start time (base36 seconds) and 2 random characters."""
    return _b36(int(time.time())) + "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(2))


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat() if epoch else None


def _gen_time(gen: str) -> float | None:
    try:
        return float(int(gen[:-2], 36))
    except ValueError:
        return None


def agent_tag(spec_hash: str, gen: str, flags: str) -> str:
    return f"{_b64(spec_hash)}.{gen}.{flags}"


def parse_agent_tag(value: str) -> tuple[str, str, str]:
    """(hex spec hash, generation, flags) from an agent tag value."""
    parts = value.split(".")
    if len(parts) != 3:
        return "", "", ""
    return _hex(parts[0]), parts[1], parts[2]


def _flags(running: bool, flags: str) -> str:
    """Agent tag flags: r (running) or s (stopped by fleet), m (has a first message)."""
    return ("r" if running else "s") + ("m" if "m" in flags else "")


def app_name(fleet: str, opts: ModalOptions | None) -> str:
    return (opts.app if opts and opts.app else None) or f"fleet-{fleet}"

