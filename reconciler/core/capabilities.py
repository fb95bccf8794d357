"""Linux capabilities an agent may ask back (`capabilities: [NET_RAW]`).

fleet runs every container without CAP_NET_RAW (no raw sockets: no sniffing or
ARP spoofing of a neighbour's traffic) and with no-new-privileges. A name listed
here is added back to the container that asks for it, and the plan says so.
Names are those of capabilities(7) without the CAP_ prefix, as Docker writes them.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic_core import PydanticCustomError

KNOWN: tuple[str, ...] = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
    "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG",
    "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE",
    "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
)

# What Docker would give a container by default and fleet takes away.
DROPPED: tuple[str, ...] = ("NET_RAW",)


def suggestion(word: str) -> str | None:
    """The known name closest to `word` (case and a CAP_ prefix forgiven)."""
    norm = word.strip().upper()
    if norm.startswith("CAP_"):
        norm = norm[4:]
    if norm in KNOWN:
        return norm
    match = difflib.get_close_matches(norm, KNOWN, n=1, cutoff=0.7)
    return match[0] if match else None


def validate(value: Any) -> Any:
    """Pydantic before-validator: a known name passes, anything else fails with a hint.
    Non-strings pass through to the type check."""
    if not isinstance(value, str) or value in KNOWN:
        return value
    hint = suggestion(value)
    hint_text = f"; did you mean '{hint}'?" if hint else " (names as in capabilities(7), without CAP_, e.g. NET_RAW)"
    raise PydanticCustomError("capability", "unknown Linux capability{hint}", {"hint": hint_text})
