"""`engine:` values: what parses, and one clear line for what a tired user mistypes."""

from __future__ import annotations

import json

import pytest

from reconciler.providers.docker.connect import EngineAddress, parse_engine

NO_ENV: dict[str, str] = {"HOME": "/nonexistent"}


@pytest.mark.parametrize("value, scheme, user, host, port, url", [
    ("ssh://big-box", "ssh", None, "big-box", None, "ssh://big-box"),
    ("ssh://dev@big-box", "ssh", "dev", "big-box", None, "ssh://dev@big-box"),
    ("ssh://dev@big-box.example.com:2222", "ssh", "dev", "big-box.example.com", 2222, "ssh://dev@big-box.example.com:2222"),
    ("ssh://dev@10.0.0.5/", "ssh", "dev", "10.0.0.5", None, "ssh://dev@10.0.0.5"),
    ("SSH://Big-Box", "ssh", None, "big-box", None, "ssh://big-box"),
    ("ssh://[fd00::2]:22", "ssh", None, "fd00::2", 22, "ssh://[fd00::2]:22"),
    ("tcp://10.0.0.5:2375", "tcp", None, "10.0.0.5", 2375, "tcp://10.0.0.5:2375"),
    ("tcp://docker.internal", "tcp", None, "docker.internal", 2375, "tcp://docker.internal:2375"),
])
def test_good_network_addresses(value, scheme, user, host, port, url):
    a = parse_engine(value, env=NO_ENV)
    assert isinstance(a, EngineAddress), a
    assert (a.scheme, a.user, a.host, a.port, a.url, a.value, a.tls) == (scheme, user, host, port, url, value, None)


def test_ssh_arguments_for_the_system_ssh():
    a = parse_engine("ssh://dev@big-box:2222", env=NO_ENV)
    assert isinstance(a, EngineAddress)
    assert a.ssh_args() == ["-l", "dev", "-p", "2222", "big-box"]
    b = parse_engine("ssh://alias", env=NO_ENV)
    assert isinstance(b, EngineAddress) and b.ssh_args() == ["alias"]  # ~/.ssh/config decides the rest


def test_unix_socket():
    a = parse_engine("unix:///var/run//docker.sock", env=NO_ENV)
    assert isinstance(a, EngineAddress)
    assert (a.scheme, a.path, a.url) == ("unix", "/var/run/docker.sock", "unix:///var/run/docker.sock")


@pytest.mark.parametrize("value, says", [
    ("ssh:/host", "'ssh:' must be followed by '//'"),
    ("ssh:host", "'ssh:' must be followed by '//'"),
    ("tcp:/10.0.0.5:2375", "'tcp:' must be followed by '//'"),
    ("ssh://", "no host after '//'"),
    ("ssh:///", "no host after '//'"),
    ("ssh://dev@", "no host after '//'"),
    ("ssh://dev@:22", "no host after '//'"),
    ("", "is empty"),
    ("   ", "is empty"),
    (" ssh://big-box", "no spaces"),
    ("ssh://big-box ", "no spaces"),
    ("ssh://big box", "no spaces"),
    ("ssh://big-box\t", "no spaces"),
    ("http://big-box:2375", "http:// is not a Docker engine address; write tcp://big-box:2375"),
    ("https://big-box:2376/", "https:// is not a Docker engine address; write tcp://big-box:2376"),
    ("ssh://big-box:99999", "the port 99999 is out of range (1-65535)"),
    ("ssh://big-box:0", "the port 0 is out of range"),
    ("ssh://big-box:ssh", "the port 'ssh' is not a number"),
    ("ssh://big-box:", "':' without a port"),
    ("ssh://big-box:-1", "is not a number"),
    ("tcp://10.0.0.5:2375:1", "more than one ':'"),
    ("ssh://[fd00::2", "closing ']'"),
    ("ssh://dev:secret@big-box", "no password"),
    ("ssh://big-box/home/dev", "nothing may follow the host"),
    ("ssh://big-box?x=1", "no '?' or '#'"),
    ("ssh://big_box!", "'big_box!' is not a host name"),
    ("ssh://-oProxyCommand=x", "is not a host name"),
    ("ssh://-l@big-box", "is not a user name"),
    ("ssh://big-box,other", "is not a host name"),
    ("tcp://dev@10.0.0.5:2375", "tcp:// takes no user name"),
    ("tcp://", "no host after '//'"),
    ("unix://", "no socket path"),
    ("unix:///", "no socket path"),
    ("unix://var/run/docker.sock", "must be absolute: unix:///var/run/docker.sock"),
    ("/var/run/docker.sock", "a socket is written unix:///var/run/docker.sock"),
    ("docker.sock", "a socket is written unix:///docker.sock"),
    ("dev@big-box", "a host over SSH is written ssh://dev@big-box"),
    ("big-box:2375", "an engine over TCP is written tcp://big-box:2375"),
    ("npipe:////./pipe/docker_engine", "Windows named pipes are not supported"),
    ("ftp://big-box", "unknown scheme ftp://"),
    ("fd://", "unknown scheme fd://"),
    ("no-such-context", "no docker context of that name (known: none"),
    ("big-box.example.com", "for a host write ssh://big-box.example.com"),
    ("-big", "not an engine address"),
    ("ssh://big-box\x00", "control characters"),
])
def test_bad_values_get_one_clear_line(value, says):
    msg = parse_engine(value, env=NO_ENV)
    assert isinstance(msg, str), f"{value!r} was accepted: {msg}"
    assert says in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


