"""The routing proxy under load and abuse: the real daemon process (so its own
memory and file descriptors can be read from /proc), real loopback backends.

- 200 concurrent connections are all served;
- clients trickling their request heads do not hold up anyone else;
- a target that never accepts gets a 502 within the connect timeout, and one
  that accepts but never answers does not stop other routes, nor leak its
  connections once the clients give up;
- a client that never finishes its head is closed after the head timeout, and
  500 of them leave the proxy's memory and descriptors where they were;
- 300 malformed or mutated request heads (a seeded fuzz pass) never crash it,
  and a normal request works after every batch.

Every loop is bounded in count and time; everything is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from pathlib import Path

import pytest

from reconciler.routing import daemon
from reconciler.routing.table import Route, set_fleet_routes
from tests.routing.helpers import Backend, free_port, request, wait_until

FUZZ_SEED = int(os.environ.get("FLEET_FUZZ_SEED", "4242"))


class WideBackend(Backend):
    """The routing tests' backend with a listen queue deep enough for 200 at once."""

    request_queue_size = 1024


class Proxy:
    def __init__(self, port: int, pid: int, home: Path):
        self.port, self.pid, self.home = port, pid, home

    def host(self, agent: str) -> str:
        return f"web.{agent}.localhost"

    def get(self, agent: str = "ok", path: str = "/") -> tuple[int, bytes]:
        status, _, body = request(self.host(agent), self.port, path)
        return status, body

    def status(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
        return out

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def log(self) -> str:
        try:
            return (self.home / "proxy.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def backend():
    made: list[Backend] = []

    def make(name: str) -> Backend:
        b = WideBackend(name)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def run_proxy(fleet_home, monkeypatch):
    """start(routes={agent: target}, header_timeout=, connect_timeout=) -> Proxy:
    the real proxy daemon under the test's FLEET_HOME, stopped afterwards."""

    def start(routes: dict[str, str], header_timeout: float = 1.0, connect_timeout: float = 1.0) -> Proxy:
        monkeypatch.setenv("FLEET_PROXY_HEADER_TIMEOUT", str(header_timeout))
        monkeypatch.setenv("FLEET_PROXY_CONNECT_TIMEOUT", str(connect_timeout))
        monkeypatch.setenv("FLEET_PROXY_RELOAD_INTERVAL", "0.05")
        port = free_port()
        set_fleet_routes("faults", [port], [Route(agent=a, service="web", container_port=3000, target=t) for a, t in routes.items()])
        p = Proxy(port, daemon.start()["pid"], fleet_home)
        wait_until(lambda: p.get()[0] == 200, what="the proxy serving the ok route")
        return p

    yield start
    daemon.stop()


def assert_still_serving(p: Proxy, context: str = "") -> None:
    assert p.alive(), f"{context}: the proxy died; log:\n{p.log()[-2000:]}"
    status, body = p.get("ok", "/after")
    assert status == 200 and b'"backend": "ok"' in body, (context, status, body[:200])


# -- load ------------------------------------------------------------------------------------


def test_200_concurrent_connections_are_all_served(run_proxy, backend):
    ok = backend("ok")
    p = run_proxy({"ok": ok.url})

    async def main() -> list[bytes]:
        conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", p.port) for _ in range(200)))
        for i, (_, w) in enumerate(conns):  # all 200 are open before any request is sent
            w.write(f"GET /c{i} HTTP/1.1\r\nHost: {p.host('ok')}:{p.port}\r\nConnection: close\r\n\r\n".encode())
        try:
            return await asyncio.gather(*(r.read() for r, _ in conns))
        finally:
            for _, w in conns:
                w.close()

    answers = asyncio.run(asyncio.wait_for(main(), 120))
    bad = [(i, a[:80]) for i, a in enumerate(answers) if not (a.startswith(b"HTTP/1.1 200") and f'"path": "/c{i}"'.encode() in a)]
    assert not bad, f"{len(bad)} of 200 not served: {bad[:5]}"
    assert_still_serving(p)


def test_slow_clients_do_not_block_others(run_proxy, backend):
    ok = backend("ok")
    p = run_proxy({"ok": ok.url}, header_timeout=30.0)
    stalled = threading.Event()
    release = threading.Event()
    results: dict[int, bytes] = {}
    ready = threading.Semaphore(0)

    def slow(i: int) -> None:
        head = f"GET /slow{i} HTTP/1.1\r\nHost: {p.host('ok')}:{p.port}\r\nX-Slow: {'y' * 20}\r\nConnection: close\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", p.port), timeout=30) as s:
            for b in head[:40]:  # trickle the first bytes ...
                s.sendall(bytes([b]))
                time.sleep(0.01)
            ready.release()
            release.wait(60)  # ... stall mid-head while the others are served ...
            s.sendall(head[40:])  # ... then finish
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            results[i] = data

    threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(20)]
    for t in threads:
        t.start()
    for _ in threads:
        assert ready.acquire(timeout=60), "slow clients did not start"
    stalled.set()
    try:
        for i in range(30):  # every slow client is mid-head right now
            status, body = p.get("ok", f"/fast{i}")
            assert status == 200 and f'"path": "/fast{i}"'.encode() in body
        assert not results, "a slow client finished before it was released"
    finally:
        release.set()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(20))
    for i, data in results.items():
        assert data.startswith(b"HTTP/1.1 200") and f'"path": "/slow{i}"'.encode() in data, data[:200]


