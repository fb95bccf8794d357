"""A `fleet apply --watch` subprocess for tests: its output read line by line by
a reader thread (bounded buffer, bounded waits), plain text (NO_COLOR, no TTY)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

MAX_LINES = 20_000


class WatchProcess:
    def __init__(self, path: Path, *args: str, env: dict | None = None, cwd: Path | None = None):
        full_env = dict(os.environ)
        full_env.update({"NO_COLOR": "1", "COLUMNS": "200"})
        full_env.pop("PYTHONUNBUFFERED", None)  # the watcher must flush by itself
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--watch", str(path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            cwd=cwd or path.parent, env=full_env, start_new_session=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                if len(self.lines) < MAX_LINES:
                    self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        """The number of lines so far: pass it as `after` to wait for new ones."""
        with self._cond:
            return len(self.lines)

    def text(self, after: int = 0) -> str:
        with self._cond:
            return "\n".join(self.lines[after:])

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> int:
        """Wait for a line matching `pattern` (a regex) at index >= `after`;
        returns its index. Fails with the output when it does not come."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.lines)):
                    if rx.search(self.lines[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(left, 0.5))
        pytest.fail(f"no line matching {pattern!r} within {timeout:g}s (exit code {self.proc.poll()}); output:\n{self.text()}")

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the watcher did not exit within {timeout:g}s; output:\n{self.text()}")
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        """Stop it whatever happened: SIGINT, then SIGKILL after a while."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if os.environ.get("FLEET_TEST_ECHO"):  # debugging: show what the watcher said
            print(f"--- watcher {self.pid} (exit {self.proc.returncode}) ---\n{self.text()}")
