"""Errors a user can meet: each renders as clear lines, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One problem in a fleet.yaml: `path:line:col: key.path: message`."""

    file: str
    line: int
    col: int
    key: str
    message: str

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}:{self.col}"
        return f"{loc}: {self.key}: {self.message}" if self.key else f"{loc}: {self.message}"

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.col, "key": self.key, "message": self.message}


class FleetError(Exception):
    """An error with a message meant for the user; exit code 1."""

    exit_code = 1

    def lines(self) -> list[str]:
        return [str(self)]


class ValidationFailed(FleetError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class EngineUnavailable(FleetError):
    pass


class ProviderError(FleetError):
    """A provider call failed; `resource` names what it was working on."""

    def __init__(self, resource: str, message: str):
        self.resource = resource
        self.detail = message
        super().__init__(f"{resource}: {message}")


def display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
