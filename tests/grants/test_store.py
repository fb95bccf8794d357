"""The credential store: round trip, modes, key handling, tampering, name binding."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from reconciler.core.errors import FleetError
from reconciler.grants import store
from reconciler.grants.catalogue import BUILTIN, hosts_of, pick, rules_for, split_host, user_rules

SECRET = "ghp_roundTRIP_0123456789abcdef"


@pytest.fixture(autouse=True)
def no_keyring(monkeypatch):
    monkeypatch.setenv("FLEET_KEYRING", "off")


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_round_trip_and_modes(fleet_home):
    info = store.set_grant("github", SECRET + "\n")  # a trailing newline from a pipe is dropped
    assert store.get_secret("github") == SECRET
    assert mode(store.store_dir()) == 0o700
    assert mode(info.path) == 0o600
    assert mode(store.key_file()) == 0o600
    assert SECRET.encode() not in info.path.read_bytes()
    assert base64.b64encode(SECRET.encode()) not in info.path.read_bytes()
    # replacing keeps one file and the new value
    store.set_grant("github", "second-value")
    assert store.get_secret("github") == "second-value"
    assert [g.name for g in store.list_grants()] == ["github"]


def test_list_shows_names_and_times_never_values(fleet_home):
    store.set_grant("github", SECRET, source="gh")
    store.set_grant("anthropic", "sk-ant-xyz")
    listed = store.list_grants()
    assert [(g.name, g.source) for g in listed] == [("anthropic", "stdin"), ("github", "gh")]
    assert all(g.set_at and SECRET not in repr(g) for g in listed)
    assert store.remove("anthropic") and not store.remove("anthropic")
    assert store.stored_names() == {"github"}


def test_wrong_key_is_a_clear_error(fleet_home):
    info = store.set_grant("github", SECRET)
    store.key_file().write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    with pytest.raises(FleetError) as exc:
        store.get_secret("github")
    assert str(info.path) in str(exc.value) and "cannot be decrypted" in str(exc.value)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "set_at", "source"])
def test_tampering_is_detected_and_names_the_file(fleet_home, field):
    info = store.set_grant("github", SECRET)
    doc = json.loads(info.path.read_text())
    if field in ("ciphertext", "nonce"):
        raw = bytearray(base64.b64decode(doc[field]))
        raw[-1] ^= 1
        doc[field] = base64.b64encode(bytes(raw)).decode()
    else:
        doc[field] = doc[field] + "x"
    info.path.write_text(json.dumps(doc))
    with pytest.raises(FleetError) as exc:
        store.get_secret("github")
    assert str(info.path) in str(exc.value)


def test_corrupted_file_names_it_in_get_and_list(fleet_home):
    info = store.set_grant("github", SECRET)
    info.path.write_text("{not json")
    with pytest.raises(FleetError) as exc:
        store.get_secret("github")
    assert str(info.path) in str(exc.value) and "corrupted" in str(exc.value)
    (g,) = store.list_grants()
    assert g.problem and str(info.path) in g.problem


def test_ciphertext_is_bound_to_the_grant_name(fleet_home):
    gh = store.set_grant("github", SECRET)
    store.set_grant("openai", "sk-openai")
    other = store.grant_path("openai")
    # a sealed github secret copied over openai's file: refused, not served as openai's
    other.write_bytes(gh.path.read_bytes())
    with pytest.raises(FleetError, match="holds grant 'github'"):
        store.get_secret("openai")
    # ...and when the name inside is edited too, the associated data no longer matches
    doc = json.loads(gh.path.read_text())
    doc["name"] = "openai"
    other.write_text(json.dumps(doc))
    with pytest.raises(FleetError, match="cannot be decrypted"):
        store.get_secret("openai")


def test_key_file_readable_by_others_is_refused(fleet_home):
    store.set_grant("github", SECRET)
    os.chmod(store.key_file(), 0o644)
    with pytest.raises(FleetError, match=r"readable by other users.*chmod 600"):
        store.get_secret("github")
    with pytest.raises(FleetError, match="readable by other users"):
        store.set_grant("npm", "npm_x")


def test_store_file_readable_by_others_is_refused(fleet_home):
    info = store.set_grant("github", SECRET)
    os.chmod(info.path, 0o640)
    with pytest.raises(FleetError, match="readable by other users"):
        store.get_secret("github")


def test_missing_grant_and_bad_input(fleet_home):
    with pytest.raises(store.GrantMissing, match="fleet grant set github"):
        store.get_secret("github")
    for bad in ["", "   \n", "abc\r\nX-Evil: 1", "a\x00b"]:
        with pytest.raises(FleetError):
            store.set_grant("github", bad)
    for name in ["../x", "GitHub", "a_b", "-x", ""]:
        with pytest.raises(FleetError, match="DNS label"):
            store.set_grant(name, SECRET)
    assert not store.key_file().exists() or store.list_grants() == []


def test_a_key_in_the_keyring_is_not_replaced_by_a_key_file(fleet_home):
    store.store_dir().mkdir(parents=True, mode=0o700)
    (store.store_dir() / ".key-in-keyring").write_text("x")
    with pytest.raises(FleetError, match="OS keyring"):
        store.set_grant("github", SECRET)
    assert not store.key_file().exists()


def test_check_stored_lists_what_is_missing_and_how_to_set_it(fleet_home):
    from reconciler.core.model import Desired, DesiredAgent, ImageRef

    img = ImageRef(ref="x")
    desired = Desired(
        fleet="f", file=fleet_home / "fleet.yaml",
        agents={
            "a": DesiredAgent(name="a", image=img, grants=("github", "anthropic")),
            "b": DesiredAgent(name="b", image=img, grants=("github",)),
            "off": DesiredAgent(name="off", image=img, grants=("npm",), enabled=False),
        },
    )
    store.set_grant("anthropic", "sk")
    with pytest.raises(store.GrantMissing) as exc:
        store.check_stored(desired)
    msg = str(exc.value)
    assert "github (agents a, b)" in msg and "`fleet grant set github`" in msg
    assert "anthropic" not in msg and "npm" not in msg
    store.set_grant("github", SECRET)
    store.check_stored(desired)


def test_catalogue():
    (gh_api, _, gh_git) = BUILTIN["github"]
    assert gh_api.render("T") == "Bearer T"
    assert gh_git.render("T") == "Basic " + base64.b64encode(b"x-access-token:T").decode()
    gitlab = rules_for(["gitlab"])
    assert pick(gitlab, "gitlab.com", 443, "/g/p.git/info/refs?service=git-upload-pack").basic_user == "oauth2"
    assert pick(gitlab, "gitlab.com", 443, "/api/v4/user").render("T") == "Bearer T"
    assert rules_for(["anthropic"])[0].header == "x-api-key"
    custom = user_rules("internal", {"hosts": ["api.internal.example", "Other.Example:8443"], "header": "X-Key", "value": "K {token}"})
    assert [(r.host, r.port, r.render("T")) for r in custom] == [("api.internal.example", 443, "K T"), ("other.example", 8443, "K T")]
    assert hosts_of("github") == ["api.github.com", "uploads.github.com", "github.com"]
    assert split_host("[::1]:9") == ("::1", 9)
