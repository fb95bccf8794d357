#!/usr/bin/env python3
"""Print the Debian mirror this machine's apt uses, for debootstrap.

Reads the configured apt sources: /etc/apt/sources.list and
/etc/apt/sources.list.d/*.list (one-line `deb [options] URI SUITE COMPONENTS...`)
and /etc/apt/sources.list.d/*.sources (deb822: `Types:`, `URIs:`, `Suites:`,
`Enabled:`). The mirror is the URI of the first `deb` entry for a Debian release
suite (`bookworm`, `trixie`, `stable`, ... with `-updates`/`-backports` allowed,
never `-security`) with the `main` component, preferring one that lists SUITE.
Prints nothing and exits 1 when none is configured.

    debian-mirror.py [SUITE] [--root DIR]     (DIR: read DIR/etc/apt, for tests)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

RELEASES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}


def entries(apt: Path):
    """(uri, suites, components) of every enabled `deb` source, in apt's order."""
    files = [apt / "sources.list"] if (apt / "sources.list").is_file() else []
    files += sorted((apt / "sources.list.d").glob("*.list")) + sorted((apt / "sources.list.d").glob("*.sources"))
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                key = None
                for line in stanza.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0].isspace() and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split(), fields.get("components", "").split()
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(line) >= 3 and line[0] == "deb":
                    yield line[1], [line[2]], line[3:]


def mirror(suite: str, apt: Path) -> str | None:
    found: list[tuple[bool, str]] = []
    for uri, suites, components in entries(apt):
        base = {re.sub(r"-(updates|backports|proposed-updates)$", "", s) for s in suites if not s.endswith("-security")}
        if base & RELEASES and "main" in components:
            found.append((suite in base, uri.rstrip("/")))
    found.sort(key=lambda item: not item[0])  # stable: apt's order among equals
    return found[0][1] if found else None


def main(argv: list[str]) -> int:
    root = Path("/")
    if "--root" in argv:
        i = argv.index("--root")
        root = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    suite = argv[0] if argv else "bookworm"
    uri = mirror(suite, root / "etc" / "apt")
    if uri is None:
        return 1
    print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