# -- targets that hang -----------------------------------------------------------------------


class SilentTarget:
    """Accepts and reads, never answers; records when each connection is closed
    by the other side (the proxy)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.accepted = 0
        self.closed = 0
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.closed += 1

    def stop(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def silent():
    t = SilentTarget()
    yield t
    t.stop()


@pytest.fixture
def never_accepts():
    """A listening socket that never accepts, its one-slot queue already full:
    connecting to it hangs until the connector gives up."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    filler = socket.create_connection(srv.getsockname(), timeout=2)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    filler.close()
    srv.close()


def test_target_that_never_accepts_gets_502_within_the_connect_timeout(run_proxy, backend, never_accepts):
    ok = backend("ok")
    p = run_proxy({"ok": ok.url, "stuck": never_accepts}, connect_timeout=1.0)
    out: dict[str, object] = {}

    def stuck() -> None:
        out["answer"] = p.get("stuck")

    t = threading.Thread(target=stuck, daemon=True)
    t.start()
    for i in range(10):  # served while the stuck one waits for its connect
        assert p.get("ok", f"/meanwhile{i}")[0] == 200
    t.join(15)  # bounded by the client's own 10 s timeout; the proxy's is 1 s
    status, body = out["answer"]  # type: ignore[misc]
    assert status == 502 and b"stuck" in body and b"no answer within 1s" in body, body
    assert_still_serving(p)


def test_target_that_accepts_but_never_answers_does_not_stop_other_routes(run_proxy, backend, silent):
    ok = backend("ok")
    p = run_proxy({"ok": ok.url, "silent": silent.url})
    hung = []
    try:
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            s.sendall(f"GET /hang{i} HTTP/1.1\r\nHost: {p.host('silent')}\r\n\r\n".encode())
            hung.append(s)
        wait_until(lambda: silent.accepted == 10, what="the silent target to get all ten requests")
        for i in range(20):  # ten requests hang on one target; the others' routes are served
            status, body = p.get("ok", f"/meanwhile{i}")
            assert status == 200 and f'"path": "/meanwhile{i}"'.encode() in body
        assert_still_serving(p)
    finally:
        for s in hung:
            s.close()


_NO_RESPONSE_TIMEOUT = (
    "the proxy has no upstream response timeout (ProxyConfig has connect, head and keep-alive timeouts only), "
    "so a target that accepts and never answers holds its clients, and their upstream connections, "
    "for as long as the clients wait; reported to routing"
)


def test_target_that_never_answers_gets_504_within_a_response_timeout(run_proxy, backend, silent, monkeypatch):
    monkeypatch.setenv("FLEET_PROXY_RESPONSE_TIMEOUT", "2")  # the name such a setting would most likely take
    ok = backend("ok")
    p = run_proxy({"ok": ok.url, "silent": silent.url})
    with socket.create_connection(("127.0.0.1", p.port), timeout=4) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {p.host('silent')}\r\n\r\n".encode())
        data = s.recv(65536)  # socket.timeout when nothing comes
    assert data.startswith((b"HTTP/1.1 504", b"HTTP/1.1 502")), data[:200]


