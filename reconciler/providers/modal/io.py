"""Working with agents running in a Modal sandbox: typed input, first messages,
logs, exec, attach, status details and archives (capability "archive"). Each
is one or two execs in the agent's sandbox; none changes what observation sees.

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Iterable, Iterator

from reconciler.core.errors import FleetError, ProviderError
from reconciler.core.model import DesiredAgent, ObservedAgent
from reconciler.providers.modal import sh
from reconciler.providers.modal.session import ModalSession
from reconciler.providers.modal.tags import WORKDIR, _iso
from reconciler.providers.terminal import AttachEnd, DetachScanner, parse_detach_keys, raw_terminal


class ModalAgentIO(ModalSession):
    """The Provider methods that work with a running agent."""

    def send_input(self, fleet: str, agent: ObservedAgent, data: bytes) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            code, out, err = self._run(sb, ["sh", "-c", sh.SEND, "fleet-send", agent.name], stdin=data, timeout=60)
        if code == 3:
            state = out.decode(errors="replace").split()
            desc = f"{state[0]}, exit code {state[2]}" if len(state) >= 3 else "no supervisor"
            raise ProviderError(resource, f"is not running ({desc}); message not delivered; `fleet apply` starts it")
        if code == 4:
            raise ProviderError(resource, "restarted while the message was typed; it may not have arrived, send it again")
        if code != 0:
            why = err.decode(errors="replace").strip()[-200:] or f"exit code {code}"
            raise ProviderError(resource, f"message not delivered ({why})")

    def send_message(self, fleet: str, agent: DesiredAgent, text: str) -> str:
        """Type an agent's first message; returns the agent's id (sandbox, name, generation)."""
        from reconciler.state.messages import typed

        resource = f"agent {agent.name}"
        agent_id = self._agent_ids.get((fleet, agent.name))
        sid = self._by_name.get((fleet, agent.host or ""))
        if sid is None:
            raise ProviderError(resource, f"host {agent.host} has no running sandbox; first message not delivered")
        if agent_id is None or not agent_id.startswith(sid + ":"):
            sb = self._handles[sid]
            with self._errors(resource, agent.host):
                _, gen, _ = self._agent_entry(dict(sb.get_tags()), agent.name, resource)
            agent_id = f"{sid}:{agent.name}:{gen}"
        obs = ObservedAgent(name=agent.name, host=agent.host, provider="modal", id=agent_id, state="running",
                            spec_hash="", host_id=sid)
        self.send_input(fleet, obs, typed(text))
        return agent_id

    def logs(self, fleet: str, agent: ObservedAgent, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[bytes]:
        """The agent's terminal output (kept in the sandbox by its supervisor)."""
        if since is not None:
            raise FleetError(f"agent {agent.name}: --since is not available for agents on Modal hosts (their "
                             "output is one terminal log without times); use --tail")
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            p = sb.exec("sh", "-c", sh.LOGS, "fleet-logs", agent.name, "all" if tail is None else str(tail),
                        "1" if follow else "0", text=False)
        return self._stream_logs(sb, p, resource, follow)

    def _stream_logs(self, sb: Any, p: Any, resource: str, follow: bool) -> Iterator[bytes]:
        pid: bytes | None = None
        head = b""
        try:
            with self._errors(resource):
                for chunk in p.stdout:
                    if pid is None:
                        head += chunk
                        if b"\n" not in head:
                            continue
                        pid, _, chunk = head.partition(b"\n")
                        if not chunk:
                            continue
                    yield chunk
                code = p.wait()
            if code == 3:
                raise ProviderError(resource, "no output recorded (its supervisor never started); run `fleet apply`")
        finally:
            if follow and pid and pid.strip().isdigit():
                try:  # a follow left behind would keep the sandbox busy
                    sb.exec("kill", pid.strip().decode(), text=False).wait()
                except Exception:
                    pass

    def exec(self, fleet: str, agent: ObservedAgent, cmd: list[str], workdir: str | None = None,
             env: dict[str, str] | None = None, interactive: bool = False, tty: bool = False) -> int:
        """Run `cmd` in the agent's sandbox (in /workspace unless told) with the
        agent's environment, streaming its output; returns its exit code."""
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            argv = ["sh", "-c", sh.in_agent_env(env or {}), "fleet-exec", agent.name, *cmd]
            p = sb.exec(*argv, workdir=workdir or WORKDIR, pty=tty, text=False)
            if tty and interactive:
                p.attach()
                return p.wait()
            pumps = [
                threading.Thread(target=_pump, args=(p.stdout, sys.stdout.buffer), daemon=True),
                threading.Thread(target=_pump, args=(p.stderr, sys.stderr.buffer), daemon=True),
            ]
            for t in pumps:
                t.start()
            if interactive:
                _feed(p, sys.stdin.fileno())
            else:
                p.stdin.write_eof()
                p.stdin.drain()
            for t in pumps:
                t.join()
            return p.wait()

    def attach(self, fleet: str, agent: ObservedAgent, detach_keys: str, replay: int = 24) -> AttachEnd:
        """Join the agent's terminal: its last `replay` lines of output, then our
        keystrokes into its stdin and its output back; the detach keys leave it
        running. The attach ends by itself when the agent's process ends (the
        supervisor's status changes). Returns a terminal.AttachEnd."""
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        seq = detach_sequence(detach_keys)
        with self._errors(resource, agent.host):
            p = sb.exec("sh", "-c", sh.ATTACH, "fleet-attach", agent.name, str(max(replay, 0)), text=False)
            out = threading.Thread(target=_pump, args=(p.stdout, sys.stdout.buffer), daemon=True)
            out.start()
            fd = sys.stdin.fileno()
            with raw_terminal(fd):
                detached = _feed(p, fd, stop=seq, alive=out.is_alive)
            out.join(timeout=5)
            code = p.poll()
        if code == 3:
            raise ProviderError(resource, "is not running; `fleet apply` starts it")
        return AttachEnd(detached)

    def details(self, fleet: str, agents: list[ObservedAgent]) -> dict[str, dict[str, Any]]:
        """Per agent: state, restarts, last exit code, since (one exec per host,
        for status; never part of observation)."""
        out: dict[str, dict[str, Any]] = {}
        by_host: dict[str, list[ObservedAgent]] = {}
        for a in agents:
            if a.host_id:
                by_host.setdefault(a.host_id, []).append(a)
        for sid, group in by_host.items():
            try:
                sb = self._sandbox(sid, f"host {group[0].host}")
                with self._errors(f"host {group[0].host}"):
                    code, text, _ = self._run(sb, ["sh", "-c", sh.STATUS], timeout=30)
            except ProviderError:
                continue
            table = sh.parse_status(text.decode(errors="replace"))
            for a in group:
                if a.name in table:
                    row = table[a.name]
                    out[a.id] = {
                        "restarts": row["restarts"], "exit_code": row["exit_code"], "running": row["running"],
                        "state": row["state"], "started_at": _iso(row["since"]), "finished_at": None,
                    }
        return out

    def archive(self, fleet: str, agent: ObservedAgent, path: str = WORKDIR) -> tuple[Iterable[bytes], str]:
        """Capability "archive": a tar stream of `path` in the agent's sandbox
        (`tar -c` run there; members relative to it: prefix ".")."""
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            p = sb.exec("tar", "-c", "-C", path, "-f", "-", ".", text=False, timeout=3600)
            p.stdin.write_eof()
            p.stdin.drain()

        def stream() -> Iterator[bytes]:
            with self._errors(resource, agent.host):
                for chunk in p.stdout:
                    yield chunk
                code = p.wait()
                err = p.stderr.read().decode(errors="replace").strip()
            if code != 0:
                raise ProviderError(resource, f"tar of {path} failed (exit code {code}: {err[-200:]})")

        return stream(), "."


# ---------------------------------------------------------------------- terminal helpers


def _pump(stream: Any, target: Any) -> None:
    try:
        for chunk in stream:
            if chunk:
                target.write(chunk)
                target.flush()
    except Exception:
        pass


def detach_sequence(keys: str) -> bytes:
    """"ctrl-p,ctrl-q" -> b"\\x10\\x11" (Docker's notation; terminal.parse_detach_keys)."""
    return parse_detach_keys(keys)


def _feed(p: Any, fd: int, stop: bytes = b"", alive: Any = None) -> bool:
    """Copy our stdin into the process's stdin until end of file, the `stop`
    sequence (detach: True), or the remote side ending."""
    import select

    scanner = DetachScanner(stop)
    try:
        while alive is None or alive():
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                break
            data, detached = scanner.feed(data)
            if data:
                p.stdin.write(data)
                p.stdin.drain()
            if detached:
                return True
        return False
    finally:
        try:
            p.stdin.write_eof()
            p.stdin.drain()
        except Exception:
            pass

