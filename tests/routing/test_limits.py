"""The proxy process's defences, as units: per-source caps, the log's rate limit
and rotation, memory trimming, descriptor limits."""

from __future__ import annotations

import logging
import resource

import pytest

from reconciler.core.errors import FleetError
from reconciler.net import limits
from reconciler.net import logcontrol
from reconciler.net.limits import MemoryTrimmer, SourceLimiter
from reconciler.net.logcontrol import RateLimitFilter, SizeRotatingHandler
from reconciler.routing.proxy import ProxyConfig


def test_source_limiter_caps_each_source_alone():
    lim = SourceLimiter(max_pending=3, max_total=5)
    slots = [lim.admit("10.0.0.9") for _ in range(3)]
    assert all(slots)
    assert lim.admit("10.0.0.9") is None  # over the pending cap: refused
    assert lim.admit("10.0.0.10") is not None  # another source is not
    slots[0].trusted()
    slots[0].trusted()  # idempotent: frees one pending place, not two
    assert (lim.pending("10.0.0.9"), lim.total("10.0.0.9")) == (2, 3)
    slots.append(lim.admit("10.0.0.9"))
    assert slots[-1] is not None and lim.admit("10.0.0.9") is None
    for s in slots:
        s.trusted()
    slots.append(lim.admit("10.0.0.9"))  # total 5 now: the total cap holds
    assert lim.admit("10.0.0.9") is None
    for s in slots:
        s.release()
        s.release()
    assert (lim.pending("10.0.0.9"), lim.total("10.0.0.9")) == (0, 0)
    assert lim.pending_counts == {"10.0.0.10": 1}


def test_source_limiter_settings(monkeypatch):
    assert SourceLimiter.from_env({}).max_per_source == limits.DEFAULT_MAX_PENDING_PER_SOURCE
    assert SourceLimiter.from_env({"FLEET_PROXY_MAX_PENDING_PER_SOURCE": "7"}).max_per_source == 7
    assert SourceLimiter.from_env({"FLEET_PROXY_MAX_CONNECTIONS_PER_SOURCE": "70"}).max_total == 70
    for bad in ("0", "-1", "many"):
        with pytest.raises(FleetError, match="FLEET_PROXY_MAX_PENDING_PER_SOURCE"):
            SourceLimiter.from_env({"FLEET_PROXY_MAX_PENDING_PER_SOURCE": bad})
    monkeypatch.setenv("FLEET_PROXY_BODY_TIMEOUT", "2.5")
    monkeypatch.setenv("FLEET_PROXY_BODY_MIN_BYTES", "10")
    monkeypatch.setenv("FLEET_PROXY_MAX_PENDING_PER_SOURCE", "9")
    cfg = ProxyConfig.from_env()
    assert (cfg.body_timeout, cfg.body_min_bytes, cfg.max_pending_per_source) == (2.5, 10, 9)
    monkeypatch.setenv("FLEET_PROXY_BODY_TIMEOUT", "0")
    with pytest.raises(FleetError, match="FLEET_PROXY_BODY_TIMEOUT"):
        ProxyConfig.from_env()


def _record(msg: str, *args, source: str | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("fleet.proxy", logging.WARNING, __file__, 1, msg, args, None)
    if source is not None:
        rec.source = source
    return rec


def test_rate_limit_writes_a_burst_then_one_line_then_a_summary():
    now = [0.0]
    f = RateLimitFilter(burst=5, window=60, clock=lambda: now[0])
    template = "grants: 407 %s %s from %s (%s)"  # the forward proxy's line
    written = [r for r in (_record(template, "GET", f"http://x/{i}", "172.17.0.9", "no credential") for i in range(3000)) if f.filter(r)]
    assert len(written) == 6  # five lines, then one saying the rest is held back
    assert "suppressed" in written[-1].getMessage()
    # another message is not held back by this one
    assert f.filter(_record("route table loaded: %d hostnames", 3))
    now[0] = 61.0
    nxt = _record(template, "GET", "http://x/", "172.17.0.9", "no credential")
    assert f.filter(nxt)
    assert "suppressed 2994 similar lines" in nxt.getMessage()


def test_rate_limit_keys_on_source_when_given():
    f = RateLimitFilter(burst=2, window=60, clock=lambda: 0.0)
    a = [f.filter(_record("bad request from %s", "a", source="a")) for _ in range(10)]
    b = [f.filter(_record("bad request from %s", "b", source="b")) for _ in range(10)]
    assert sum(a) == 3 and sum(b) == 3


def test_log_rotates_by_size(tmp_path):
    path = tmp_path / "proxy.log"
    h = SizeRotatingHandler(path, max_bytes=2000, backups=2, redirect_std=False)
    h.setFormatter(logging.Formatter("%(message)s"))
    try:
        for i in range(200):
            h.emit(_record("line %d " + "x" * 60, i))
    finally:
        h.close()
    assert path.stat().st_size <= 2100
    assert (tmp_path / "proxy.log.1").exists() and (tmp_path / "proxy.log.2").exists()
    assert not (tmp_path / "proxy.log.3").exists()
    assert "line 199" in path.read_text()


def test_memory_trimmer_trims_after_a_drop():
    t = MemoryTrimmer(drop=10, min_interval=0.0)
    for n in range(0, 500, 50):
        assert not t.observe(n, now=1.0)
    assert not t.observe(495, now=2.0)  # a small dip: nothing
    trimmed = t.observe(3, now=3.0)
    assert trimmed == (limits._glibc() is not None)
    assert t.peak == 3


def test_raise_nofile_and_the_test_knob():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert limits.raise_nofile({"FLEET_PROXY_NOFILE": "100"})[0] == 100
        now, h = limits.raise_nofile({})
        assert now == (h if h != resource.RLIM_INFINITY else 1 << 20)
        with pytest.raises(FleetError, match="FLEET_PROXY_NOFILE"):
            limits.raise_nofile({"FLEET_PROXY_NOFILE": "5"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_suppressed_lines_are_summarised_when_the_window_ends():
    now = [0.0]
    f = RateLimitFilter(burst=1, window=10, clock=lambda: now[0])
    results = [f.filter(_record("bad %s", i, source="s")) for i in range(50)]
    assert sum(results) == 2
    assert f.flush() == []  # the window is still open
    now[0] = 10.0
    assert f.flush() == [("fleet.proxy", logging.WARNING, "bad %s", 48)]
    assert f.flush() == []  # said once
