"""The credential store: grant secrets encrypted at rest, one file per grant.

Each secret is sealed with AES-256-GCM in `$FLEET_HOME/credentials/<name>.json`
(directory 0700, files 0600). The associated data binds the ciphertext to the
grant's name and metadata, so a file copied or renamed to another grant, or
edited in any byte, fails to open with an error naming it.

The 256-bit key lives in the OS keyring when the optional `keyring` package has
a usable backend (not a hard dependency; `FLEET_KEYRING=off` disables it), else
in `$FLEET_HOME/credentials.key` (0600; refused when group or others can read
it). Where the key went is decided once, when the first secret is stored, and
remembered (a keyring key leaves a `credentials/.key-in-keyring` marker), so a
later process without a keyring says so instead of minting a second key.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from reconciler.core.errors import FleetError
from reconciler.state.home import fleet_home, write_atomic

FORMAT = "fleet-grant/1"
KEYRING_SERVICE = "fleet-credentials"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_SECRET = 16 * 1024


class GrantMissing(FleetError):
    """A grant an agent needs has no stored secret."""


@dataclass(frozen=True)
class GrantInfo:
    """What `fleet grant list` shows: never the value."""

    name: str
    set_at: str
    source: str
    path: Path
    problem: str | None = None  # a file that cannot be read says why


def store_dir() -> Path:
    return fleet_home() / "credentials"


def key_file() -> Path:
    return fleet_home() / "credentials.key"


def _marker() -> Path:
    return store_dir() / ".key-in-keyring"


def grant_path(name: str) -> Path:
    return store_dir() / f"{check_name(name)}.json"


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise FleetError(
            f"grant names are lowercase DNS labels: a-z, 0-9 and '-', at most 63 characters (found {name!r})"
        )
    return name


def check_secret(secret: str) -> str:
    """The secret as it will be sent: surrounding whitespace removed; no control
    characters (a CR or LF would let a value smuggle extra HTTP headers)."""
    value = secret.strip()
    if not value:
        raise FleetError("the secret is empty; nothing stored")
    if len(value) > MAX_SECRET:
        raise FleetError(f"the secret is longer than {MAX_SECRET} characters; nothing stored")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise FleetError("the secret contains control characters (a line break?); nothing stored")
    return value


# -- the key -------------------------------------------------------------------


def _keyring():
    """The keyring module when it has a usable backend, else None."""
    if os.environ.get("FLEET_KEYRING", "").strip().lower() in ("0", "off", "no", "false"):
        return None
    try:
        import keyring  # optional
    except Exception:
        return None
    try:
        backend = keyring.get_keyring()
        if getattr(backend, "priority", 0) <= 0:  # fail / null backends
            return None
    except Exception:
        return None
    return keyring


def _keyring_user() -> str:
    return str(fleet_home().expanduser().resolve())


def _ensure_store_dir() -> Path:
    d = store_dir()
    d.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    d.mkdir(exist_ok=True, mode=0o700)
    if stat.S_IMODE(d.stat().st_mode) != 0o700:
        os.chmod(d, 0o700)
    return d


def _decode_key(raw: str, where: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise FleetError(f"{where} does not hold a 256-bit key; restore it (the stored grants cannot be read without it)")
    return key


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise FleetError(
            f"{path} is readable by other users (mode {mode:04o}); run `chmod 600 {path}` (fleet refuses a shared key)"
        )
    return _decode_key(path.read_text(), str(path))


def load_key(create: bool = False) -> bytes | None:
    """The store's key; with `create`, made on first use. None when there is
    no key yet (and so nothing stored)."""
    kf = key_file()
    if kf.exists():
        return _read_key_file(kf)
    if _marker().exists():
        kr = _keyring()
        if kr is None:
            raise FleetError(
                "the credential key is in the OS keyring, which is not available to this process "
                "(install/unlock it, or unset FLEET_KEYRING=off)"
            )
        try:
            raw = kr.get_password(KEYRING_SERVICE, _keyring_user())
        except Exception as exc:
            raise FleetError(f"cannot read the credential key from the OS keyring: {exc}") from None
        if not raw:
            raise FleetError(
                f"the credential key is missing from the OS keyring (service {KEYRING_SERVICE}); "
                f"the stored grants cannot be read: remove {store_dir()} and set them again"
            )
        return _decode_key(raw, f"the OS keyring entry {KEYRING_SERVICE}")
    if not create:
        return None
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only when sealing: keeps start-up light

    key = AESGCM.generate_key(bit_length=256)
    encoded = base64.b64encode(key).decode()
    _ensure_store_dir()
    kr = _keyring()
    if kr is not None:
        try:
            kr.set_password(KEYRING_SERVICE, _keyring_user(), encoded)
            _write_private(_marker(), b"the key of this store is in the OS keyring\n")
            return key
        except Exception:
            pass  # a backend that cannot store: fall back to the key file
    _write_private(kf, (encoded + "\n").encode(), exclusive=True)
    return _read_key_file(kf)


def _write_private(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Write `data` to `path` with mode 0600, atomically (temp file + rename).
    `exclusive`: never replace an existing file (a key minted concurrently wins)."""
    write_atomic(path, data, mode=0o600, exclusive=exclusive)


