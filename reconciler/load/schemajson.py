"""The JSON Schema of fleet.yaml, generated from the models of `schema.py`.

pydantic's schema is the starting point; the steps below make it say what
`fleet validate` says, as far as JSON Schema can:

- a map keyed by a constrained name (`dict[Name, X]`) comes out of pydantic as an
  open `patternProperties`, which never checks a key that misses the pattern nor
  anything beneath it; it is closed here (`propertyNames` + `additionalProperties`);
- `Optional[X]` becomes one schema whose type admits null, so an editor reports
  the real problem ("too short") rather than "expected array | null";
- the rules across keys that JSON Schema can express are added: image or build,
  not both; no image anywhere; Modal-only keys only with `provider: modal`; an
  agent on a shared host sets no image, build or workspace; a user grant is not
  named like a built-in one. They are written so that yaml-language-server's
  messages name the key ("Property build is not allowed", "Missing property
  "image"", a `patternErrorMessage`), not "Matches a schema that is not allowed".

What stays with `fleet validate` alone (files on disk, `host:` naming a declared
host, port uniqueness, ...) is listed in tests/gitops/test_schema_agreement.py.
"""

from __future__ import annotations

from typing import Any

from reconciler.load.schema import BUILTIN_GRANTS, MODAL_ONLY, FleetFile


def only(fields: list[str], *absent: str) -> dict[str, Any]:
    """A schema admitting just `fields` less `absent`: editors then say "Property X
    is not allowed" on the very key (clearer than a `not` schema's message)."""
    return {"properties": {f: True for f in fields if f not in absent}, "additionalProperties": False}


def _close_maps(node: Any) -> None:
    if isinstance(node, dict):
        pattern_props = node.get("patternProperties")
        if (
            node.get("type") == "object"
            and isinstance(pattern_props, dict)
            and len(pattern_props) == 1
            and "properties" not in node
            and "additionalProperties" not in node
        ):
            (pattern, value), = pattern_props.items()
            names = dict(node.get("propertyNames") or {})
            names = {"type": "string", "pattern": pattern, **names}
            del node["patternProperties"]
            node["propertyNames"] = names
            node["additionalProperties"] = value
        for child in list(node.values()):
            _close_maps(child)
    elif isinstance(node, list):
        for child in node:
            _close_maps(child)


def _flatten_optional(node: Any) -> None:
    """`anyOf: [{type: T, ...}, {type: null}]` -> `{type: [T, null], ...}`."""
    if isinstance(node, dict):
        any_of = node.get("anyOf")
        if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
            other = next(s for s in any_of if s != {"type": "null"})
            if "type" in other and "$ref" not in other and "anyOf" not in other:
                merged = dict(other)
                types = merged["type"] if isinstance(merged["type"], list) else [merged["type"]]
                merged["type"] = types + ["null"]
                if "enum" in merged:
                    merged["enum"] = list(merged["enum"]) + [None]
                del node["anyOf"]
                node.update({k: v for k, v in merged.items() if k not in node})
                node["type"] = merged["type"]
        for child in list(node.values()):
            _flatten_optional(child)
    elif isinstance(node, list):
        for child in node:
            _flatten_optional(child)


def _has(*keys: str, **types: str) -> dict[str, Any]:
    """`if`-schema: these keys are present (with these JSON types)."""
    out: dict[str, Any] = {"required": list(keys)}
    if types:
        out["properties"] = {k: {"type": t} for k, t in types.items()}
    return out


def _image_xor_build(fields: list[str]) -> dict[str, Any]:
    return {"if": _has("image", "build", image="string", build="object"), "then": only(fields, "build")}


def _cross_rules(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    fields = {name: list(defs[name]["properties"]) for name in ("Defaults", "Host", "Agent")}
    for name in fields:
        defs[name].setdefault("allOf", []).append(_image_xor_build(fields[name]))
    # Modal-only keys: a docker host (the default) admits every other key
    defs["Host"]["allOf"].append(
        {
            "if": {"required": ["provider"], "properties": {"provider": {"const": "modal"}}},
            "else": only(fields["Host"], *MODAL_ONLY),
        }
    )
    # an agent on a shared host takes its image and workspace from the host
    defs["Agent"]["allOf"].append({"if": _has("host", host="string"), "then": only(fields["Agent"], "image", "build", "workspace")})
    # no image anywhere: unless defaults bring one, every host and every private
    # agent needs image or build
    some_image = [_has("image", image="string"), _has("build", build="object")]
    schema.setdefault("allOf", []).append(
        {
            "if": {"required": ["defaults"], "properties": {"defaults": {"anyOf": some_image}}},
            "else": {
                "properties": {
                    "hosts": {"additionalProperties": {"anyOf": some_image}},
                    "agents": {"additionalProperties": {"anyOf": [*some_image, _has("host", host="string")]}},
                }
            },
        }
    )
    builtin = "|".join(BUILTIN_GRANTS)
    schema["properties"]["grants"]["propertyNames"].setdefault("allOf", []).append(
        {
            "pattern": f"^(?!(?:{builtin})$)",
            "patternErrorMessage": f"is a built-in grant ({', '.join(BUILTIN_GRANTS)}): pick another name for a user-defined one",
        }
    )


def _describe_refs(schema: dict[str, Any]) -> None:
    """pydantic leaves out a field's description when it equals its model's
    docstring; editors show the one next to the key, so put it back."""
    defs = schema.get("$defs", {})
    for node in [schema, *defs.values()]:
        for sub in (node.get("properties") or {}).values():
            ref = sub.get("$ref", "")
            if ref.startswith("#/$defs/") and not sub.get("description"):
                described = defs.get(ref.rsplit("/", 1)[1], {}).get("description")
                if described:
                    sub["description"] = described


def fleet_schema() -> dict[str, Any]:
    schema = FleetFile.model_json_schema()
    _describe_refs(schema)
    _close_maps(schema)
    _flatten_optional(schema)
    _cross_rules(schema)
    return schema
