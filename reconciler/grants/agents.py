"""Per-agent proxy credentials: who is calling the forward proxy, and what it holds.

Every agent with grants reaches the forward proxy with its own random
credential (in its `HTTPS_PROXY` URL). This map, `$FLEET_HOME/grants/agents.json`
(0600), records for each fleet/agent the SHA-256 of that credential (never the
credential itself, never a secret) and the catalogue rules of the agent's
grants. The proxy looks the caller up by the hash of what it presents, so an
agent can only ever use the rules recorded for itself.

A credential is issued just before the agent's container is created, bound
to that container (`bind`, its Docker id) once it exists and before it starts,
and replaced when the container is created again (a replaced container's old
credential stops working). A Modal agent's credential is bound when issued to
`loopback:<ip>`, the address its host's relay dials from (peers.loopback_peer).
The forward proxy accepts a credential only from an
address of the container it is bound to (see `peers`); an unbound one (an entry
written by an older fleet, or a create that failed) is refused. It is not part
of the agent's spec, so it never shows in plans or spec hashes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from reconciler.core.errors import FleetError
from reconciler.state.home import fleet_home, write_atomic
from reconciler.grants.catalogue import Rule

VERSION = 1
PROXY_USER = "fleet"  # the user part of the proxy URL; the credential is the password


def grants_dir() -> Path:
    d = fleet_home() / "grants"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def map_path() -> Path:
    return fleet_home() / "grants" / "agents.json"


def digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


@dataclass(frozen=True)
class AgentEntry:
    fleet: str
    agent: str
    grants: tuple[str, ...]
    rules: tuple[Rule, ...]
    container: str | None = None  # the Docker id of the container it was issued to, or loopback:<ip> (peers.loopback_peer)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(grants_dir() / "agents.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read() -> dict:
    try:
        data = json.loads(map_path().read_text())
    except FileNotFoundError:
        return {"version": VERSION, "agents": {}}
    except (OSError, ValueError) as exc:
        raise FleetError(f"{map_path()} is unreadable ({exc}); delete it and run `fleet apply` again") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("agents"), dict):
        raise FleetError(f"{map_path()} is not a fleet agent map; delete it and run `fleet apply` again")
    return data


def _write(data: dict) -> None:
    write_atomic(map_path(), json.dumps(data, indent=1, sort_keys=True) + "\n")


def issue(fleet: str, agent: str, grants: Iterable[str], rules: Iterable[Rule]) -> str:
    """A fresh credential for `fleet/agent`, replacing any earlier one; returns
    the credential (it goes into the container's proxy URL, nowhere else)."""
    credential = secrets.token_urlsafe(24)
    entry = {
        "fleet": fleet,
        "agent": agent,
        "credential_sha256": digest(credential),
        "grants": list(grants),
        "rules": [r.as_dict() for r in rules],
        "issued_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    with _locked():
        data = _read()
        data["agents"][f"{fleet}/{agent}"] = entry
        _write(data)
    return credential


def bind(fleet: str, agent: str, container_id: str) -> bool:
    """Bind `fleet/agent`'s current credential to the container just created
    for it (call before starting it); False when it holds no credential."""
    if not map_path().exists():
        return False
    with _locked():
        data = _read()
        entry = data["agents"].get(f"{fleet}/{agent}")
        if entry is None:
            return False
        entry["container"] = container_id
        _write(data)
        return True


def forget(fleet: str, agent: str) -> bool:
    """Revoke `fleet/agent`'s credential (it has no grants any more, or is gone)."""
    if not map_path().exists():
        return False
    with _locked():
        data = _read()
        if data["agents"].pop(f"{fleet}/{agent}", None) is None:
            return False
        _write(data)
        return True


def prune(fleet: str, keep: Iterable[str]) -> list[str]:
    """Revoke the credentials of `fleet`'s agents not in `keep`; returns them."""
    if not map_path().exists():
        return []
    keep = set(keep)
    with _locked():
        data = _read()
        gone = [k for k, v in data["agents"].items() if v.get("fleet") == fleet and v.get("agent") not in keep]
        for k in gone:
            del data["agents"][k]
        if gone:
            _write(data)
    return sorted(k.split("/", 1)[1] for k in gone)


def entries() -> dict[str, AgentEntry]:
    """credential sha256 -> entry, for the proxy."""
    out: dict[str, AgentEntry] = {}
    for v in _read()["agents"].values():
        try:
            out[v["credential_sha256"]] = AgentEntry(
                fleet=v["fleet"],
                agent=v["agent"],
                grants=tuple(v.get("grants", ())),
                rules=tuple(Rule.from_dict(r) for r in v.get("rules", ())),
                container=v.get("container") if isinstance(v.get("container"), str) else None,
            )
        except (KeyError, TypeError):
            continue
    return out


def holders(fleet: str) -> tuple[str, ...]:
    """The agents of `fleet` that hold a credential (observation: reconcile
    decides what to issue and revoke from this)."""
    if not map_path().exists():
        return ()
    names = {v.get("agent") for v in _read()["agents"].values() if isinstance(v, dict) and v.get("fleet") == fleet}
    return tuple(sorted(n for n in names if isinstance(n, str)))
