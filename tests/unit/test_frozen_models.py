"""The models that cross stages are immutable at every depth, and freezing them
changed neither their spec hashes (a changed hash would replace every running
container on upgrade) nor their JSON."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.core.frozen import FrozenDict, FrozenList, freeze, thaw
from reconciler.core.model import (
    ImageBuild,
    Desired,
    DesiredAgent,
    DesiredHost,
    ImageRef,
    ModalOptions,
    Observed,
    ObservedAgent,
    ObservedHost,
    ProxySettings,
    Workspace,
)


def sample() -> tuple[Desired, Observed]:
    ws = Workspace(path=Path("/srv/app"), mode="worktree", branch="b1", read_only=("deploy/fleet.yaml",))
    build = ImageBuild(context=Path("/srv/app"), dockerfile="Dockerfile", args={"A": "1"}, context_hash="h")
    web = DesiredAgent(
        name="web", image=ImageRef(ref="fleet-demo-web:abc", build=build), workspace=ws, command=("npm", "start"),
        message="hi", env={"TZ": "UTC", "B": "2"}, ports={"web": 3000, "api": 8080}, grants=("github", "mine"),
        grant_defs={"mine": {"hosts": ["api.example.com", "*.x.io"], "header": "Authorization",
                             "value": "Bearer {secret}", "nested": {"k": [1, {"z": 2}]}}},
        restart="on-failure", capabilities=("CHOWN", "NET_RAW"),
    )
    impl = DesiredAgent(name="impl", host="box", provider="modal", image=ImageRef(ref="python:3.12"), env={"X": "y"})
    box = DesiredHost(
        name="box", provider="modal", image=ImageRef(ref="python:3.12"), workspace=ws, env={"E": "1"}, ports=(3000, 8080),
        modal=ModalOptions(app="a", timeout=100, idle_timeout=50, cpu=1.5, memory=512, restore="latest"),
    )
    desired = Desired(
        fleet="demo", file=Path("/srv/app/fleet.yaml"), hosts={"box": box}, agents={"web": web, "impl": impl},
        proxy=ProxySettings(port=9090), grants={"mine": {"hosts": ["api.example.com"], "header": "Authorization"}},
    )
    seen_web = ObservedAgent(
        name="web", host=None, provider="docker", id="c1", state="running", spec_hash=web.spec_hash, spec=web.spec(),
        ports={3000: 49000}, created="2026-01-01T00:00:00Z",
    )
    seen_box = ObservedHost(
        name="box", provider="modal", id="sb-1", state="running", spec_hash=box.spec_hash, spec=box.spec(),
        ports={7999: 443}, urls={7999: "https://x.modal.run"}, agents={"impl": "abc"},
    )
    observed = Observed(
        fleet="demo", hosts=(seen_box,), agents=(seen_web,),
        routes=({"agent": "web", "service": "web", "container_port": 3000, "target": "http://127.0.0.1:49000", "tls": True,
                 "inner_port": None},),  # as the route table stores it (every field)
        images=("i1",), warnings=("w",),
    )
    return desired, observed


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Computed with the models as they were before they were frozen (dict fields; the
# Observed pins with the code of 888af29, routes as plain dicts):
# these must never change, or an upgrade replaces every container and host.
def test_spec_hashes_are_the_ones_of_the_mutable_models():
    d, o = sample()
    assert d.agents["web"].spec_hash == "6b953172670f7e8afd0b06402098e9f0f313018eeb0f213c0d6b43348c33391b"
    assert d.agents["impl"].spec_hash == "e9d990257506cb2d688a01ebaf9d55a8200b68d38dd39835cb6181617e675c99"
    assert d.hosts["box"].spec_hash == "7d87babc53900f31fa8939f6907aa905ac86685136298c262c305fbfca2a4c41"
    assert d.spec_hash == "7551e2f99fde6ca549c6ee5a16bccf4f573db5b1238dca6740181034782ce93f"
    assert o.fingerprint() == "528372e77a9ae88bca1680604a1edc936cb9412e2b086b415864425d2b4731ab"
    assert _sha(json.dumps(d.agents["web"].spec(), sort_keys=True)) == (
        "a4fdec6c9c05ef28936dedfe8d7146fe8b94e5b46ab2d9750aed62a42a94d9ac"
    )


def test_json_is_the_one_of_the_mutable_models():
    d, o = sample()
    assert _sha(d.model_dump_json()) == "92c2048682854be6c1c4eff076f5b10f5c4bea41bb98b4de6d3acc40adbf063d"
    # (fields added since, with their defaults, are left out: credentials, network, snapshots, volumes, workspace_copies, relays)
    assert _sha(o.model_dump_json(exclude={"credentials", "network", "snapshots", "volumes", "workspace_copies", "relays", "unreachable", "networks_missing", "engine_images", "engine_volumes"})) == "823ad20e11c857d2166d7afc19b5d7c647212381ec01a2303af19627001b3fd3"
    # a saved plan reads them back: equal, and frozen again
    again = Desired.model_validate_json(d.model_dump_json())
    assert again == d and isinstance(again.agents, FrozenDict)
    assert isinstance(again.agents["web"].grant_defs["mine"]["hosts"], FrozenList)


def _refused(action) -> None:
    with pytest.raises((TypeError, ValidationError)):
        action()


def test_desired_refuses_change_at_every_depth():
    d, _ = sample()
    web = d.agents["web"]
    _refused(lambda: d.agents.__setitem__("b", web))
    _refused(lambda: d.agents.pop("web"))
    _refused(lambda: d.agents.update(b=web))
    _refused(lambda: d.agents.setdefault("b", web))
    _refused(lambda: d.agents.clear())
    _refused(lambda: d.agents.__delitem__("web"))
    _refused(lambda: d.hosts.__setitem__("x", d.hosts["box"]))
    _refused(lambda: setattr(d, "agents", {}))
    _refused(lambda: setattr(web, "env", {}))
    _refused(lambda: web.env.__setitem__("TZ", "CET"))
    _refused(lambda: web.ports.__setitem__("web", 1))
    _refused(lambda: web.grant_defs.__setitem__("x", {}))
    _refused(lambda: web.grant_defs["mine"].__setitem__("header", "X"))  # type: ignore[index]
    _refused(lambda: web.grant_defs["mine"]["hosts"].append("evil.com"))
    _refused(lambda: web.grant_defs["mine"]["hosts"].__setitem__(0, "evil.com"))
    _refused(lambda: web.grant_defs["mine"]["nested"]["k"][1].__setitem__("z", 3))
    _refused(lambda: d.grants["mine"]["hosts"].extend(["evil.com"]))
    _refused(lambda: d.hosts["box"].env.__setitem__("E", "2"))
    _refused(lambda: setattr(d.hosts["box"].modal, "timeout", 1))
    _refused(lambda: web.image.build.args.__setitem__("A", "2"))  # type: ignore[union-attr]
    _refused(lambda: setattr(web.workspace, "mode", "shared"))
    assert d == sample()[0]  # nothing above changed anything


def test_observed_refuses_change_at_every_depth():
    _, o = sample()
    a, h = o.agents[0], o.hosts[0]
    _refused(lambda: a.spec.__setitem__("image", "x"))
    _refused(lambda: a.spec["env"].__setitem__("TZ", "x"))
    _refused(lambda: a.spec["command"].append("x"))
    _refused(lambda: a.ports.__setitem__(3000, 1))
    _refused(lambda: h.urls.__setitem__(1, "x"))
    _refused(lambda: h.agents.__setitem__("x", "y"))
    _refused(lambda: h.spec["workspace"].pop("path"))
    _refused(lambda: setattr(o, "agents", ()))
    assert o == sample()[1]


def test_frozen_containers_equal_and_serialise_as_the_plain_ones():
    plain = {"a": [1, {"b": [2, 3]}], "c": {"d": "e"}}
    frozen = freeze(plain)
    assert frozen == plain and thaw(frozen) == plain and type(thaw(frozen)["a"]) is list
    assert json.dumps(frozen, sort_keys=True) == json.dumps(plain, sort_keys=True)
    assert hash(frozen) == hash(freeze(plain))
    for op in (pickle.loads(pickle.dumps(frozen)), copy.deepcopy(frozen), copy.copy(frozen)):
        assert op == plain and type(op) is FrozenDict and type(op["a"]) is FrozenList
    # the observed spec still compares equal to the desired record it came from
    d, o = sample()
    assert o.agents[0].spec == d.agents["web"].spec()


def test_model_copy_validates_and_freezes_its_update():
    d, _ = sample()
    web = d.agents["web"].model_copy(update={"env": {"A": "1"}, "grants": ["x"]})
    assert isinstance(web.env, FrozenDict) and web.grants == ("x",)
    _refused(lambda: web.env.__setitem__("A", "2"))
    with pytest.raises(ValidationError):
        d.agents["web"].model_copy(update={"ports": {"web": "not a port"}})
    # models are hashable now that nothing inside them can change
    assert hash(d) == hash(copy.deepcopy(d))