@pytest.mark.parametrize("value", [None, 22, ["ssh://x"], {"host": "x"}, True])
def test_not_a_string(value):
    msg = parse_engine(value, env=NO_ENV)
    assert isinstance(msg, str) and msg.startswith("must be a string")


def test_tcp_tls_from_the_environment_like_the_docker_cli(tmp_path):
    for n in ("ca", "cert", "key"):
        (tmp_path / f"{n}.pem").write_text("x")
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
    a = parse_engine("tcp://big-box", env=env)
    assert isinstance(a, EngineAddress)
    assert a.port == 2376  # the TLS port by default
    assert a.tls is not None and a.tls.verify
    assert (a.tls.ca, a.tls.cert, a.tls.key) == tuple(str(tmp_path / f"{n}.pem") for n in ("ca", "cert", "key"))
    # DOCKER_TLS alone: encrypted, not verified
    b = parse_engine("tcp://big-box:2376", env={"DOCKER_TLS": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert isinstance(b, EngineAddress) and b.tls is not None and not b.tls.verify
    # DOCKER_CERT_PATH alone does not turn TLS on (the CLI's rule)
    c = parse_engine("tcp://big-box:2375", env={"DOCKER_CERT_PATH": str(tmp_path)})
    assert isinstance(c, EngineAddress) and c.tls is None


def test_tcp_tls_with_missing_files_is_a_clear_error(tmp_path):
    msg = parse_engine("tcp://big-box", env={"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert isinstance(msg, str) and f"{tmp_path}/ca.pem is missing" in msg
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "cert.pem").write_text("x")
    msg = parse_engine("tcp://big-box", env={"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert isinstance(msg, str) and "cert.pem exists without" in msg and "key.pem" in msg


def _context(config, name: str, host: str, skip_tls: bool = False, tls_files: bool = False) -> None:
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({
        "Name": name, "Metadata": {"Description": ""},
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip_tls}},
    }))
    if tls_files:
        tls = config / "contexts" / "tls" / digest / "docker"
        tls.mkdir(parents=True)
        for n in ("ca", "cert", "key"):
            (tls / f"{n}.pem").write_text("x")


def test_docker_context_names_resolve_to_their_endpoint(tmp_path):
    _context(tmp_path, "big-box", "ssh://dev@big-box:2222")
    _context(tmp_path, "ci", "tcp://ci.example.com:2376", tls_files=True)
    _context(tmp_path, "broken", "ssh:/oops")
    env = {"DOCKER_CONFIG": str(tmp_path)}
    a = parse_engine("big-box", env=env)
    assert isinstance(a, EngineAddress)
    assert (a.scheme, a.user, a.host, a.port, a.context, a.value) == ("ssh", "dev", "big-box", 2222, "big-box", "big-box")
    b = parse_engine("ci", env=env)
    assert isinstance(b, EngineAddress) and b.scheme == "tcp" and b.tls is not None and b.tls.verify
    assert b.tls.ca is not None and b.tls.ca.endswith("/docker/ca.pem")
    msg = parse_engine("broken", env=env)
    assert isinstance(msg, str) and msg.startswith("context broken: ssh:/oops: 'ssh:' must be followed by '//'")
    msg = parse_engine("nope", env=env)
    assert isinstance(msg, str) and "no docker context of that name (known: big-box, broken, ci;" in msg


def test_the_default_context_is_the_environment():
    a = parse_engine("default", env={"HOME": "/nonexistent"})
    assert isinstance(a, EngineAddress) and a.url == "unix:///var/run/docker.sock" and a.context == "default"
    b = parse_engine("default", env={"HOME": "/nonexistent", "DOCKER_HOST": "ssh://dev@big-box"})
    assert isinstance(b, EngineAddress) and (b.scheme, b.host, b.user) == ("ssh", "big-box", "dev")
