"""Object ids and tokens in the shapes the `modal` SDK expects.

The SDK routes on id shapes: a sandbox id of the form `sb-` + 22 alphanumerics is a
V1 sandbox, anything else V2; a task id `ta-…V` belongs to a V2 sandbox; app ids are
`ap-` + 22 alphanumerics. Tokens are JWT-shaped (the client decodes `exp` from the
payload); the fake signs them with HMAC so it can tell its own tokens from garbage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
from typing import Any

ALNUM = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 22) -> str:
    return f"{prefix}-" + "".join(secrets.choice(ALNUM) for _ in range(length))


def content_id(prefix: str, data: bytes, length: int = 22) -> str:
    """A deterministic id derived from `data` (same definition, same id)."""
    n = int.from_bytes(hashlib.sha256(data).digest(), "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, len(ALNUM))
        out.append(ALNUM[r])
    return f"{prefix}-" + "".join(out)


def sandbox_id() -> str:
    """A V2 sandbox id: deliberately not the V1 shape (`sb-` + exactly 22 alphanumerics)."""
    return random_id("sb", 26)


def task_id() -> str:
    """A V2 task id (`ta-…V`), as the SDK's `_is_v2_task_id` expects."""
    return random_id("ta", 21) + "V"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class TokenSigner:
    """Mints and checks HS256 JWTs with a per-server secret."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def mint(self, claims: dict[str, Any], ttl: float = 3600.0) -> str:
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(json.dumps({**claims, "exp": int(time.time() + ttl)}).encode())
        sig = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64url(sig)}"

    def check(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired token of ours, else None."""
        try:
            header, payload, sig = token.split(".")
            want = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(want, _b64url_decode(sig)):
                return None
            claims: dict[str, Any] = json.loads(_b64url_decode(payload))
        except (ValueError, TypeError):
            return None
        if float(claims.get("exp", 0)) < time.time():
            return None
        return claims