def test_clients_that_give_up_on_a_silent_target_release_its_connections(run_proxy, backend, silent):
    ok = backend("ok")
    p = run_proxy({"ok": ok.url, "silent": silent.url})
    base_fds = p.fds()
    for i in range(10):
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            s.sendall(f"GET /hang{i} HTTP/1.1\r\nHost: {p.host('silent')}\r\n\r\n".encode())
            wait_until(lambda: silent.accepted == i + 1, what="the request to reach the silent target")
    # every client has gone; the proxy must let go of the upstream connections
    wait_until(lambda: silent.closed == 10, timeout=3, what="the proxy closing its connections to the silent target")
    wait_until(lambda: p.fds() <= base_fds + 2, timeout=3, what=f"the proxy's descriptors back near {base_fds}")


# -- clients that never finish ---------------------------------------------------------------


def test_unfinished_heads_are_closed_after_the_head_timeout_with_bounded_memory(run_proxy, backend):
    ok = backend("ok")
    p = run_proxy({"ok": ok.url}, header_timeout=1.0)
    before = p.status()["VmRSS"]
    base_fds = p.fds()
    closed = 0
    for batch in range(5):
        socks = []
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            filler = "z" * (60_000 if i % 10 == 0 else 20)  # some heads are nearly at the size limit
            s.sendall(f"GET /never{batch}-{i} HTTP/1.1\r\nHost: {p.host('ok')}\r\nX-Never: {filler}".encode())
            socks.append(s)
        for s in socks:
            data = b""
            try:
                while chunk := s.recv(65536):  # 408 then close, within the head timeout (client bound: 10 s)
                    data += chunk
            finally:
                s.close()
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
            closed += 1
        assert_still_serving(p, f"after batch {batch + 1}")
    assert closed == 500
    wait_until(lambda: p.fds() <= base_fds + 2, what=f"the proxy's descriptors back near {base_fds} (now {p.fds()})")
    grown = p.status()["VmRSS"] - before
    assert grown < 50 * 1024, f"the proxy's RSS grew by {grown} KiB over 500 unfinished heads"
    print(f"RSS {before} -> {before + grown} KiB")


# -- malformed heads ---------------------------------------------------------------------------


def _mutations(rng: random.Random, host: str):
    def flip(h: bytes) -> bytes:
        b = bytearray(h)
        for _ in range(rng.randint(1, 5)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)

    def insert(h: bytes) -> bytes:
        i = rng.randrange(len(h) + 1)
        return h[:i] + rng.choice([b"\r", b"\n", b"\0", b"\xff", b" ", b":", b"\t", b"\r\n", b"\r\n\r\n"]) + h[i:]

    def truncate(h: bytes) -> bytes:
        return h[: rng.randrange(1, len(h))]

    def dup_line(h: bytes) -> bytes:
        lines = h.split(b"\r\n")
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return b"\r\n".join(lines)

    def drop_line(h: bytes) -> bytes:
        lines = h.split(b"\r\n")
        if len(lines) > 2:
            del lines[rng.randrange(1, len(lines) - 2)]
        return b"\r\n".join(lines)

    def method(h: bytes) -> bytes:
        return rng.choice([b"", b"get", b"G\x00T", b"CONNECT", b"X" * 300, b"PRI", b"\xfe\xff"]) + h[h.index(b" "):]

    def version(h: bytes) -> bytes:
        first, _, rest = h.partition(b"\r\n")
        v = rng.choice([b"HTTP/9.9", b"HTTP/1", b"HTTP/1.10", b"", b"HTTP/1.1 extra", b"http/1.1", b"HTTP/0.9"])
        return first.rsplit(b" ", 1)[0] + (b" " + v if v else b"") + b"\r\n" + rest

    def host_value(h: bytes) -> bytes:
        v = rng.choice([b"", b"evil.example", host.encode() + b":99999", host.upper().encode(), host.encode() + b".",
                        b"[::1]", b"\xc3\xa9.localhost", b"a" * 300 + b".localhost", b"localhost:0", b"@" + host.encode()])
        return h.replace(b"Host: " + host.encode(), b"Host: " + v, 1)

    def huge(h: bytes) -> bytes:
        return h.replace(b"\r\n\r\n", b"\r\nX-Huge: " + b"h" * rng.choice([70_000, 65_536, 100]) + b"\r\n\r\n", 1)

    def many(h: bytes) -> bytes:
        return h.replace(b"\r\n\r\n", b"".join(b"\r\nX-%d: v" % i for i in range(rng.choice([100, 3000]))) + b"\r\n\r\n", 1)

    def framing(h: bytes) -> bytes:
        extra = rng.choice([
            b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 1, 2", b"Content-Length: 5\r\nContent-Length: 6",
            b"Content-Length: 3\r\nTransfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0", b"Content-Length: 99999999999999999999",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", b"Connection: upgrade\r\nUpgrade: websocket",
        ])
        return h.replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n\r\n", 1)

    def fold(h: bytes) -> bytes:
        return h.replace(b"\r\n\r\n", b"\r\nX-Fold: a\r\n  folded\r\n\r\n", 1)

    def bare_lf(h: bytes) -> bytes:
        return h.replace(b"\r\n", b"\n")

    def absolute(h: bytes) -> bytes:
        return h.replace(b" / ", rng.choice([b" http://evil.example/ ", b" //x ", b" * ", b" " + b"/" * 9000 + b" ", b" /\x00 "]), 1)

    return [flip, insert, truncate, dup_line, drop_line, method, version, host_value, huge, many, framing, fold,
            bare_lf, absolute]


