"""Loading fleet.yaml: a corpus of bad files (each names the line, column and key
path its problem must carry), generated hostile inputs, and good files resolved
to the expected Desired. No Docker: the CLI runs with DOCKER_HOST pointing at a
socket that does not exist, so any engine call would show up as an engine error
instead of the validation problems."""

from __future__ import annotations

import re
import shutil
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import reconciler.cli  # noqa: F401  (registers every command on the app)
from reconciler.load import yamldoc
from reconciler.cli import app
from reconciler.core.errors import FleetError, ValidationFailed
from reconciler.load.loader import MAX_FILE_BYTES, load, validate_file
from reconciler.providers.base import reset_providers

DATA = Path(__file__).resolve().parent.parent / "data"
BAD = sorted((DATA / "bad").glob("*.yaml"))
GOOD = DATA / "good"
NO_ENGINE = "unix:///nonexistent/fleet-unit-tests/docker.sock"
EXPECT = re.compile(r"^#\s*expect:\s*(?:(\d+)(?::(\d+))?\s+)?([^\s\d]\S*)\s+(.*\S)\s*$")
COUNT = re.compile(r"^#\s*problems:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Expect:
    line: int | None
    col: int | None
    key: str
    text: str

    def matches(self, p) -> bool:
        return (
            (self.line is None or p.line == self.line)
            and (self.col is None or p.col == self.col)
            and p.key == self.key
            and self.text in p.message
        )


def header(path: Path) -> list[str]:
    return [ln for ln in path.read_bytes().decode("utf-8", "replace").splitlines() if ln.startswith("#")]


def expectations(path: Path) -> list[Expect]:
    """`# expect: [LINE[:COL]] KEY.PATH MESSAGE-SUBSTRING` lines; KEY `-` means
    a problem of the whole file (no key path)."""
    out = []
    for line in header(path):
        if line.lstrip("# ").startswith("expect:"):
            m = EXPECT.match(line)
            assert m, f"{path.name}: malformed expectation {line!r}"
            ln, col, key, text = m.groups()
            out.append(Expect(int(ln) if ln else None, int(col) if col else None, "" if key == "-" else key, text))
    return out


def expected_count(path: Path) -> int | None:
    """`# problems: N` in the header: exactly N problems, no noise."""
    for line in header(path):
        m = COUNT.match(line)
        if m:
            return int(m.group(1))
    return None


@pytest.fixture
def no_engine(monkeypatch):
    """Any Docker call fails loudly: the provider cache is emptied so a client
    made earlier in the session cannot answer."""
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    reset_providers()
    yield
    reset_providers()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"DOCKER_HOST": NO_ENGINE, "NO_COLOR": "1", "COLUMNS": "200"})


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_large_and_every_file_says_what_it_expects():
    assert len(BAD) >= 35
    for path in BAD:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_reports_each_expected_problem(path: Path):
    spec, problems = validate_file(path)
    assert spec is None and problems
    for exp in expectations(path):
        assert any(exp.matches(p) for p in problems), f"{exp} not in:\n" + "\n".join(map(str, problems))
    if expected_count(path) is not None:
        assert len(problems) == expected_count(path), "\n".join(map(str, problems))
    assert problems == sorted(problems, key=lambda p: (p.line, p.col))
    for p in problems:  # one line each, positioned inside the file
        assert "\n" not in str(p)
        assert p.line >= 1 and p.col >= 1
    with pytest.raises(ValidationFailed) as info:
        load(path)
    assert info.value.problems == problems


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_through_the_cli_exits_1_before_any_docker_call(path: Path, no_engine):
    first = expectations(path)[0]
    for args in (["apply", "--yes", str(path)], ["validate", str(path)]):
        res = invoke(*args)
        assert res.exit_code == 1, res.output
        assert "Traceback" not in res.output
        assert "Docker engine" not in res.output and "DockerException" not in res.output
        assert first.text in res.output
        located = f":{first.line}:" if first.line else ":"
        assert any(located in line and first.text in line for line in res.output.splitlines()), res.output


