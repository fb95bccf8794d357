"""Handlers of `relay start` and `relay stop` (core/effects.py): the grants relay
of a Modal host, a process on this machine (providers/modal/relayd.py) recorded
under $FLEET_HOME/relays/<fleet>/ (state/relays.py). Starting one makes sure the
forward proxy runs, stops any relay left for the host, starts a new one in its
own session (it outlives the command) and waits until its backhaul is up.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

import sys

from reconciler.core.errors import ProviderError
from reconciler.core.outcome import Outcome
from reconciler.core.plan import RelayStart, RelayStop
from reconciler.engine.handlers import handles
from reconciler.engine.handlers_grants import ensure_forward
from reconciler.engine.state import Context
from reconciler.state import relays

UP_TIMEOUT = 60.0


@handles(RelayStart)
def _start(ctx: Context, a: RelayStart) -> Outcome:
    from reconciler.grants.forward import read_state
    from reconciler.providers.modal.tags import app_name

    port = ensure_forward()
    bind = str((read_state() or {}).get("bind") or "127.0.0.1")  # where the forward proxy listens
    opts = a.desired_host.modal
    relays.stop(ctx.fleet, a.name)
    argv = [sys.executable, "-m", relays.MARKER, ctx.fleet, a.name, app_name(ctx.fleet, opts),
            (opts.environment if opts else None) or "", bind, str(port)]
    pid = relays.spawn(ctx.fleet, a.name, argv)
    why = relays.wait_up(ctx.fleet, a.name, pid, UP_TIMEOUT)
    if why is not None:
        raise ProviderError(f"relay {a.name}", why)
    return Outcome(id=str(pid))


@handles(RelayStop)
def _stop(ctx: Context, a: RelayStop) -> Outcome:
    relays.stop(ctx.fleet, a.name)
    return Outcome()
