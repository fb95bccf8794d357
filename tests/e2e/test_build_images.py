"""Built images do not pile up (real engine): a fleet whose shared host is built
from a Dockerfile, rebuilt twice, keeps only the image in use, and `fleet destroy`
leaves no image of its own. Images are selected by label, never by name: an
image a person tagged with a fleet-like name stays."""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.docker


def fleet_images(client, fleet: str) -> list[str]:
    imgs = client.images.list(filters={"label": f"dev.fleet.project={fleet}"})
    return sorted(t for i in imgs for t in (i.tags or [i.id]))


def test_rebuilt_twice_then_destroyed_leaves_no_image(tmp_path, docker_client, base_image, fleet_name):
    ctx = tmp_path / "img"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY version.txt /version.txt\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(f"""
        fleet: {fleet_name}
        hosts:
          box:
            build: {{context: ./img}}
        agents:
          worker:
            host: box
            command: ["sleep", "infinity"]
        """))
    # a person's image with a fleet-like name and no fleet label: never touched
    lookalike = f"fleet-{fleet_name}-build:0000000000000000"
    docker_client.images.get(base_image).tag(lookalike)
    try:
        seen: list[list[str]] = []
        for version in ("v1", "v2", "v3"):
            (ctx / "version.txt").write_text(version + "\n")
            r = run_fleet("apply", "--yes", str(path))
            assert r.code == 0, r.text
            seen.append(fleet_images(docker_client, fleet_name))
            assert len(seen[-1]) == 1, f"after {version}: {seen[-1]}"
            if version != "v1":
                assert "destroy image" in r.out or "destroyed image" in r.out, r.out
        assert len({tuple(s) for s in seen}) == 3, seen  # a new build each time, the old one gone
        (ctx / "version.txt").write_text("v4\n")
        diff = run_fleet("diff", str(path))
        assert "built image no longer used" in diff.out and seen[-1][0] in diff.out, diff.out
        r = run_fleet("destroy", "--yes", str(path))
        assert r.code == 0, r.text
        assert fleet_images(docker_client, fleet_name) == []
        docker_client.images.get(lookalike)  # still there
    finally:
        docker_client.images.remove(lookalike)
