"""`fleet pull` on a Docker agent: its /workspace (here a named volume of a shared
host, so only reachable through the container) copied to this machine."""

from __future__ import annotations

import pytest

from tests.conftest import run_fleet
from tests.e2e.test_docker_apply import write

pytestmark = pytest.mark.docker


def test_pull_copies_a_docker_agents_workspace(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        hosts:
          box: {{image: {base_image}}}
        agents:
          worker:
            host: box
            command: "mkdir -p src && echo 'print(1)' > src/main.py && ln -s src/main.py link.py && exec sleep infinity"
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    dest = tmp_path / "out"
    for _ in range(50):
        r = run_fleet("pull", "-f", str(path), "worker", str(dest))
        assert r.code == 0, r.text
        if (dest / "src" / "main.py").exists():
            break
    assert (dest / "src" / "main.py").read_text() == "print(1)\n"
    assert (dest / "link.py").is_symlink() and (dest / "link.py").read_text() == "print(1)\n"
    assert "pulled" in r.out and "worker:/workspace" in r.out

    r = run_fleet("pull", "-f", str(path), "nobody", str(dest))
    assert r.code == 1 and "no agent 'nobody'" in r.err, r.text
    (tmp_path / "afile").write_text("x")
    r = run_fleet("pull", "-f", str(path), "worker", str(tmp_path / "afile"))
    assert r.code == 1 and "not a directory" in r.err, r.text
