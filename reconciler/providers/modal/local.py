"""What the Modal provider keeps on this machine, under `$FLEET_HOME`.

Two kinds of file, neither of them state fleet depends on for correctness:

- `modal/<fleet>.json`, a cache: the apps this fleet's hosts live in (name,
  environment, id), each sandbox's tunnel URLs (fixed when it is created), and
  the resolved spec behind each spec hash (so a plan can name the changed keys).
  Losing it costs a few extra calls on the next observation, never a wrong plan.
- `snapshots/<fleet>/<host>.json`: the filesystem snapshot taken before fleet
  terminated a host's sandbox, so `restore: latest` can start from it and a
  person can find the image id of work that would otherwise be gone.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from reconciler.state.home import ensure_dir, fleet_home, write_atomic

_lock = threading.Lock()
MAX_SPECS = 200


def _cache_path(fleet: str) -> Path:
    return fleet_home() / "modal" / f"{fleet}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    ensure_dir(path.parent)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o644)


def _update(fleet: str, fn) -> None:
    with _lock:
        path = _cache_path(fleet)
        data = _read(path)
        before = json.dumps(data, sort_keys=True)
        fn(data)
        if json.dumps(data, sort_keys=True) != before:
            _write(path, data)


# -- apps ---------------------------------------------------------------------


def app_key(server: str, environment: str | None, app: str) -> str:
    return f"{server}|{environment or ''}|{app}"


def apps(fleet: str, server: str) -> list[tuple[str, str | None, str | None]]:
    """(app name, environment, cached app id) of every app this fleet used on `server`."""
    out = []
    for key, app_id in sorted(_read(_cache_path(fleet)).get("apps", {}).items()):
        srv, _, rest = key.partition("|")
        env, _, name = rest.partition("|")
        if srv == server:
            out.append((name, env or None, app_id or None))
    return out


def remember_app(fleet: str, server: str, environment: str | None, app: str, app_id: str | None) -> None:
    def fn(data: dict) -> None:
        data.setdefault("apps", {})[app_key(server, environment, app)] = app_id

    _update(fleet, fn)


# -- tunnels ------------------------------------------------------------------


def tunnels(fleet: str, sandbox_id: str) -> dict[int, str] | None:
    raw = _read(_cache_path(fleet)).get("tunnels", {}).get(sandbox_id)
    if not isinstance(raw, dict):
        return None
    return {int(k): str(v) for k, v in raw.items()}


def remember_tunnels(fleet: str, sandbox_id: str, urls: dict[int, str]) -> None:
    def fn(data: dict) -> None:
        data.setdefault("tunnels", {})[sandbox_id] = {str(k): v for k, v in sorted(urls.items())}

    _update(fleet, fn)


def forget_sandbox(fleet: str, sandbox_id: str) -> None:
    _update(fleet, lambda data: data.get("tunnels", {}).pop(sandbox_id, None))


# -- specs --------------------------------------------------------------------


def spec(fleet: str, spec_hash: str) -> dict[str, Any]:
    found = _read(_cache_path(fleet)).get("specs", {}).get(spec_hash)
    return found.get("spec", {}) if isinstance(found, dict) else {}


def remember_spec(fleet: str, spec_hash: str, spec_data: dict[str, Any]) -> None:
    def fn(data: dict) -> None:
        specs = data.setdefault("specs", {})
        specs[spec_hash] = {"spec": spec_data, "at": int(time.time())}
        if len(specs) > MAX_SPECS:
            for old in sorted(specs, key=lambda h: specs[h].get("at", 0))[: len(specs) - MAX_SPECS]:
                del specs[old]

    _update(fleet, fn)


# -- snapshots ----------------------------------------------------------------


def snapshot_path(fleet: str, host: str) -> Path:
    return fleet_home() / "snapshots" / fleet / f"{host}.json"


def latest_snapshot(fleet: str, host: str) -> dict[str, Any] | None:
    data = _read(snapshot_path(fleet, host))
    return data if data.get("image_id") else None


def snapshots(fleet: str) -> dict[str, str]:
    """Host name -> image id of its newest recorded snapshot."""
    out: dict[str, str] = {}
    try:
        files = sorted((fleet_home() / "snapshots" / fleet).glob("*.json"))
    except OSError:
        return out
    for path in files:
        data = _read(path)
        if data.get("image_id"):
            out[path.stem] = str(data["image_id"])
    return out


def record_snapshot(fleet: str, host: str, image_id: str, sandbox_id: str, app: str) -> Path:
    """Keep the newest snapshot first, the ones before it in `previous`."""
    path = snapshot_path(fleet, host)
    with _lock:
        old = _read(path)
        previous = list(old.get("previous", []))
        if old.get("image_id"):
            previous.insert(0, {k: old[k] for k in ("image_id", "sandbox_id", "taken_at") if k in old})
        _write(path, {
            "host": host, "app": app, "image_id": image_id, "sandbox_id": sandbox_id,
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "previous": previous[:20],
        })
    return path
