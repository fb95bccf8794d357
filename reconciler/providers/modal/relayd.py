"""The grants relay of one Modal host: a long-lived process on this machine
(started by the plan's `relay start`, engine/handlers_relays.py; recorded in
state/relays.py) that keeps a `Backhaul` to the host's sandbox up, so that
connections its agents make to 127.0.0.1:SANDBOX_PORT in the sandbox come back
here and are dialled on to the grants forward proxy from this host's own
loopback address (`state.relays.source_for`), the identity its agents'
credentials are bound to. Only bytes cross: the token is added by the forward
proxy here.

The sandbox is looked up by name each time the exec is (re)started, so a host
replaced under it is found again. It reports `up` in its record; SIGTERM ends it.

    python -m reconciler.providers.modal.relayd FLEET HOST APP ENVIRONMENT UPSTREAM_HOST UPSTREAM_PORT

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from reconciler.providers.modal.backhaul import Backhaul, ExecChannel, ModalExec, Opener
from reconciler.state import relays


def _opener(app: str, host: str, environment: str | None) -> Opener:
    import modal

    client = modal.Client.from_env()

    async def open_exec(argv: list[str]) -> ExecChannel:
        sb: Any = await modal.Sandbox.from_name.aio(app, host, environment_name=environment, client=client)
        proc = await sb.exec.aio(*argv, text=False)
        return ModalExec(proc)

    return open_exec


async def serve(fleet: str, host: str, app: str, environment: str | None, upstream: tuple[str, int]) -> None:
    source = relays.source_for(fleet, host)
    bh = Backhaul(_opener(app, host, environment), upstream, relays.SANDBOX_PORT, source=source,
                  backoff=(0.5, 10.0))
    task = asyncio.ensure_future(bh.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    entry = {"pid": os.getpid(), "source": source, "port": relays.SANDBOX_PORT}
    up = None
    while not stop.is_set() and not task.done():
        if bh.up.is_set() != up:
            up = bh.up.is_set()
            relays.record(fleet, host, {**entry, "up": up, "error": bh.last_error})
            print(f"relay {fleet}/{host}: {'up' if up else 'down'} ({bh.last_error or 'starting'})", flush=True)
        with_timeout = asyncio.ensure_future(stop.wait())
        await asyncio.wait({with_timeout, task}, timeout=0.2)
        with_timeout.cancel()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main(argv: list[str]) -> int:
    fleet, host, app, environment, up_host, up_port = argv
    asyncio.run(serve(fleet, host, app, environment or None, (up_host, int(up_port))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
