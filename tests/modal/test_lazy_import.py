"""`import modal` happens only for a fleet with a Modal host (or one that still has
Modal resources): a Docker-only fleet never pays for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from reconciler.state import usage
from reconciler.load.loader import load
from reconciler.engine.pipeline import providers_of

CHECK = textwrap.dedent("""
    import sys
    from reconciler.cli import app  # every command registered
    from reconciler.engine import pipeline, pull
    from reconciler.state import usage
    from reconciler.load.loader import load
    desired = load(__import__("pathlib").Path(sys.argv[1]))
    assert pipeline.providers_of(desired) == ["docker"], pipeline.providers_of(desired)
    assert "modal" not in sys.modules, "modal was imported"
    print("ok")
""")


def test_docker_only_fleet_does_not_import_modal(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("fleet: plain\nagents:\n  a: {image: fleet-base:bookworm}\n")
    proc = subprocess.run([sys.executable, "-c", CHECK, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_a_fleet_that_used_modal_keeps_observing_it(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("fleet: plain\nagents:\n  a: {image: fleet-base:bookworm}\n")
    desired = load(path)
    assert providers_of(desired) == ["docker"]
    usage.record("plain", "modal")
    assert providers_of(desired) == ["docker", "modal"]
    usage.settle("plain", {"docker"})
    assert providers_of(desired) == ["docker"]
