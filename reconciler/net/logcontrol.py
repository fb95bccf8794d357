"""The proxy process's log: rate-limited per source and message, rotated by size.

`proxy.log` is written by the one proxy process (routing proxy and grants
forward proxy). A hostile client can make it write a line per request (407,
400, 502 ...), so:

- `RateLimitFilter`: lines are grouped by their message template and, when the
  record carries one (`extra={"source": ip}`), by source; a group writes at most
  `burst` lines per `window` seconds. What it holds back is counted and said in
  one line when the group next writes (or at the next window), as
  `suppressed N similar lines: <template>`.
- `SizeRotatingHandler`: the file is rotated while the proxy runs once it
  passes `max_bytes` (`proxy.log.1`, `proxy.log.2`; older ones are dropped), and
  the process's stdout/stderr follow the new file, so stray output never
  writes to a rotated-away file.

Settings: `FLEET_PROXY_LOG_MAX_BYTES` (default 10 MiB), `FLEET_PROXY_LOG_BURST`
(default 20 lines per group per `FLEET_PROXY_LOG_WINDOW`, default 60 s).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Mapping

from reconciler.net.envconfig import env_int

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 2
DEFAULT_BURST = 20
DEFAULT_WINDOW = 60.0
MAX_GROUPS = 4096


class RateLimitFilter(logging.Filter):
    def __init__(self, burst: int = DEFAULT_BURST, window: float = DEFAULT_WINDOW, clock=time.monotonic):
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        # group -> [window start, lines written in it, lines suppressed]
        self.groups: dict[tuple, list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg), getattr(record, "source", None))
        now = self.clock()
        g = self.groups.get(key)
        if g is None:
            if len(self.groups) >= MAX_GROUPS:
                self._prune(now)
            self.groups[key] = [now, 1, 0]
            return True
        if now - g[0] >= self.window:
            suppressed = g[2]
            g[0], g[1], g[2] = now, 1, 0
            if suppressed:
                record.msg = f"(suppressed {suppressed} similar lines in the last {self.window:g}s) {record.msg}"
            return True
        if g[1] < self.burst:
            g[1] += 1
            return True
        if g[1] == self.burst:
            # one more line says that the rest of this window is held back
            g[1] += 1
            record.msg = f"(further similar lines suppressed for up to {self.window:g}s) {record.msg}"
            return True
        g[2] += 1
        return False

    def flush(self, now: float | None = None) -> list[tuple[str, int, str, int]]:
        """Groups whose window has ended with lines held back: (logger, level,
        template, count) each, so the count is said even when the flood stopped."""
        now = self.clock() if now is None else now
        out = []
        for key, g in self.groups.items():
            if g[2] and now - g[0] >= self.window:
                out.append((key[0], key[1], key[2], g[2]))
                g[2] = 0
        return out

    def _prune(self, now: float) -> None:
        """Forget finished windows; with a flood of distinct groups, forget all."""
        for key in [k for k, g in self.groups.items() if now - g[0] >= self.window]:
            del self.groups[key]
        if len(self.groups) >= MAX_GROUPS:
            self.groups.clear()


class SizeRotatingHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose rollover also points fds 1 and 2 at the new file."""

    def __init__(self, path: Path, max_bytes: int, backups: int, redirect_std: bool):
        self.redirect_std = redirect_std
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=False)
        self._point_std()

    def doRollover(self) -> None:
        super().doRollover()
        self._point_std()

    def _point_std(self) -> None:
        if not self.redirect_std or self.stream is None:
            return
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            fd = self.stream.fileno()
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        except (OSError, ValueError):
            pass

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a full disk or no descriptors left: lose the line, never the proxy


def install(path: Path, env: Mapping[str, str] | None = None, redirect_std: bool = True, level: int = logging.INFO) -> logging.Handler:
    """Send the root logger to `path`, rotated by size and rate-limited."""
    env = os.environ if env is None else env
    handler = SizeRotatingHandler(
        path, env_int(env, "FLEET_PROXY_LOG_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=1024), DEFAULT_BACKUPS, redirect_std
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    add_rate_limit(handler, env)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def say_suppressed() -> int:
    """Log one summary line per group whose window ended with lines held back
    (call now and then); returns how many were logged."""
    n = 0
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, RateLimitFilter):
                for name, level, template, count in f.flush():
                    logging.getLogger(name).log(
                        level, "suppressed %d similar lines in the last %gs: %s", count, f.window, template
                    )
                    n += 1
    return n


def add_rate_limit(handler: logging.Handler, env: Mapping[str, str] | None = None) -> RateLimitFilter:
    env = os.environ if env is None else env
    window = DEFAULT_WINDOW
    if env.get("FLEET_PROXY_LOG_WINDOW"):
        window = float(env_int(env, "FLEET_PROXY_LOG_WINDOW", int(DEFAULT_WINDOW)))
    f = RateLimitFilter(env_int(env, "FLEET_PROXY_LOG_BURST", DEFAULT_BURST), window)
    handler.addFilter(f)
    return f
