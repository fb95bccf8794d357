"""The sandbox side of the backhaul (spec: `backhaul_proto`), as a self-contained
python3 script run with `python3 -u -c RELAY PORT PIDFILE IDLE` by a long-lived
exec: stdlib only, nothing from fleet, so any image with python3 runs it.

It listens on 127.0.0.1:PORT, sends HELLO on stdout once it listens, announces
each accepted connection with OPEN and carries its bytes in DATA frames within
the credit the local side grants. It exits when its stdin ends or stays silent
for IDLE seconds (the local side pings every few seconds), and a new relay
ends the one recorded in PIDFILE first (the local side starts a new exec when it
lost the old one, which may still hold the port). Nothing secret is in it.
"""

from __future__ import annotations

RELAY = r'''# fleet backhaul relay: python3 -u -c RELAY PORT PIDFILE IDLE
import asyncio, os, signal, socket, struct, sys, time

HELLO, OPEN, DATA, WINDOW, FIN, RST, PING, PONG = range(1, 9)
MAGIC = b"fleet-backhaul/1"
HEADER = struct.Struct(">BII")
MAX_PAYLOAD = 65536
INITIAL_WINDOW = 1024 * 1024
MAX_WINDOW = 1 << 30


def frame(t, sid, payload=b""):
    return HEADER.pack(t, sid, len(payload)) + payload


class Stream:
    def __init__(self, sid, reader, writer):
        self.sid, self.reader, self.writer = sid, reader, writer
        self.credit = INITIAL_WINDOW          # what we may still send
        self.allowed = INITIAL_WINDOW         # what the local side may still send us
        self.more = asyncio.Event()
        self.more.set()
        self.inbox = asyncio.Queue()          # DATA bytes, b"" = FIN, None = RST
        self.sent_fin = self.got_fin = self.eof_written = self.dead = False


class Relay:
    def __init__(self, out):
        self.out = out
        self.streams = {}
        self.next_sid = 1
        self.last_heard = time.monotonic()

    async def send(self, data):
        self.out.write(data)
        await self.out.drain()

    def forget(self, st):
        if self.streams.get(st.sid) is st and (st.dead or (st.sent_fin and st.got_fin)):
            del self.streams[st.sid]
            st.writer.close()

    async def accept(self, reader, writer):
        sid = self.next_sid
        self.next_sid += 1
        st = Stream(sid, reader, writer)
        self.streams[sid] = st
        await self.send(frame(OPEN, sid))
        asyncio.ensure_future(self.down(st))
        await self.up(st)

    async def up(self, st):
        # client socket -> DATA frames, within credit
        try:
            while not st.dead:
                await st.more.wait()
                if st.dead:
                    return
                data = await st.reader.read(min(st.credit, MAX_PAYLOAD))
                if st.dead:
                    return
                if not data:
                    st.sent_fin = True
                    await self.send(frame(FIN, st.sid))
                    self.forget(st)
                    return
                st.credit -= len(data)
                if st.credit <= 0:
                    st.more.clear()
                await self.send(frame(DATA, st.sid, data))
        except (ConnectionError, OSError):
            self.reset(st, b"connection error in the sandbox")

    async def down(self, st):
        # DATA from the local side -> client socket, then grant the credit back
        owed = 0
        try:
            while True:
                data = await st.inbox.get()
                if data is None:
                    return
                if data == b"":
                    if st.writer.can_write_eof():
                        st.writer.write_eof()
                    st.eof_written = True
                    self.forget(st)
                    return
                st.writer.write(data)
                await st.writer.drain()
                owed += len(data)
                if owed >= INITIAL_WINDOW // 4 or st.inbox.empty():
                    st.allowed += owed
                    await self.send(frame(WINDOW, st.sid, struct.pack(">I", owed)))
                    owed = 0
        except (ConnectionError, OSError):
            self.reset(st, b"connection error in the sandbox")

    def reset(self, st, reason=b""):
        if st.dead:
            return
        st.dead = True
        st.more.set()
        st.inbox.put_nowait(None)
        self.streams.pop(st.sid, None)
        try:
            st.writer.transport.abort()
        except Exception:
            pass
        if reason is not None:
            self.out.write(frame(RST, st.sid, reason[:1024]))

    def handle(self, t, sid, payload):
        if t == PING:
            self.out.write(frame(PONG, 0, payload))
            return
        st = self.streams.get(sid)
        if st is None:
            return  # ended here already
        if t == DATA:
            if st.got_fin or len(payload) > st.allowed:
                self.reset(st, b"DATA beyond the window or after FIN")
                return
            st.allowed -= len(payload)
            st.inbox.put_nowait(payload)
        elif t == WINDOW:
            st.credit += struct.unpack(">I", payload)[0] if len(payload) == 4 else 0
            if st.credit > MAX_WINDOW:
                self.reset(st, b"window too large")
                return
            if st.credit > 0:
                st.more.set()
        elif t == FIN:
            if not st.got_fin:
                st.got_fin = True
                st.inbox.put_nowait(b"")
        elif t == RST:
            self.reset(st, None)

    async def read_stdin(self, reader):
        buf = bytearray()
        while True:
            data = await reader.read(1 << 18)
            if not data:
                return "stdin ended"
            self.last_heard = time.monotonic()
            buf += data
            while len(buf) >= HEADER.size:
                t, sid, n = HEADER.unpack_from(buf)
                if n > MAX_PAYLOAD or not 1 <= t <= 8:
                    return "protocol error from the local side"
                if len(buf) < HEADER.size + n:
                    break
                payload = bytes(buf[HEADER.size:HEADER.size + n])
                del buf[:HEADER.size + n]
                self.handle(t, sid, payload)
            await self.out.drain()

    async def watchdog(self, idle):
        while True:
            await asyncio.sleep(min(idle, 5))
            if time.monotonic() - self.last_heard > idle:
                return "the local side is silent"


def take_over(pidfile):
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip() or 0)
        if pid and pid != os.getpid():
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"fleet backhaul relay" in f.read():
                    os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    tmp = "%s.%d" % (pidfile, os.getpid())
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, pidfile)


async def main(port, pidfile, idle):
    loop = asyncio.get_running_loop()
    take_over(pidfile)
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    tr, pr = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    out = asyncio.StreamWriter(tr, pr, None, loop)
    relay = Relay(out)
    server = None
    for _ in range(50):  # the relay we replaced may still hold the port for a moment
        try:
            server = await asyncio.start_server(relay.accept, "127.0.0.1", port, reuse_address=True)
            break
        except OSError as e:
            err = e
            await asyncio.sleep(0.1)
    if server is None:
        sys.stderr.write("fleet backhaul relay: cannot listen on 127.0.0.1:%d: %s\n" % (port, err))
        return 2
    await relay.send(frame(HELLO, 0, MAGIC))
    tasks = [asyncio.ensure_future(relay.read_stdin(reader)), asyncio.ensure_future(relay.watchdog(idle))]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    for st in list(relay.streams.values()):
        relay.reset(st, None)
    sys.stderr.write("fleet backhaul relay: %s\n" % next(iter(done)).result())
    return 0


signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
sys.exit(asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))))
'''

IDLE = 60.0


def relay_argv(port: int, pidfile: str, idle: float = IDLE) -> list[str]:
    """The exec that runs the relay; `-u` keeps stdout unbuffered. The first
    line of RELAY ('fleet backhaul relay') is in its cmdline, which is how a new
    relay recognises an old one in `pidfile` before ending it."""
    return ["python3", "-u", "-c", RELAY, str(port), pidfile, str(idle)]


__all__ = ["IDLE", "RELAY", "relay_argv"]
