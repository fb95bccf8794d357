"""The forward proxy on 127.0.0.1 with real curl, real TLS and a fake upstream:
injection, placeholder replacement, keep-alive, chunked bodies, tunnels,
407, plain http, refusal of loopback, the network log."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest

from reconciler.grants import agents as agentmap
from reconciler.grants import netlog, store
from reconciler.grants.catalogue import rules_for
from reconciler.grants.forward import ForwardConfig, parse_resolve
from reconciler.grants.trust import ensure_bundle

from .helpers import ProxyThread, Upstream, host_peers

TOKEN = "ghp_TESTtoken0123456789abcdefABCDEF"


@pytest.fixture
def world(tmp_path, fleet_home, monkeypatch):
    monkeypatch.setenv("FLEET_KEYRING", "off")
    up = Upstream(tmp_path / "upstream-ca", names=("api.github.com", "github.com"))
    plain = Upstream(None, tls=False)
    store.set_grant("github", TOKEN)
    store.set_grant("anthropic", "sk-ant-OTHER-secret")
    bundle = ensure_bundle()
    cred_gh = agentmap.issue("f1", "coder", ["github"], rules_for(["github"]))
    cred_other = agentmap.issue("f1", "other", ["anthropic"], rules_for(["anthropic"]))
    # each credential is bound to a "container" whose address, here, is this machine's loopback
    agentmap.bind("f1", "coder", "c-coder")
    agentmap.bind("f1", "other", "c-other")
    peers = host_peers({"c-coder": {"127.0.0.1"}, "c-other": {"127.0.0.1"}})
    resolve = {
        "api.github.com": ("127.0.0.1", up.port),
        "github.com": ("127.0.0.1", up.port),
        "plain.test": ("127.0.0.1", plain.port),
    }
    proxy = ProxyThread(ForwardConfig(bind="127.0.0.1", port=0, resolve=resolve, upstream_ca=up.ca_file), peers).start()
    port = proxy.wait_listening()

    class W:
        pass

    w = W()
    w.up, w.plain, w.bundle, w.port, w.proxy = up, plain, str(bundle), port, proxy
    w.cred_gh, w.cred_other = cred_gh, cred_other
    yield w
    proxy.stop()
    up.stop()
    plain.stop()


def wait_log(fleet: str, agent: str, n: int = 1, timeout: float = 5.0) -> list[dict]:
    """The agent's network log once it has `n` entries (written as a request ends)."""
    deadline = time.monotonic() + timeout
    while True:
        log = netlog.read(fleet, agent)
        if len(log) >= n or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def curl(w, cred: str | None, *args: str) -> subprocess.CompletedProcess:
    proxy = f"http://fleet:{cred}@127.0.0.1:{w.port}" if cred else f"http://127.0.0.1:{w.port}"
    cmd = ["curl", "-sS", "--max-time", "20", "-x", proxy, "--cacert", w.bundle, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_injects_bearer_and_replaces_the_placeholder(world):
    r = curl(world, world.cred_gh, "-H", "Authorization: Bearer placeholder", "https://api.github.com/echo/user?x=1")
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    auths = [v for k, v in seen["headers"] if k.lower() == "authorization"]
    assert auths == [f"Bearer {TOKEN}"]  # the placeholder is gone, not doubled
    assert not any(k.lower().startswith("proxy-") for k, _ in seen["headers"])
    log = wait_log("f1", "coder")
    assert log[-1]["host"] == "api.github.com" and log[-1]["grant"] == "github" and log[-1]["status"] == 200
    assert log[-1]["path"] == "/echo/user"  # no query string
    assert TOKEN not in netlog.log_path("f1", "coder").read_text()


def test_git_host_gets_basic_auth_and_keep_alive_reuses_one_connection(world):
    r = curl(world, world.cred_gh, "https://github.com/x/y.git/info/refs?service=git-upload-pack",
             "https://github.com/echo/second", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "0"]  # the second request rode the same tunnel
    basic = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert world.up.headers_of(-2)["authorization"] == basic
    assert world.up.headers_of(-1)["authorization"] == basic


def test_chunked_upload_passes_through(world):
    data = "x" * 100_000
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-x", f"http://fleet:{world.cred_gh}@127.0.0.1:{world.port}", "--cacert", world.bundle,
         "-H", "Transfer-Encoding: chunked", "-T", "-", "https://api.github.com/echo/upload"],
        input=data, capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["method"] == "PUT" and seen["body_len"] == len(data)
    assert dict((k.lower(), v) for k, v in seen["headers"])["authorization"] == f"Bearer {TOKEN}"


