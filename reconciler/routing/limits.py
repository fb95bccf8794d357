"""What keeps the proxy process standing when a client is hostile.

Containers reach the routing proxy and the grants forward proxy directly, so
either may be flooded. This module holds the process-wide defences both use:

- `SourceLimiter`: a cap on the connections one source address holds that have
  not yet sent a complete request head (or finished a TLS handshake and then
  a head). Past the cap, that source's new connections are closed at once;
  other sources are unaffected. Nothing is authenticated on the routing proxy,
  so this is its only per-client bound; the forward proxy uses the same class
  for connections that have not authenticated yet.
- `raise_nofile()`: the descriptor limit raised to its hard limit at start
  (soft = hard), so a flood needs far more connections to reach EMFILE; when
  it does, listeners pause accepting briefly (see `proxy.Listener`).
- `tune_malloc()` and `MemoryTrimmer`: memory freed by closed connections is
  handed back to the system after a storm (glibc keeps it otherwise).

Settings (environment, read when the proxy starts):
`FLEET_PROXY_MAX_PENDING_PER_SOURCE` (default 256) and, for tests,
`FLEET_PROXY_NOFILE` (a soft descriptor limit to use instead of the hard one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
import time
from typing import Mapping

from ..errors import FleetError

log = logging.getLogger("fleet.proxy")

DEFAULT_MAX_PENDING_PER_SOURCE = 256


def _int_env(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise FleetError(f"{name} must be a whole number of at least {minimum} (found {text!r})")
    return value


# -- per-source caps ----------------------------------------------------------------------


class Slot:
    """One admitted connection's place in its source's count; `release()` is idempotent."""

    __slots__ = ("limiter", "source")

    def __init__(self, limiter: "SourceLimiter", source: str):
        self.limiter = limiter
        self.source = source

    def release(self) -> None:
        limiter = self.limiter
        if limiter is not None:
            self.limiter = None  # type: ignore[assignment]
            limiter._release(self.source)


class SourceLimiter:
    """Counts connections per source address that have not yet earned trust
    (a complete request head, or an accepted credential).

    `admit(source)` returns a `Slot`, or None when that source already holds
    `max_per_source` such connections: close the new connection then. Call
    `slot.release()` once the connection completes its head (or authenticates),
    and when it closes (release is idempotent, so calling both is fine).
    Refusals are logged at most once per source per `log_every` seconds.
    """

    def __init__(self, max_per_source: int = DEFAULT_MAX_PENDING_PER_SOURCE, log_every: float = 10.0, what: str = "proxy"):
        self.max_per_source = max_per_source
        self.counts: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._logged: dict[str, float] = {}
        self.log_every = log_every
        self.what = what

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, what: str = "proxy") -> "SourceLimiter":
        env = os.environ if env is None else env
        return cls(
            _int_env(env, "FLEET_PROXY_MAX_PENDING_PER_SOURCE", DEFAULT_MAX_PENDING_PER_SOURCE),
            what=what,
        )

    def admit(self, source: str) -> Slot | None:
        n = self.counts.get(source, 0)
        if n >= self.max_per_source:
            self.refused[source] = self.refused.get(source, 0) + 1
            now = time.monotonic()
            if now - self._logged.get(source, -1e9) >= self.log_every:
                self._logged[source] = now
                log.warning(
                    "%s: %s holds %d connections that sent no complete request; closing its new ones "
                    "(FLEET_PROXY_MAX_PENDING_PER_SOURCE; %d refused so far)",
                    self.what, source, n, self.refused[source],
                )
                if len(self._logged) > 4096:
                    self._logged.clear()
            return None
        self.counts[source] = n + 1
        return Slot(self, source)

    def _release(self, source: str) -> None:
        n = self.counts.get(source, 0) - 1
        if n > 0:
            self.counts[source] = n
        else:
            self.counts.pop(source, None)
            self.refused.pop(source, None)

    def pending(self, source: str) -> int:
        return self.counts.get(source, 0)


# -- descriptors --------------------------------------------------------------------------


def raise_nofile(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (or to `FLEET_PROXY_NOFILE`,
    a knob for tests that want to run out); returns the (soft, hard) now in force."""
    env = os.environ if env is None else env
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if env.get("FLEET_PROXY_NOFILE"):
        want = _int_env(env, "FLEET_PROXY_NOFILE", hard, minimum=32)
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
    if want == resource.RLIM_INFINITY:
        want = 1 << 20
    if want != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not set the descriptor limit to %s: %s", want, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- memory -------------------------------------------------------------------------------

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_libc: ctypes.CDLL | None | bool = False


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        _libc = None
        name = ctypes.util.find_library("c")
        if name:
            try:
                lib = ctypes.CDLL(name)
                lib.malloc_trim  # glibc only (not musl, not macOS)
                lib.mallopt
                _libc = lib
            except (OSError, AttributeError):
                _libc = None
    return _libc or None


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold at 128 KiB (glibc raises it for good after the
    first large free, so later large buffers come from the heap and are kept),
    and use two arenas at most. Call before starting threads. False off glibc."""
    lib = _glibc()
    if lib is None:
        return False
    lib.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    lib.mallopt(_M_ARENA_MAX, 2)
    return True


def malloc_trim() -> bool:
    lib = _glibc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


class MemoryTrimmer:
    """Hands freed memory back to the system after a connection storm: feed it
    the number of open connections now and then (`observe`); once the count has
    dropped by `drop` or more from its peak, `malloc_trim(0)` runs."""

    def __init__(self, drop: int = 64, min_interval: float = 1.0):
        self.drop = drop
        self.min_interval = min_interval
        self.peak = 0
        self.last = 0.0
        self.trims = 0

    def observe(self, count: int, now: float | None = None) -> bool:
        if count > self.peak:
            self.peak = count
            return False
        if self.peak - count < self.drop:
            return False
        now = time.monotonic() if now is None else now
        if now - self.last < self.min_interval:
            return False
        self.last = now
        self.peak = count
        if malloc_trim():
            self.trims += 1
            return True
        return False


TLS_READ = 64 * 1024


def shrink_tls_buffers(size: int = TLS_READ) -> None:
    """asyncio gives every TLS connection a 256 KiB read buffer up front (an idle
    connection keeps it for its life); 64 KiB, like the plain read size, is
    plenty for 16 KiB TLS records. Process-wide: applies to both proxies."""
    import asyncio.sslproto

    if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > size:
        asyncio.sslproto.SSLProtocol.max_size = size  # type: ignore[attr-defined]
