"""What keeps the proxy process standing when a client is hostile.

Containers reach the routing proxy and the grants forward proxy directly, so
either may be flooded. This module holds the process-wide defences both use:

- `SourceLimiter`: a cap on the connections one source address holds that have
  not yet sent a complete request head (or finished a TLS handshake and then
  a head). Past the cap, that source's new connections are closed at once;
  other sources are unaffected; a second, larger cap bounds all of one
  source's open connections. Nothing is authenticated on the routing proxy,
  so this is its only per-client bound; the forward proxy uses the same class
  for connections that have not authenticated yet.
- `raise_nofile()`: the descriptor limit raised to its hard limit at start
  (soft = hard), so a flood needs far more connections to reach EMFILE; when
  it does, listeners pause accepting briefly (see `proxy.Listener`).
- `tune_malloc()` and `MemoryTrimmer`: memory freed by closed connections is
  handed back to the system after a storm (glibc keeps it otherwise).

Settings (environment, read when the proxy starts):
`FLEET_PROXY_MAX_PENDING_PER_SOURCE` (default 256),
`FLEET_PROXY_MAX_CONNECTIONS_PER_SOURCE` (default 2048: every open connection
of one source, trusted or not) and, for tests,
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

from reconciler.net.envconfig import env_int

log = logging.getLogger("fleet.proxy")

DEFAULT_MAX_PENDING_PER_SOURCE = 256
DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 2048


# -- per-source caps ----------------------------------------------------------------------


class Slot:
    """One admitted connection's place in its source's counts. `trusted()` once
    it has sent a complete request head (or authenticated): it stops counting as
    pending. `release()` when it closes. Both are idempotent."""

    __slots__ = ("limiter", "source", "pending")

    def __init__(self, limiter: "SourceLimiter", source: str):
        self.limiter: SourceLimiter | None = limiter
        self.source = source
        self.pending = True

    def trusted(self) -> None:
        if self.pending and self.limiter is not None:
            self.pending = False
            self.limiter._drop(self.limiter.pending_counts, self.source)

    def release(self) -> None:
        limiter = self.limiter
        if limiter is not None:
            self.trusted()
            self.limiter = None
            limiter._drop(limiter.total_counts, self.source)


class SourceLimiter:
    """Counts, per source address, the connections that have not yet earned
    trust (a complete request head, or an accepted credential), and all open
    connections.

    `admit(source)` returns a `Slot`, or None when that source already holds
    `max_pending` untrusted connections or `max_total` connections in all:
    close the new connection then. Call `slot.trusted()` once the connection
    completes its head (or authenticates), and `slot.release()` when it closes.
    Refusals are logged at most once per source per `log_every` seconds.
    """

    def __init__(
        self,
        max_pending: int = DEFAULT_MAX_PENDING_PER_SOURCE,
        max_total: int = DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        log_every: float = 10.0,
        what: str = "proxy",
    ):
        self.max_pending = max_pending
        self.max_total = max_total
        self.pending_counts: dict[str, int] = {}
        self.total_counts: dict[str, int] = {}
        self.refused = 0
        self._logged: dict[str, float] = {}
        self.log_every = log_every
        self.what = what

    @property
    def max_per_source(self) -> int:  # the pending cap (the name the settings use)
        return self.max_pending

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, what: str = "proxy") -> "SourceLimiter":
        """Caps from FLEET_PROXY_MAX_PENDING_PER_SOURCE and FLEET_PROXY_MAX_CONNECTIONS_PER_SOURCE."""
        env = os.environ if env is None else env
        return cls(
            env_int(env, "FLEET_PROXY_MAX_PENDING_PER_SOURCE", DEFAULT_MAX_PENDING_PER_SOURCE),
            env_int(env, "FLEET_PROXY_MAX_CONNECTIONS_PER_SOURCE", DEFAULT_MAX_CONNECTIONS_PER_SOURCE),
            what=what,
        )

    def admit(self, source: str) -> Slot | None:
        pending = self.pending_counts.get(source, 0)
        total = self.total_counts.get(source, 0)
        if pending >= self.max_pending or total >= self.max_total:
            self.refused += 1
            self._log_refusal(source, pending, total)
            return None
        self.pending_counts[source] = pending + 1
        self.total_counts[source] = total + 1
        return Slot(self, source)

    def _log_refusal(self, source: str, pending: int, total: int) -> None:
        now = time.monotonic()
        if now - self._logged.get(source, -1e9) < self.log_every:
            return
        if len(self._logged) > 4096:
            self._logged.clear()
        self._logged[source] = now
        if pending >= self.max_pending:
            why = f"{pending} connections that sent no complete request (FLEET_PROXY_MAX_PENDING_PER_SOURCE)"
        else:
            why = f"{total} connections (FLEET_PROXY_MAX_CONNECTIONS_PER_SOURCE)"
        log.warning("%s: %s holds %s; closing its new ones (%d refused so far)", self.what, source, why, self.refused,
                    extra={"source": source})

    @staticmethod
    def _drop(counts: dict[str, int], source: str) -> None:
        n = counts.get(source, 0) - 1
        if n > 0:
            counts[source] = n
        else:
            counts.pop(source, None)

    def pending(self, source: str) -> int:
        return self.pending_counts.get(source, 0)

    def total(self, source: str) -> int:
        return self.total_counts.get(source, 0)


# -- descriptors --------------------------------------------------------------------------


def raise_nofile(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (or to `FLEET_PROXY_NOFILE`,
    a knob for tests that want to run out); returns the (soft, hard) now in force."""
    env = os.environ if env is None else env
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if env.get("FLEET_PROXY_NOFILE"):
        want = env_int(env, "FLEET_PROXY_NOFILE", hard, minimum=32)
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
    return _libc if isinstance(_libc, ctypes.CDLL) else None


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