def test_validate_json_output_lists_problems(no_engine):
    import json

    res = invoke("validate", "-o", "json", str(DATA / "bad" / "many-problems.yaml"))
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert doc["valid"] is False
    assert {p["key"] for p in doc["problems"]} >= {"fleet", "agents.web.comand", "agents.api.host"}


# --------------------------------------------------------------------------- generated hostile inputs


def write(tmp_path: Path, content: str | bytes, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def only_problem(path: Path):
    spec, problems = validate_file(path)
    assert spec is None and len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("content", ["", "\n\n", "   \n", "\ufeff", "---\n", "# only\n#comments\n", "--- # nothing\n"])
def test_empty_file(tmp_path, content):
    p = only_problem(write(tmp_path, content))
    assert p.key == "" and "file is empty" in p.message


def test_file_over_one_mebibyte_is_refused_unread(tmp_path):
    body = "fleet: big\nagents:\n" + "".join(f"  agent-{i}:\n    image: node:20\n" for i in range(40000))
    assert len(body.encode()) > MAX_FILE_BYTES
    p = only_problem(write(tmp_path, body))
    assert "file is too large" in p.message and str(MAX_FILE_BYTES) in p.message


def test_alias_bomb_is_refused_without_expanding(tmp_path):
    levels = ["a: &a [" + ",".join(['"lol"'] * 10) + "]"]
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    path = write(tmp_path, "fleet: bomb\n" + "\n".join(levels) + "\n")  # 10**10 strings if expanded
    tracemalloc.start()
    try:
        p = only_problem(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "too large or too deep" in p.message
    assert peak < 64 * 1024 * 1024


def test_merge_bomb_is_refused(tmp_path):
    lines = ["fleet: bomb", "x0: &x0 {}"]
    for i in range(1, 30):
        lines.append(f"x{i}: &x{i} {{<<: [" + ", ".join([f"*x{i - 1}"] * 9) + "]}")
    lines.append("agents: {web: {<<: *x29, image: node:20}}")
    p = only_problem(write(tmp_path, "\n".join(lines) + "\n"))
    assert "too large or too deep" in p.message


def test_self_referencing_alias_is_refused(tmp_path):
    p = only_problem(write(tmp_path, "fleet: loop\nagents: &a {web: *a}\n"))
    assert "too large or too deep" in p.message


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, opening, closing):
    p = only_problem(write(tmp_path, "fleet: deep\nx: " + opening * 3000 + "1" + closing * 3000 + "\n"))
    assert (p.line, p.key) == (2, "")
    assert "nested more than" in p.message


def test_too_many_values_are_refused_while_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(yamldoc, "MAX_NODES", 500)
    p = only_problem(write(tmp_path, "fleet: wide\nx:\n" + "- a\n" * 2000))
    assert "more than 500 values" in p.message


@pytest.mark.parametrize(
    "content, line, col, text",
    [
        ("fleet: caf\xe9\n".encode("latin-1"), 1, 11, "not UTF-8 text (found byte 0xe9)"),
        ("fleet: x\n".encode("utf-16"), 1, 1, "not UTF-8"),
        (b"fleet: ok\nagents:\n  web: {image: \x00}\n", 3, 16, "control character not allowed in YAML (found 0x00)"),
    ],
)
def test_bytes_that_are_not_yaml_text(tmp_path, content, line, col, text):
    p = only_problem(write(tmp_path, content))
    assert (p.line, p.col) == (line, col) and text in p.message


def test_missing_file_and_directory_are_clear_errors(tmp_path):
    with pytest.raises(FleetError, match="no such file"):
        load(tmp_path / "nope.yaml")
    with pytest.raises(FleetError, match="is a directory"):
        load(tmp_path)


def test_missing_file_through_the_cli(tmp_path, no_engine):
    res = invoke("apply", "--yes", str(tmp_path / "nope.yaml"))
    assert res.exit_code == 1 and "no such file" in res.output and "Traceback" not in res.output


def test_multiple_documents_are_refused(tmp_path):
    p = only_problem(write(tmp_path, "fleet: one\n---\nfleet: two\n"))
    assert p.line == 2 and "single document" in p.message


def test_tabs_inside_a_block_scalar_are_content_not_indentation(tmp_path):
    path = write(tmp_path, "fleet: tabs\nagents:\n  web:\n    image: node:20\n    message: |\n      fix:\n      \tfmt.Println()\n")
    d = load(path)
    assert d.agents["web"].message == "fix:\n\tfmt.Println()\n"


def test_every_tab_indented_line_is_reported(tmp_path):
    _, problems = validate_file(write(tmp_path, "fleet: t\nagents:\n\tweb:\n\t\timage: x\n"))
    assert [(p.line, p.col) for p in problems] == [(3, 1), (4, 1)]


def test_reused_anchor_names_are_fine_and_silent(tmp_path, recwarn):
    path = write(tmp_path, "fleet: r\nx-a: &v 1\nagents:\n  web: &v {image: node:20}\n  api: *v\n")
    _, problems = validate_file(path)
    assert problems == []  # x-* keys are free-form, as in Docker Compose
    assert not [w for w in recwarn if "anchor" in str(w.message)]


def test_null_values_point_at_their_key(tmp_path):
    _, problems = validate_file(write(tmp_path, "fleet: n\nagents:\n  web:\n    image: x\n    ports:\n      http:\n"))
    assert [(p.key, p.line, p.col) for p in problems] == [("agents.web.ports.http", 6, 7)]
    assert "expected an integer (found nothing (null))" in problems[0].message


def test_problems_name_the_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "fleet: Bad\n", "f.yaml")
    _, problems = validate_file(Path("sub/f.yaml"))
    assert str(problems[0]).startswith("sub/f.yaml:1:8: fleet: must be a lowercase DNS label")


