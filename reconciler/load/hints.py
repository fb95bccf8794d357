"""Hints for bad input that the schema alone gives poorly: a key one keystroke
off a known one ('evn' for 'env'), and an agent setting indented as an agent
name (`ports:` one level too far left becomes an agent called `ports`).

Pure functions over the parsed document; `loader.validate_file` and
`problems.did_you_mean` call them.
"""

from __future__ import annotations

from typing import Any

from reconciler.core.errors import Problem


def one_typo(a: str, b: str) -> bool:
    """One keystroke apart: a letter added, dropped, replaced, or two neighbours
    swapped ('evn' for 'env', which difflib's ratio scores only 0.67)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def misindented(file: str, data: dict, pos: Any, problems: list[Problem]) -> list[Problem]:
    """An agent named like an agent setting (`ports`, `env`, `image`...) is almost
    always a setting indented one level too little: say that, in place of the
    problems its content causes as an "agent"."""
    from reconciler.load.schema import Agent

    agents = data.get("agents")
    if not isinstance(agents, dict):
        return problems
    names = list(agents)
    out = list(problems)
    for i, name in enumerate(names):
        if name not in Agent.model_fields:
            continue
        key = f"agents.{name}"
        out = [p for p in out if p.key != key and not p.key.startswith(key + ".")]
        line, col = pos.of(("agents", name), prefer_key=True)
        above = next((n for n in reversed(names[:i]) if n not in Agent.model_fields), None)
        where = f"indent it under agent '{above}' (agents.{above}.{name})" if above else "indent it under the agent it belongs to"
        out.append(Problem(file, line, col, key, f"'{name}' is an agent setting, but it is indented as an agent name here: "
                                                  f"{where}, or rename the agent"))
    return out
