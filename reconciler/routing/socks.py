"""A SOCKS5 CONNECT (RFC 1928, no authentication) on a non-blocking socket.

The routing proxy reaches agents on a remote engine through the dynamic
forward (`ssh -D 127.0.0.1:PORT`) of that engine's link (routing/links.py):
`socks_connect` returns a connected socket to `host:port` as the remote machine
sees it, ready to hand to `loop.create_connection(sock=...)` (TLS on top, if
the target is https).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

_REPLIES = {
    1: "general SOCKS server failure", 2: "connection not allowed by ruleset", 3: "network unreachable",
    4: "host unreachable", 5: "connection refused", 6: "TTL expired", 7: "command not supported",
    8: "address type not supported",
}


class SocksError(OSError):
    """The SOCKS server refused or failed the connect (the message says why)."""


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise SocksError("the SOCKS server closed the connection")
        data += chunk
    return data


def _address(host: str) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if len(name) > 255:
            raise SocksError(f"host name too long for SOCKS: {host}")
        return b"\x03" + bytes([len(name)]) + name
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


async def socks_connect(proxy: tuple[str, int], host: str, port: int) -> socket.socket:
    """A socket connected to `host:port` through the SOCKS5 server at `proxy`.
    Raises OSError (SocksError for what the server answered). The caller bounds
    the time (asyncio.wait_for)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, proxy)
        await loop.sock_sendall(sock, b"\x05\x01\x00")  # version 5, one method: no authentication
        ver, method = await _recv_exact(loop, sock, 2)
        if ver != 5 or method != 0:
            raise SocksError("the SOCKS server wants authentication")
        await loop.sock_sendall(sock, b"\x05\x01\x00" + _address(host) + struct.pack(">H", port))
        ver, rep, _rsv, atyp = await _recv_exact(loop, sock, 4)
        if ver != 5:
            raise SocksError("not a SOCKS5 answer")
        if rep != 0:
            raise SocksError(_REPLIES.get(rep, f"SOCKS error {rep}"))
        if atyp == 1:
            await _recv_exact(loop, sock, 4 + 2)
        elif atyp == 4:
            await _recv_exact(loop, sock, 16 + 2)
        elif atyp == 3:
            (n,) = await _recv_exact(loop, sock, 1)
            await _recv_exact(loop, sock, n + 2)
        else:
            raise SocksError("bad SOCKS address type")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except BaseException:
        sock.close()
        raise
