"""net.envconfig: settings from the environment, one clear error per bad value."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from reconciler.core.errors import FleetError
from reconciler.net.envconfig import env_int, env_port, env_seconds, env_text, load_seconds
from reconciler.routing.config import ProxyConfig


def test_unset_or_empty_keeps_the_default():
    env = {"EMPTY": ""}
    assert env_int(env, "EMPTY", 7) == 7 and env_int(env, "UNSET", 7) == 7
    assert env_seconds(env, "EMPTY", 1.5) == 1.5
    assert env_port(env, "EMPTY") is None and env_port(env, "UNSET", 3128) == 3128
    assert env_text(env, "EMPTY") is None and env_text(env, "UNSET", "d") == "d"


def test_good_values():
    env = {"N": "12", "S": "0.25", "P": " 8443 ", "Z": "0", "T": "/etc/ca.pem"}
    assert env_int(env, "N", 1) == 12
    assert env_int(env, "Z", 5, minimum=0) == 0
    assert env_seconds(env, "S", 1.0) == 0.25
    assert env_port(env, "P") == 8443 and env_port(env, "Z") == 0
    assert env_text(env, "T") == "/etc/ca.pem"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: env_int({"N": "x"}, "N", 1), "N must be a whole number of at least 1 (found 'x')"),
        (lambda: env_int({"N": "0"}, "N", 1), "N must be a whole number of at least 1 (found '0')"),
        (lambda: env_int({"N": "99"}, "N", 1, maximum=10), "N must be a whole number between 1 and 10 (found '99')"),
        (lambda: env_seconds({"S": "0"}, "S", 1.0), "S must be a positive number of seconds (found '0')"),
        (lambda: env_seconds({"S": "-1"}, "S", 1.0), "S must be a positive number of seconds (found '-1')"),
        (lambda: env_seconds({"S": "inf"}, "S", 1.0), "S must be a positive number of seconds (found 'inf')"),
        (lambda: env_seconds({"S": "nan"}, "S", 1.0), "S must be a positive number of seconds (found 'nan')"),
        (lambda: env_seconds({"S": "soon"}, "S", 1.0), "S must be a positive number of seconds (found 'soon')"),
        (lambda: env_port({"P": "70000"}, "P"), "P: expected a port number (found '70000')"),
        (lambda: env_port({"P": "-1"}, "P"), "P: expected a port number (found '-1')"),
        (lambda: env_port({"P": "http"}, "P"), "P: expected a port number (found 'http')"),
    ],
)
def test_bad_values_name_the_variable_and_what_was_found(call, message):
    with pytest.raises(FleetError) as exc:
        call()
    assert str(exc.value) == message


def test_load_seconds_sets_only_what_is_set():
    @dataclass
    class Cfg:
        a: float = 1.0
        b: float = 2.0

    cfg = Cfg()
    load_seconds(cfg, {"A_SECS": "0.5"}, {"A_SECS": "a", "B_SECS": "b"})
    assert (cfg.a, cfg.b) == (0.5, 2.0)
    with pytest.raises(FleetError, match="B_SECS"):
        load_seconds(cfg, {"B_SECS": "0"}, {"A_SECS": "a", "B_SECS": "b"})


def test_proxy_config_from_env(monkeypatch):
    monkeypatch.setenv("FLEET_PROXY_RESPONSE_TIMEOUT", "2.5")
    monkeypatch.setenv("FLEET_PROXY_BODY_MIN_BYTES", "0")
    monkeypatch.setenv("FLEET_UPSTREAM_CA", "/tmp/ca.pem")
    cfg = ProxyConfig.from_env()
    assert (cfg.response_timeout, cfg.body_min_bytes, cfg.upstream_ca) == (2.5, 0, "/tmp/ca.pem")
    assert cfg.header_timeout == ProxyConfig().header_timeout
    monkeypatch.setenv("FLEET_PROXY_HEADER_TIMEOUT", "0")
    with pytest.raises(FleetError, match="FLEET_PROXY_HEADER_TIMEOUT must be a positive number of seconds"):
        ProxyConfig.from_env()
