"""The Docker engine restarted in the middle of `fleet apply`.

This restarts the shared engine (`pkill -x dockerd`, then
`scripts/ensure-docker.sh` starts it again, as `make engine` does), which breaks
whatever else uses Docker at that moment: it is marked slow (`make test-slow`)
and lives in zz_engine_restart so that a full run collects it last. It never
starts a second dockerd.

The apply caught by the restart either finishes or fails with clear lines (exit
1, no traceback); the next apply converges: every agent once, labelled and
running, and a further apply has nothing to do.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import ROOT, run_fleet
from tests.faults.helpers import assert_converged, assert_noop, by_agent, fleet_file, start_fleet, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

N = 10


def engine_answers(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def restart_engine() -> None:
    subprocess.run(["pkill", "-x", "dockerd"], check=False)
    wait_for(lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0,
             timeout=120, what="dockerd to stop")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-docker.sh")], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"the engine did not come back: {r.stderr}"


def test_engine_restarted_during_apply_then_the_next_apply_converges(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path / "fleet.yaml", fleet_name, base_image, N)
    proc = start_fleet("apply", "--yes", "--parallel", "2", str(path))
    try:
        wait_for(lambda: len(by_agent(docker_client, fleet_name)) >= 3 or proc.poll() is not None,
                 timeout=120, what="the first containers")
        restart_engine()
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode in (0, 1), out
    assert "Traceback" not in out, out
    wait_for(lambda: engine_answers(docker_client), timeout=60, what="the engine")
    time.sleep(2)  # containers with restart=always are being started by the engine itself
    r = run_fleet("apply", "--yes", str(path), timeout=300)
    assert r.code == 0, f"{r.text}\n--- the interrupted apply said:\n{out}"
    assert "Traceback" not in r.text
    assert_converged(docker_client, fleet_name, {f"a{i}" for i in range(N)}, "after the engine restart")
    assert_noop(path, "after the engine restart")
