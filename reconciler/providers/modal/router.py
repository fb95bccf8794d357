"""The port router inside a Modal host: the sandbox's one tunnel.

Why: a sandbox's tunnels are fixed when it is created, so a tunnel per agent
port would mean replacing the sandbox (restarting every neighbour) whenever an
agent with a port joins or leaves. Instead every sandbox is created with one
encrypted tunnel to MODAL_ROUTER_PORT, where this router listens. The routing
proxy on the user's machine sends each request through that tunnel with an
`X-Fleet-Port: N` header; the router takes the connection's first request head,
removes the header and splices the connection to 127.0.0.1:N, both ways, byte
for byte (so WebSocket and SSE pass). The connection stays bound to that port:
the proxy pools connections per (tunnel, port); later requests on it reach the
same port (their header, identical, is passed along).

The router forwards only to ports that agents on this host declare: each
agent's `/run/fleet/<agent>/ports` (written when the agent is prepared, removed
with it, see sh.prepare), read again for every connection, so joins and
leaves need no signal. Anything else gets 403: the tunnel is public, it must
not open the sandbox's loopback. A request without the header gets 400.

It needs python3 in the host image (started in the background with `Sandbox.exec`,
so it does not keep an idle sandbox busy); `ensure` restarts it if it died.
"""

from __future__ import annotations

from reconciler.core.model import MODAL_ROUTER_PORT
from reconciler.providers.modal.sh import ROOT

ROUTER_PATH = f"{ROOT}/router.py"
PID_PATH = f"{ROOT}/router.pid"

ROUTER = r'''# fleet port router: python3 /run/fleet/router.py PORT
import asyncio, glob, os, re, sys

ROOT = "/run/fleet"
HEADER = re.compile(rb"\r\nx-fleet-port:[ \t]*([^\r\n]*)", re.I)
MAX_HEAD = 65536


def allowed():
    out = set()
    for path in glob.glob(ROOT + "/*/ports"):
        try:
            with open(path) as f:
                out.update(int(w) for w in f.read().split() if w.isdigit())
        except OSError:
            pass
    return out


async def refuse(writer, status, text):
    body = ("fleet router: " + text + "\n").encode()
    writer.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 % (status.encode(), len(body)) + body)
    try:
        await writer.drain()
    finally:
        writer.close()


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


async def serve(reader, writer):
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        writer.close()
        return
    found = HEADER.findall(head)
    if len(found) != 1 or not found[0].strip().isdigit():
        return await refuse(writer, "400 Bad Request", "exactly one X-Fleet-Port header expected")
    port = int(found[0].strip())
    if port not in allowed():
        return await refuse(writer, "403 Forbidden", "port %d is not declared by an agent on this host" % port)
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return await refuse(writer, "502 Bad Gateway", "nothing listens on port %d" % port)
    up_w.write(HEADER.sub(b"", head, count=1))
    await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
    for w in (writer, up_w):
        w.close()


async def main(port):
    server = await asyncio.start_server(serve, "0.0.0.0", port, limit=MAX_HEAD)
    tmp = ROOT + "/router.pid.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, ROOT + "/router.pid")
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
'''

# Start the router unless it runs; wait until it listens. Exit 127: no python3.
ENSURE = r"""
r=/run/fleet
alive() { [ -f $r/router.pid ] && p=$(cat $r/router.pid) && [ -d /proc/$p ] && grep -q router.py /proc/$p/cmdline 2>/dev/null; }
mkdir -p $r && cat >$r/router.py.$$ || exit 1
# a new sandbox (maybe restored from a snapshot): no agent has joined it yet
[ "$2" = fresh ] && rm -f $r/*/ports
alive && { rm -f $r/router.py.$$; exit 0; }
command -v python3 >/dev/null 2>&1 || { rm -f $r/router.py.$$; echo "no python3 in the host image" >&2; exit 127; }
mv -f $r/router.py.$$ $r/router.py || exit 1
rm -f $r/router.pid
(setsid nohup python3 $r/router.py "$1" >$r/router.log 2>&1 </dev/null &)
i=0
while [ $i -lt 100 ]; do alive && exit 0; sleep 0.1; i=$((i+1)); done
echo "the port router did not start: $(tail -c 300 $r/router.log 2>/dev/null)" >&2
exit 1
"""


def ensure_argv(fresh: bool = False) -> list[str]:
    """The exec that (re)starts the router; ROUTER goes on its stdin. `fresh`
    (a sandbox just created): forget port lists a snapshot may have carried."""
    return ["sh", "-c", ENSURE, "fleet-router", str(MODAL_ROUTER_PORT), "fresh" if fresh else ""]


__all__ = ["ENSURE", "MODAL_ROUTER_PORT", "ROUTER", "ROUTER_PATH", "ensure_argv"]
