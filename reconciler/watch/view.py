"""How the watch loop shows itself: plain log lines, or a compact live view.

Without a terminal (a pipe, a log file, CI) every event is one line with a
timestamp, flushed at once, so `fleet apply --watch | tee log` and tests can
follow along. On a terminal the same lines scroll above a small live panel
(rich) holding each agent's state and URL, the last apply and the last error.
The loop never formats anything itself; it tells a view what happened.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from reconciler.view.status import state_text, status_rows
from reconciler.routing.table import service_urls
from reconciler.core.model import Desired, Observed


def stamp(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


class View(Protocol):
    def line(self, text: str, style: str | None = None) -> None: ...
    def error(self, text: str) -> None: ...
    def applied(self, summary: str, ok: bool) -> None: ...
    def status(self, desired: Desired, observed: Observed | None, waits: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class PlainView:
    """One line per event: `HH:MM:SS.mmm text`."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout

    def line(self, text: str, style: str | None = None) -> None:
        try:
            self.stream.write(f"{stamp()} {text}\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # reader went away: keep reconciling quietly
            pass

    def error(self, text: str) -> None:
        self.line(text)

    def applied(self, summary: str, ok: bool) -> None:
        pass

    def status(self, desired: Desired, observed: Observed | None, waits: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class LiveView:
    """Log lines scroll; the panel below shows where the fleet stands."""

    def __init__(self, file_shown: str, fleet: str, resync: float) -> None:
        self.console = Console(no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
        self.footer = f"watching {file_shown} · fleet {fleet} · resync {resync:g}s · Ctrl-C stops watching (agents keep running)"
        self.rows: list[tuple[str, Text, str]] = []
        self.last_apply: tuple[float, str, bool] | None = None
        self.last_error: tuple[float, str] | None = None
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def line(self, text: str, style: str | None = None) -> None:
        t = Text(stamp() + " ", style="dim")
        t.append(text, style=style or "")
        self.live.console.print(t)

    def error(self, text: str) -> None:
        self.last_error = (time.time(), text)
        self.line(text, "red")
        self._refresh()

    def applied(self, summary: str, ok: bool) -> None:
        self.last_apply = (time.time(), summary, ok)
        self._refresh()

    def status(self, desired: Desired, observed: Observed | None, waits: dict[str, float]) -> None:
        rows = []
        if observed is not None:
            for r in status_rows(desired, observed):
                state = state_text(r)
                wait = waits.get(f"agent:{r.agent}")
                if wait:
                    state += f", retry in {wait:.0f}s"
                style = "green" if state == "running" else ("yellow" if "restarting" in state or "outdated" in state else "red")
                if r.stopped_by_user:
                    style = "magenta"  # on purpose (`fleet stop`), not a failure
                agent = desired.agents.get(r.agent)
                urls = service_urls(r.agent, agent.ports, desired.proxy) if agent else {}
                local = {p.service: p.host_port for p in r.ports}
                where = "  ".join(
                    f"{url}" + (f" (127.0.0.1:{local[svc]})" if local.get(svc) else "") for svc, url in sorted(urls.items())
                )
                rows.append((r.agent, Text(state, style=style), where or "-"))
        self.rows = rows
        self._refresh()

    def _render(self) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("AGENT", "STATE", "URL"):
            table.add_column(col)
        for name, state, where in self.rows:
            table.add_row(name, state, where)
        parts: list = [table] if self.rows else [Text("no agents observed yet", style="dim")]
        if self.last_apply:
            t, summary, ok = self.last_apply
            parts.append(Text(f"last apply  {stamp(t)}  {summary}", style="green" if ok else "red"))
        if self.last_error:
            t, text = self.last_error
            parts.append(Text(f"last error  {stamp(t)}  {text}", style="red"))
        parts.append(Text(self.footer, style="dim"))
        return Group(*parts)

    def _refresh(self) -> None:
        self.live.update(self._render())

    def close(self) -> None:
        self.live.stop()


def make_view(file_shown: str, fleet: str, resync: float) -> View:
    if sys.stdout.isatty():
        return LiveView(file_shown, fleet, resync)
    return PlainView()
