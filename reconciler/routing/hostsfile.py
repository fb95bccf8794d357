"""`/etc/hosts` lines for a fleet's hostnames (`fleet proxy hosts`).

curl and browsers resolve every `*.localhost` name to the loopback address by
themselves. Programs that ask the C library (Python's `socket`, `requests`,
`urllib`, Node's `dns.lookup`, ...) get an answer only where the system's name
service knows the names: Debian's default `hosts: files mdns4_minimal [NOTFOUND=return] dns`
does not. These lines, appended to /etc/hosts, make each name resolve there.
"""

from __future__ import annotations

from reconciler.core.model import Desired

WILDCARD_V4 = ("", "0.0.0.0", "*")
WILDCARD_V6 = ("::", "[::]")


def address(bind: str) -> str:
    """Where a local client reaches a proxy bound to `bind`."""
    if bind in WILDCARD_V4:
        return "127.0.0.1"
    if bind in WILDCARD_V6:
        return "::1"
    return bind.strip("[]")


def hostnames(desired: Desired) -> list[str]:
    """Every name the proxy serves for this fleet: `<service>.<agent>.localhost`,
    and `<agent>.localhost` for an agent with exactly one port."""
    names: list[str] = []
    for name in sorted(desired.agents):
        agent = desired.agents[name]
        names.extend(f"{svc}.{name}.localhost" for svc in sorted(agent.ports))
        if len(agent.ports) == 1:
            names.append(f"{name}.localhost")
    return names


def hosts_lines(desired: Desired) -> list[str]:
    """One /etc/hosts line per hostname, each marked with the fleet's name so
    they can be removed again (`sed -i '/# fleet NAME$/d' /etc/hosts`)."""
    addr = address(desired.proxy.bind)
    return [f"{addr}\t{name}\t# fleet {desired.fleet}" for name in hostnames(desired)]