# -- sealing ---------------------------------------------------------------------


def _aad(name: str, set_at: str, source: str) -> bytes:
    return json.dumps({"format": FORMAT, "name": name, "set_at": set_at, "source": source}, sort_keys=True).encode()


def set_grant(name: str, secret: str, source: str = "stdin") -> GrantInfo:
    """Encrypt and store `secret` as grant `name` (replacing an earlier one)."""
    check_name(name)
    value = check_secret(secret)
    key = load_key(create=True)
    assert key is not None
    set_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    nonce = secrets.token_bytes(12)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealed = AESGCM(key).encrypt(nonce, value.encode(), _aad(name, set_at, source))
    doc = {
        "format": FORMAT,
        "name": name,
        "set_at": set_at,
        "source": source,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    _ensure_store_dir()
    path = grant_path(name)
    _write_private(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return GrantInfo(name, set_at, source, path)


def _read_doc(path: Path, name: str) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GrantMissing(f"grant '{name}' is not stored; set it with `fleet grant set {name}`") from None
    except OSError as exc:
        raise FleetError(f"cannot read {path}: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise FleetError(f"{path} is readable by other users (mode {mode:04o}); run `chmod 600 {path}`")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        doc = None
    fields = ("format", "name", "set_at", "source", "nonce", "ciphertext")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in fields):
        raise FleetError(f"{path} is corrupted (not a fleet grant file); set the grant again: fleet grant set {name}")
    if doc["format"] != FORMAT:
        raise FleetError(f"{path} has format {doc['format']!r}; this fleet reads {FORMAT}")
    if doc["name"] != name:
        raise FleetError(f"{path} holds grant '{doc['name']}', not '{name}' (renamed or copied?); set it again: fleet grant set {name}")
    return doc


def get_secret(name: str) -> str:
    """The clear secret of grant `name` (for the forward proxy only).
    GrantMissing when not stored; FleetError naming the file when it cannot be
    opened (corrupted, tampered, or sealed under another key)."""
    path = grant_path(name)
    doc = _read_doc(path, name)
    key = load_key()
    if key is None:
        raise FleetError(f"{path} exists but the store has no key ({key_file()} is missing); set the grant again")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        nonce = base64.b64decode(doc["nonce"], validate=True)
        sealed = base64.b64decode(doc["ciphertext"], validate=True)
        clear = AESGCM(key).decrypt(nonce, sealed, _aad(doc["name"], doc["set_at"], doc["source"]))
    except (ValueError, InvalidTag):
        raise FleetError(
            f"{path} cannot be decrypted: it was modified or sealed under another key; "
            f"set the grant again: fleet grant set {name}"
        ) from None
    return clear.decode()


def list_grants() -> list[GrantInfo]:
    d = store_dir()
    if not d.is_dir():
        return []
    out = []
    for path in sorted(d.glob("*.json")):
        name = path.stem
        if not _NAME.match(name):
            continue
        try:
            doc = _read_doc(path, name)
        except FleetError as exc:
            out.append(GrantInfo(name, "", "", path, problem=str(exc)))
            continue
        out.append(GrantInfo(name, doc["set_at"], doc["source"], path))
    return out


def stored_names() -> set[str]:
    d = store_dir()
    if not d.is_dir():
        return set()
    return {p.stem for p in d.glob("*.json") if _NAME.match(p.stem)}


def remove(name: str) -> bool:
    try:
        grant_path(name).unlink()
        return True
    except FileNotFoundError:
        return False


def missing(names: Iterable[str]) -> list[str]:
    have = stored_names()
    return sorted({n for n in names if n not in have})


def check_stored(desired) -> None:
    """Refuse, before anything changes, a fleet whose (enabled) agents name a
    grant that is not stored; the message lists them and how to set them."""
    users: dict[str, list[str]] = {}
    for agent in desired.agents.values():
        if not agent.enabled:
            continue
        for g in agent.grants:
            users.setdefault(g, []).append(agent.name)
    gone = missing(users)
    if not gone:
        return
    parts = [f"{g} (agent{'s' if len(users[g]) > 1 else ''} {', '.join(sorted(users[g]))})" for g in gone]
    how = ", ".join(f"`fleet grant set {g}`" + (" (or --from-gh)" if g == "github" else "") for g in gone)
    raise GrantMissing(f"grants not stored: {'; '.join(parts)}; set {'them' if len(gone) > 1 else 'it'} with {how}")
