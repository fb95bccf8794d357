"""Child processes that do not outlive the process that started them.

`die_with_parent()` is a preexec function (for `subprocess.Popen` and asyncio's
subprocesses) that has the Linux kernel send the child SIGTERM when its parent
dies, even by SIGKILL: the ssh of an engine connection or of the proxy
daemon's engine links never outlives fleet. None elsewhere (atexit and signal
handlers then do the cleaning). The parent is the *thread* that forked the
child, so fork from a thread that lives as long as the process.

Part of layer `net`: the stdlib only.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable


def die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before that: nobody to signal us
            os._exit(1)

    return preexec