def fuzz_heads(seed: int, count: int, host: str, port: int) -> list[bytes]:
    rng = random.Random(seed)
    ops = _mutations(rng, host)
    bases = [
        f"GET / HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode(),
        f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".encode(),
        f"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode(),
        f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
        f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode(),
    ]
    heads = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.05:
            heads.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
        elif kind < 0.08:
            heads.append(b"\x16\x03\x01" + bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
        elif kind < 0.10:
            heads.append(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        else:
            h = rng.choice(bases)
            for op in rng.sample(ops, rng.randint(1, 3)):
                try:
                    h = op(h)
                except (ValueError, IndexError):
                    pass
            heads.append(h)
    return heads


async def _send(port: int, payload: bytes, timeout: float) -> bytes:
    """Send one payload on a fresh connection; return what comes back up to the
    end of a response head, EOF or `timeout`."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return b"<connect failed>"
    data = b""
    try:
        w.write(payload)
        deadline = asyncio.get_running_loop().time() + timeout
        while b"\r\n\r\n" not in data:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            chunk = await asyncio.wait_for(r.read(65536), left)
            if not chunk:
                break
            data += chunk
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        w.close()
    return data


def test_fuzzed_request_heads_never_crash_it(run_proxy, backend):
    ok = backend("ok")
    p = run_proxy({"ok": ok.url}, header_timeout=1.0)
    heads = fuzz_heads(FUZZ_SEED, 300, f"{p.host('ok')}:{p.port}", p.port)
    seen: dict[bytes, int] = {}
    for start in range(0, len(heads), 50):
        batch = heads[start:start + 50]

        async def run_batch() -> list[bytes]:
            return await asyncio.gather(*(_send(p.port, h, 5.0) for h in batch))

        answers = asyncio.run(asyncio.wait_for(run_batch(), 60))
        for head, answer in zip(batch, answers):
            assert answer != b"<connect failed>", f"connect failed for {head[:120]!r}"
            ok_answer = (not answer or answer.startswith(b"HTTP/1.")
                         or (head[:1] == b"\x16" and answer[:1] == b"\x15"))  # a TLS alert to TLS garbage
            assert ok_answer, f"{head[:120]!r} -> {answer[:120]!r}"
            seen[answer[:12]] = seen.get(answer[:12], 0) + 1
        assert_still_serving(p, f"after fuzz batch {start // 50 + 1} (seed {FUZZ_SEED})")
    log = p.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]
    assert len(seen) > 3, f"the fuzz pass hardly varied: {seen}"
    print(f"fuzz answers: {seen}")