def test_another_agents_grant_is_not_used_the_connect_is_tunnelled(world):
    # the agent holding only `anthropic` reaches api.github.com through a plain tunnel:
    # it meets the upstream's own certificate, which its bundle does not trust...
    r = curl(world, world.cred_other, "https://api.github.com/echo/user")
    assert r.returncode == 60, (r.returncode, r.stderr)
    # ...and when it trusts it, it sees that nothing was injected
    r = curl(world, world.cred_other, "--cacert", world.up.ca_file, "https://api.github.com/echo/user")
    assert r.returncode == 0, r.stderr
    assert "authorization" not in {k.lower() for k, _ in json.loads(r.stdout)["headers"]}
    log = wait_log("f1", "other", 2)
    assert log[-1]["mode"] == "tunnel" and log[-1]["grant"] is None


@pytest.mark.parametrize("cred", [None, "wrong-credential"])
def test_missing_or_bad_credential_gets_407(world, cred, caplog):
    r = curl(world, cred, "-o", "/dev/null", "-w", "%{http_code}", "http://plain.test/echo")
    assert r.stdout == "407"
    r = curl(world, cred, "-o", "/dev/null", "-w", "%{http_connect}", "https://api.github.com/echo")
    assert r.returncode != 0 and r.stdout == "407"
    assert world.up.requests == []


def test_plain_http_is_forwarded_without_credentials(world):
    r = curl(world, world.cred_gh, "http://plain.test/echo/page")
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["path"] == "/echo/page"
    assert not any(k.lower() in ("authorization", "proxy-authorization") for k, _ in seen["headers"])


def test_loopback_destinations_are_refused(world):
    r = curl(world, world.cred_gh, "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{world.plain.port}/echo")
    assert r.stdout == "403"
    r = curl(world, world.cred_gh, "-o", "/dev/null", "-w", "%{http_connect}", f"https://localhost:{world.up.port}/")
    assert r.stdout == "403"
    assert world.plain.requests == [] and world.up.requests == []


def test_a_revoked_credential_stops_working(world):
    agentmap.forget("f1", "coder")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = curl(world, world.cred_gh, "-o", "/dev/null", "-w", "%{http_code}", "http://plain.test/echo")
        if r.stdout == "407":
            break
        time.sleep(0.1)
    assert r.stdout == "407"


def test_a_grant_removed_from_the_store_gets_a_clear_502(world):
    store.remove("github")
    r = curl(world, world.cred_gh, "https://api.github.com/echo")
    assert "grant github is not stored" in r.stdout
    assert world.up.requests == []


def test_parse_resolve():
    assert parse_resolve("a.test=127.0.0.1:8443, b.test=[::1]:9, c.test=10.0.0.1,d.test=::1") == {
        "a.test": ("127.0.0.1", 8443), "b.test": ("::1", 9), "c.test": ("10.0.0.1", None), "d.test": ("::1", None),
    }


def test_per_source_cap_on_unauthenticated_connections(tmp_path, fleet_home, monkeypatch):
    """Connections that never present a credential count against their source's
    cap: past it the proxy drops that source's new ones, and a request with a
    valid credential from another source still goes through."""
    import socket

    monkeypatch.setenv("FLEET_KEYRING", "off")
    monkeypatch.setenv("FLEET_PROXY_MAX_PENDING_PER_SOURCE", "5")
    up = Upstream(tmp_path / "upstream-ca", names=("api.github.com",))
    store.set_grant("github", TOKEN)
    bundle = ensure_bundle()
    cred = agentmap.issue("f1", "coder", ["github"], rules_for(["github"]))
    agentmap.bind("f1", "coder", "c-coder")
    peers = host_peers({"c-coder": {"127.0.0.1"}})
    proxy = ProxyThread(ForwardConfig(bind="0.0.0.0", port=0, resolve={"api.github.com": ("127.0.0.1", up.port)},
                                      upstream_ca=up.ca_file), peers).start()
    port = proxy.wait_listening()
    silent = []
    try:
        for _ in range(12):  # from 127.0.0.2: half a head each, never finished
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.2", port))
            s.sendall(b"CONNECT api.github.com:443 HTTP/1.1\r\n")
            silent.append(s)
        dropped = 0
        for s in silent:
            s.settimeout(1)
            try:
                if s.recv(1) == b"":
                    dropped += 1
            except ConnectionResetError:
                dropped += 1
            except socket.timeout:
                pass
        assert dropped == 7, f"expected 7 of 12 dropped past the cap of 5, got {dropped}"
        assert proxy.proxy.pending.refused >= 7
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "-x", f"http://fleet:{cred}@127.0.0.1:{port}",
                            "--cacert", str(bundle), "https://api.github.com/echo/x"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr  # the owner, from its own address, is unaffected
    finally:
        for s in silent:
            s.close()
        proxy.stop()
        up.stop()


