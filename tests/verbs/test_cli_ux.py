"""The guide workflows' rough edges, through the real CLI: `ls` from anywhere,
destroy guards and `destroy --fleet`, exec with a shell string, disabled and
stopped agents, URLs only for running agents, `--version`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import free_port, run_fleet
from tests.e2e.test_docker_apply import containers, write

pytestmark = pytest.mark.docker


def test_version():
    from reconciler import __version__

    r = run_fleet("--version")
    assert r.code == 0 and r.out.strip() == f"fleet {__version__}", r.text


def test_ls_from_another_directory_and_destroy_guards(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        hosts:
          box: {{}}
        agents:
          a: {{command: ["sleep", "infinity"]}}
          b: {{host: box, command: ["sleep", "infinity"]}}
          c: {{command: ["true"], restart: never}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # ls: no file, another directory, every fleet from labels
    r = run_fleet("ls", cwd=elsewhere)
    assert r.code == 0, r.text
    line = next(ln for ln in r.out.splitlines() if ln.startswith(fleet_name))
    assert line.split()[:3] == [fleet_name, "3", "2"], r.out  # 3 agents, 2 running (c exited)
    r = run_fleet("ls", "-o", "json", cwd=elsewhere)
    mine = next(f for f in json.loads(r.out)["fleets"] if f["fleet"] == fleet_name)
    assert mine["agents"] == 3 and mine["hosts"] == 1 and mine["running"] == 2 and mine["providers"] == ["docker"]
    assert mine["states"] == {"exited": 1, "running": 2}

    # destroy without --yes and without a terminal: refused, nothing changed
    before = {k: c.id for k, c in containers(docker_client, fleet_name).items()}
    r = run_fleet("destroy", str(path))
    assert r.code == 1 and "--yes" in r.err and "nothing changed" in r.err, r.text
    assert {k: c.id for k, c in containers(docker_client, fleet_name).items()} == before

    # the file is gone: destroy --fleet NAME works from labels, from anywhere
    path.unlink()
    r = run_fleet("destroy", "--fleet", fleet_name, cwd=elsewhere)
    assert r.code == 1 and "--yes" in r.err, r.text
    r = run_fleet("destroy", "--fleet", "Bad_Name", "--yes", cwd=elsewhere)
    assert r.code == 1 and "not a fleet name" in r.err, r.text
    r = run_fleet("destroy", "--fleet", fleet_name, "--yes", cwd=elsewhere)
    assert r.code == 0, r.text
    assert "destroy" in r.out and containers(docker_client, fleet_name) == {}
    r = run_fleet("ls", "-o", "json", cwd=elsewhere)
    assert fleet_name not in {f["fleet"] for f in json.loads(r.out)["fleets"]}


def test_destroy_with_a_file_for_another_fleet_is_refused(tmp_path):
    path = write(tmp_path, "fleet: one\ndefaults: {image: x}\nagents:\n  a: {}\n")
    r = run_fleet("destroy", "--fleet", "two", "--yes", str(path))
    assert r.code == 1 and "not two" in r.err, r.text


def test_exec_a_string_runs_through_sh_and_a_list_as_given(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          impl-agent: {{command: ["sleep", "infinity"], env: {{WHO: impl}}}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    r = run_fleet("exec", "-f", str(path), "impl-agent", "echo one && echo $WHO; exit 3")
    assert r.code == 3 and r.out.split() == ["one", "impl"], r.text
    r = run_fleet("exec", "-f", str(path), "impl-agent", "--", "echo", "a  b", "$WHO")
    assert r.code == 0 and r.out == "a  b $WHO\n", r.text  # no shell: no splitting, no expansion
    r = run_fleet("exec", "-f", str(path), "impl-agent", "git --version")
    assert r.code == 0 and r.out.startswith("git version"), r.text
    r = run_fleet("exec", "--help")
    assert "/bin/sh -c" in r.out and "--" in r.out


def test_disabled_and_stopped_agents_say_how_to_run_them(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          on: {{command: ["sleep", "infinity"]}}
          off: {{command: ["sleep", "infinity"]}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    path.write_text(path.read_text().replace('off: {command: ["sleep", "infinity"]}', 'off: {command: ["sleep", "infinity"], enabled: false}'))
    assert run_fleet("apply", "--yes", str(path)).code == 0
    assert "agent:off" in containers(docker_client, fleet_name)  # stopped, kept
    for cmd in (("exec", "-f", str(path), "off", "true"), ("message", "-f", str(path), "off", "hello")):
        r = run_fleet(*cmd)
        assert r.code == 1 and "disabled (enabled: false in fleet.yaml)" in r.err, r.text
        assert "`fleet apply` starts it" not in r.err
    assert run_fleet("stop", "-f", str(path), "on").code == 0
    r = run_fleet("exec", "-f", str(path), "on", "true")
    assert r.code == 1 and "stopped (fleet stop)" in r.err and "fleet start on" in r.err, r.text


def test_apply_prints_urls_only_for_running_agents(tmp_path, docker_client, base_image, fleet_name):
    ctx = tmp_path / "broken"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nRUN exit 3\n")
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        proxy: {{port: {free_port()}}}
        defaults: {{image: {base_image}}}
        agents:
          web: {{command: "python3 -m http.server 3000", ports: {{web: 3000}}}}
          broken: {{build: {{context: ./broken}}, command: "python3 -m http.server 3000", ports: {{web: 3000}}}}
          off: {{command: "python3 -m http.server 3000", ports: {{web: 3000}}, enabled: false}}
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 1, r.text  # the build fails
    urls = r.out.split("URLs:", 1)[1] if "URLs:" in r.out else ""
    assert "web.web.localhost" in urls, r.text
    assert "broken" not in urls and "off" not in urls, r.out