def test_default_file_and_fleet_file_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(GOOD / "minimal.yaml", tmp_path / "fleet.yaml")
    assert load().fleet == "tiny"
    shutil.copy(GOOD / "merge-keys.yaml", tmp_path / "other.yaml")
    monkeypatch.setenv("FLEET_FILE", "other.yaml")
    assert load().fleet == "merged"


# --------------------------------------------------------------------------- good files


def test_every_good_file_loads_and_validates_through_the_cli(no_engine):
    files = sorted(GOOD.glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        assert load(path).fleet
        res = invoke("validate", str(path))
        assert res.exit_code == 0 and "valid" in res.output, res.output


def test_design_example():
    d = load(GOOD / "design-example.yaml")
    assert d.fleet == "my-app" and d.file == (GOOD / "design-example.yaml").resolve()
    assert (d.proxy.port, d.proxy.bind) == (8080, "127.0.0.1")
    box = d.hosts["auth-host"]
    assert box.provider == "modal" and box.image.ref == "python:3.12-slim"
    assert box.workspace is not None and box.workspace.path == GOOD.resolve()
    assert box.modal is not None and (box.modal.idle_timeout, box.modal.timeout) == (3600, 86400)
    assert box.ports == ()

    dark = d.agents["dark-mode"]
    assert dark.host is None and dark.provider == "docker" and dark.image.ref == "node:20"
    assert dark.workspace is not None and dark.workspace.path == (GOOD / "my-app").resolve()
    assert dark.command == ("npm", "start") and dark.message == "Implement dark mode"
    assert dark.ports == {"web": 3000, "api": 8080}
    assert dark.grants == ("github", "anthropic") and dark.restart == "always" and dark.enabled
    assert dark.env == {
        "TZ": "UTC",
        "NODE_ENV": "development",
        "FLEET_NAME": "my-app",
        "FLEET_AGENT": "dark-mode",
        "FLEET_HOST": "dark-mode",
        "FLEET_URL_WEB": "https://web.dark-mode.localhost:8080",
        "FLEET_URL_API": "https://api.dark-mode.localhost:8080",
    }

    impl = d.agents["impl-agent"]
    assert impl.host == "auth-host" and impl.provider == "modal"
    assert impl.image == box.image and impl.workspace == box.workspace
    assert impl.command == ("claude",) and impl.message == "Implement JWT authentication"
    assert impl.env["FLEET_HOST"] == "auth-host" and impl.env["TZ"] == "UTC"


def test_env_merge_order_fleet_vars_and_grants():
    d = load(GOOD / "shared-hosts.yaml")
    impl, tests, builder = d.agents["impl"], d.agents["tests"], d.agents["builder"]
    # defaults < host < agent
    assert impl.env["LEVEL"] == "agent" and tests.env["LEVEL"] == "host" and builder.env["LEVEL"] == "defaults"
    assert impl.env["SOURCE"] == "defaults" and impl.env["HOST_ONLY"] == "1" and "HOST_ONLY" not in builder.env
    assert impl.env["FLEET_URL_ADMIN_UI"] == "https://admin-ui.impl.localhost:8080"
    assert impl.env["FLEET_URL_WEB"] == "https://web.impl.localhost:8080"
    assert (impl.env["FLEET_NAME"], impl.env["FLEET_AGENT"], impl.env["FLEET_HOST"]) == ("team", "impl", "box")
    assert builder.env["FLEET_HOST"] == "builder"
    assert not any(k.startswith("FLEET_URL_") for k in d.agents["tests"].env if k != "FLEET_URL_API")
    # defaults' grants first, then the agent's, each once
    assert impl.grants == ("github", "anthropic")
    assert tests.grants == ("github", "internal-api")
    assert builder.grants == ("github",)
    assert d.grants["internal-api"]["hosts"] == ["api.internal.example"]
    # the holder publishes the union of its agents' ports, sorted
    assert d.hosts["box"].ports == (3000, 3001, 8080, 9229)
    assert d.hosts["box"].env == {"LEVEL": "host", "HOST_ONLY": "1"}
    # commands: defaults unless the agent has its own
    assert impl.command == ("sleep", "infinity") and tests.command == ("npm", "test")
    assert d.agents["off"].enabled is False


def test_user_env_cannot_override_fleet_variables(tmp_path):
    path = write(tmp_path, "fleet: f\nagents:\n  web:\n    image: x\n    ports: {web: 1}\n"
                           "    env: {FLEET_NAME: mine, FLEET_URL_WEB: mine}\n")
    env = load(path).agents["web"].env
    assert env["FLEET_NAME"] == "f" and env["FLEET_URL_WEB"] == "https://web.web.localhost:8080"


def test_proxy_settings_shape_urls(tmp_path):
    path = write(tmp_path, "fleet: f\nproxy: {port: 9443, tls: false}\nagents:\n  web:\n    image: x\n    ports: {app: 3000}\n")
    assert load(path).agents["web"].env["FLEET_URL_APP"] == "http://app.web.localhost:9443"


def test_merge_keys():
    d = load(GOOD / "merge-keys.yaml")
    web, api = d.agents["web"], d.agents["api"]
    assert web.image.ref == "node:20" and web.restart == "on-failure" and web.command == ("npm", "start")
    assert web.env["TZ"] == "UTC"
    # api merges web (which merged defaults): its own env and ports win
    assert api.command == ("npm", "start") and api.restart == "on-failure"
    assert api.env["TZ"] == "Europe/Paris" and api.env["ROLE"] == "api"
    assert api.ports == {"http": 4000}


def test_env_values_and_command_forms():
    d = load(GOOD / "env-and-commands.yaml")
    web = d.agents["web"]
    assert web.command == ("/bin/sh", "-c", "npm run dev -- --port 3000")
    assert {k: web.env[k] for k in ("DEBUG", "WORKERS", "PORT", "RATIO", "VERBOSE", "EMPTY", "NAME")} == {
        "DEBUG": "true", "WORKERS": "4", "PORT": "3000", "RATIO": "0.5", "VERBOSE": "false", "EMPTY": "", "NAME": "web",
    }
    # numbers keep the text as written (not 1.1, not 1234)
    assert web.env["VERSION"] == "1.10" and web.env["ZIP"] == "01234"
    worker = d.agents["worker"]
    assert worker.command == ("node", "worker.js", "--queue", "jobs")
    assert worker.env["WORKERS"] == "8" and worker.restart == "never" and worker.enabled is False


def test_relative_paths_resolve_against_the_file_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = load(GOOD / "shared-hosts.yaml")
    assert d.hosts["box"].workspace.path == (GOOD / "my-app").resolve()
    build = d.agents["builder"].image.build
    assert build is not None and build.context == (GOOD / "ctx").resolve()
    assert build.args == {"NODE_VERSION": "20"} and build.dockerfile == "Dockerfile"


def test_build_tag_follows_the_context(tmp_path):
    shutil.copytree(GOOD, tmp_path / "good")
    path = tmp_path / "good" / "shared-hosts.yaml"
    first = load(path).agents["builder"]
    assert first.image.ref.startswith("fleet_team_build:")
    again = load(path).agents["builder"]
    assert again.image.ref == first.image.ref and again.spec_hash == first.spec_hash

    (tmp_path / "good" / "ctx" / "hello.txt").write_text("changed\n")
    changed = load(path).agents["builder"]
    assert changed.image.ref != first.image.ref and changed.spec_hash != first.spec_hash

    (tmp_path / "good" / "ctx" / "hello.txt").write_text("hello\n")
    assert load(path).agents["builder"].image.ref == first.image.ref

    (tmp_path / "good" / "ctx" / "new.txt").write_text("x")
    assert load(path).agents["builder"].image.ref != first.image.ref


def test_build_args_change_the_tag(tmp_path):
    shutil.copytree(GOOD, tmp_path / "good")
    path = tmp_path / "good" / "shared-hosts.yaml"
    before = load(path).agents["builder"].image.ref
    path.write_text(path.read_text().replace("NODE_VERSION: 20", "NODE_VERSION: 22"))
    assert load(path).agents["builder"].image.ref != before


def test_loading_is_deterministic():
    a = load(GOOD / "shared-hosts.yaml")
    b = load(GOOD / "shared-hosts.yaml")
    assert a == b and a.spec_hash == b.spec_hash


def test_a_hundred_agents_load(tmp_path):
    """100 agents, the size the benchmarks use."""
    body = "fleet: hundred\ndefaults: {image: node:20, env: {TZ: UTC}}\nagents:\n" + "".join(
        f"  agent-{i}:\n    command: [sleep, infinity]\n    ports: {{web: 3000}}\n    env: {{N: '{i}'}}\n"
        for i in range(100)
    )
    d = load(write(tmp_path, body))
    assert len(d.agents) == 100
    assert d.agents["agent-42"].env["N"] == "42"


def test_top_level_x_keys_hold_anchors_like_compose(tmp_path):
    path = write(
        tmp_path,
        "fleet: r\nx-node: &node\n  image: node:20\n  env: {TZ: UTC}\nagents:\n  web:\n    <<: *node\n    ports: {web: 3000}\n",
    )
    spec, problems = validate_file(path)
    assert problems == [] and spec is not None
    assert load(path).agents["web"].image.ref == "node:20"
    # an unknown key that is not x- is still refused
    _, problems = validate_file(write(tmp_path, "fleet: r\nxnode: 1\n", "f2.yaml"))
    assert [p.key for p in problems] == ["xnode"]


def test_modal_app_names_follow_modals_rule(tmp_path):
    text = "fleet: m\nhosts:\n  h: {provider: modal, image: x, app: 'my app!'}\nagents:\n  a: {host: h}\n"
    _, problems = validate_file(write(tmp_path, text))
    assert [(p.key, p.line) for p in problems] == [("hosts.h.app", 3)]
    assert "must be a Modal app name" in problems[0].message
    ok = text.replace("'my app!'", "team.app_1")
    assert validate_file(write(tmp_path, ok, "ok.yaml"))[1] == []


def test_loader_keeps_the_names_other_layers_import():
    """loader.py was split by subject (yamldoc, problems, checks, resolve); the
    names engine, grants, gitops and the CLI import from it stay there."""
    from reconciler.load import loader

    for name in ("load", "validate_file", "read_document", "default_file", "did_you_mean", "concrete_types",
                 "context_hash", "MAX_FILE_BYTES", "resolve"):
        assert callable(getattr(loader, name)) or name == "MAX_FILE_BYTES", name
    assert loader.did_you_mean("evn", ["env", "image"]) == "; did you mean 'env'?"