# -- smuggling through the real proxy -----------------------------------------------------------


def _through(w, cred: str, request: bytes, tls_host: str | None) -> bytes:
    """Send raw `request` through the proxy (inside an intercepted CONNECT to
    `tls_host`, or as a plain http request) and return all it answers."""
    import socket
    import ssl

    sock = socket.create_connection(("127.0.0.1", w.port), timeout=10)
    auth = base64.b64encode(f"fleet:{cred}".encode()).decode()
    try:
        if tls_host is not None:
            sock.sendall(f"CONNECT {tls_host}:443 HTTP/1.1\r\nHost: {tls_host}:443\r\n"
                         f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
            got = b""
            while b"\r\n\r\n" not in got:
                got += sock.recv(4096)
            assert got.startswith(b"HTTP/1.1 200"), got
            sock = ssl.create_default_context(cafile=w.bundle).wrap_socket(sock, server_hostname=tls_host)
        else:
            request = request.replace(b"\r\n", f"\r\nProxy-Authorization: Basic {auth}\r\n".encode(), 1)
        sock.sendall(request)
        out = b""
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionError, OSError):
                break
            if not data:
                break
            out += data
        return out
    finally:
        sock.close()


SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: api.github.com\r\n\r\n"


@pytest.mark.parametrize("request_bytes, why", [
    (b"POST /echo/a HTTP/1.1\r\nHost: api.github.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, "Content-Length with Transfer-Encoding"),
    (b"POST /echo/a HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\n\r\n" + SMUGGLED, "a bare LF ending the last chunk"),
    (b"POST /echo/a HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED, "no CRLF after a chunk's data"),
    (b"POST /echo/a HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\nhello\r\n0\r\n\r\n" + SMUGGLED, "a bare LF after a chunk size"),
    (b"POST /echo/a HTTP/1.1\r\nHost: api.github.com\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n"
     b"abcd" + SMUGGLED, "two Content-Lengths"),
    (b"POST /echo/a HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\n Transfer-Encoding: x\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, "obs-fold"),
])
def test_smuggling_attempts_get_400_and_nothing_reaches_the_upstream(world, request_bytes, why):
    answer = _through(world, world.cred_gh, request_bytes, "api.github.com")
    assert answer.startswith(b"HTTP/1.1 400 "), (why, answer[:200])
    assert answer.count(b"HTTP/1.1 ") == 1, why  # one answer, the connection closed after it
    time.sleep(0.3)
    assert world.up.requests == [], why  # no request, smuggled or not, was completed upstream


def test_smuggling_in_plain_http_gets_400_before_any_upstream(world):
    request = (b"POST http://plain.test/echo/a HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 4\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED)
    answer = _through(world, world.cred_gh, request, None)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:200]
    time.sleep(0.3)
    assert world.plain.requests == []
    log = wait_log("f1", "coder")
    assert log[-1]["status"] == 400 and "Transfer-Encoding" in log[-1]["error"]


def test_a_well_formed_chunked_request_after_the_checks_still_passes(world):
    request = (b"POST /echo/a HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
    answer = _through(world, world.cred_gh, request, "api.github.com")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert world.up.requests[-1]["body_len"] == 5



def test_a_request_body_cut_short_gets_400_without_waiting_for_the_upstream(world):
    import socket

    auth = base64.b64encode(f"fleet:{world.cred_gh}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", world.port), timeout=10)  # far below the idle timeout (75 s)
    sock.sendall(f"POST http://plain.test/echo/a HTTP/1.1\r\nHost: plain.test\r\nProxy-Authorization: Basic {auth}\r\n"
                 f"Content-Length: 100\r\n\r\nonly this much".encode())
    sock.shutdown(socket.SHUT_WR)  # the client is done: the body is 86 bytes short
    answer = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"cut short" in answer, answer[:200]
    # the body streams: the upstream got what the client sent, then its connection closed
    # (this fake upstream records a short read; it never sees more than the 14 bytes)
    assert all(r["body_len"] <= 14 for r in world.plain.requests)
