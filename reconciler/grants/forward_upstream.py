"""Connections from the grants forward proxy to upstreams: names resolved
through `FLEET_RESOLVE` first, then DNS, once; every resolved address vetted
(`destinations`) and connected to as vetted; TLS verified against the system
CAs plus `FLEET_UPSTREAM_CA` (`net.tls.UpstreamTLS`, as the routing proxy);
failures turned into the answer the client gets."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

from reconciler.grants import agents as agentmap
from reconciler.grants import destinations, netlog
from reconciler.grants.forward_config import ForwardConfig
from reconciler.grants.forward_wire import Answer, answer
from reconciler.net.tls import UpstreamTLS

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Refused(Exception):
    """A destination the proxy will not connect to."""


class Upstreams:
    """Opens verified connections to upstreams for one proxy."""

    def __init__(self, config: ForwardConfig) -> None:
        self.config = config
        self.tls = UpstreamTLS(config.upstream_ca)

    async def addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        mapped = self.config.resolve.get(host)
        if mapped is not None:
            return [(mapped[0], mapped[1] or port)]
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.config.connect_timeout
        )
        out: list[tuple[str, int]] = []
        local = destinations.local_addresses()
        for _family, _, _, _, sockaddr in infos:
            addr = str(sockaddr[0])
            why = destinations.refusal(addr, local)
            ip = destinations.parse_ip(addr)
            if why is None and ip is not None and ip.is_private:
                # a private address the cached scan does not know may be a bridge made
                # since (another fleet's network, a second engine): look again, now
                local = destinations.local_addresses(max_age=0)
                why = destinations.refusal(addr, local)
            if why:  # one bad address refuses the name: what is vetted is what is connected to
                literal = destinations.parse_ip(host)
                said = host if literal is not None and literal == destinations.parse_ip(addr) \
                    else f"{host} (resolves to {addr})"
                raise Refused(f"{said} is {why}; fleet-proxy does not connect to this machine")
            if (addr, port) not in out:
                out.append((addr, port))
        if not out:
            raise OSError(errno.EHOSTUNREACH, f"{host} has no address")
        return out

    async def open(self, host: str, port: int, tls: bool) -> Streams:
        last: Exception | None = None
        for addr, aport in await self.addresses(host, port):
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        addr, aport, ssl=self.tls.context() if tls else None, server_hostname=host if tls else None,
                        limit=self.config.max_header_bytes,
                    ),
                    self.config.connect_timeout,
                )
            except ssl.SSLCertVerificationError as exc:
                raise Answer(502, f"fleet-proxy: the certificate of {host} is not trusted ({exc.verify_message})") from None
            except (OSError, asyncio.TimeoutError) as exc:
                last = exc
        assert last is not None
        raise last

    async def open_or_answer(self, host: str, port: int, tls: bool, entry: agentmap.AgentEntry, record: dict,
                             writer: asyncio.StreamWriter) -> Streams | None:
        """The upstream streams; or, when it cannot be reached, the failure
        logged for the agent and answered to its client, and None."""
        try:
            return await self.open(host, port, tls=tls)
        except (Refused, Answer, OSError, asyncio.TimeoutError) as exc:
            status, text = failure(exc, host, port)
            netlog.record(entry.fleet, entry.agent, status=status, error=text, **record)
            await answer(writer, status, text)
            return None


def failure(exc: Exception, host: str, port: int) -> tuple[int, str]:
    if isinstance(exc, Refused):
        return 403, f"fleet-proxy: {exc}"
    if isinstance(exc, Answer):
        return exc.status, str(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return 504, f"fleet-proxy: connecting to {host}:{port} timed out"
    return 502, f"fleet-proxy: cannot connect to {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
