"""Crash consistency: `fleet apply` (and `fleet destroy`) of 10 agents killed
with SIGKILL at random points. After each kill the next apply converges: every
agent exactly once, labelled and running, nothing orphaned or unlabelled under
the fleet's names, and one more apply has nothing to do.

The kill points cycle through three situations: a cold apply (nothing exists),
an apply replacing every agent (an env change), and a destroy. The points are
drawn from a seeded generator (FLEET_FAULT_SEED overrides the seed) over the
length of an undisturbed apply, so they land before, during and after the
Docker calls. The fast variant (3 points) runs in `make test`; the 20-point run
is marked slow (`make test-slow`).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.conftest import run_fleet

from .helpers import assert_converged, assert_noop, by_agent, fleet_file, kill_after, start_fleet

pytestmark = pytest.mark.docker

N = 10
PARALLEL = "4"
SEED = int(os.environ.get("FLEET_FAULT_SEED", "9"))
MODES = ("cold", "replace", "destroy")
# A request the killed client had already sent is finished by the engine after
# the kill; give it a moment, as a person re-running the command would.
SETTLE = 0.5


def crash_points(tmp_path, client, image: str, fleet: str, points: int, seed: int) -> None:
    rng = random.Random(seed)
    path = fleet_file(tmp_path / "fleet.yaml", fleet, image, N)
    agents = {f"a{i}" for i in range(N)}
    t0 = time.monotonic()
    r = run_fleet("apply", "--yes", "--parallel", PARALLEL, str(path))
    full = time.monotonic() - t0
    assert r.code == 0, r.text
    assert_converged(client, fleet, agents, "first apply")
    for i in range(points):
        mode = MODES[i % len(MODES)]
        if mode == "cold":
            r = run_fleet("destroy", "--yes", str(path))
            assert r.code == 0 and not by_agent(client, fleet), r.text
            cmd = ("apply", "--yes", "--parallel", PARALLEL)
        elif mode == "replace":
            fleet_file(path, fleet, image, N, round_=i + 1)
            cmd = ("apply", "--yes", "--parallel", PARALLEL)
        else:
            cmd = ("destroy", "--yes", "--parallel", PARALLEL)
        delay = rng.uniform(0.2 * full, 1.1 * full)
        out = kill_after(start_fleet(*cmd, str(path)), delay)
        left = {a: [c.status for c in cs] for a, cs in by_agent(client, fleet).items()}
        ctx = f"point {i + 1}/{points} ({mode}, killed after {delay:.2f}s of ~{full:.2f}s, seed {seed}; left {left})"
        time.sleep(SETTLE)
        r = run_fleet("apply", "--yes", str(path))
        assert r.code == 0, f"{ctx}: the next apply failed:\n{r.text}\n--- killed run's output:\n{out}"
        assert "Traceback" not in r.text, ctx
        assert_converged(client, fleet, agents, ctx)
        assert_noop(path, ctx)


def test_killed_apply_and_destroy_converge_3_points(tmp_path, docker_client, base_image, fleet_name):
    crash_points(tmp_path, docker_client, base_image, fleet_name, points=3, seed=SEED)


@pytest.mark.slow
def test_killed_apply_and_destroy_converge_20_points(tmp_path, docker_client, base_image, fleet_name):
    crash_points(tmp_path, docker_client, base_image, fleet_name, points=20, seed=SEED + 1)
