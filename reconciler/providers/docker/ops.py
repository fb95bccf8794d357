"""Working with running Docker agents: logs, exec, attach, typed input, first
messages, status details and archives of their files. None of it changes what
observation sees; each call works on one container.

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Any, Iterable, Iterator

from reconciler.core import labels as L
from reconciler.core.errors import ProviderError
from reconciler.core.model import DesiredAgent, ObservedAgent
from reconciler.providers.docker.session import DockerSession, early_bytes, raw_socket
from reconciler.providers.terminal import AttachEnd, bridge, parse_detach_keys, read_frames


class DockerAgentOps(DockerSession):
    """The Provider methods that work with a running agent's container."""

    def logs(self, fleet: str, agent: ObservedAgent, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[bytes]:
        """The agent's output as byte chunks (its terminal's output)."""
        kwargs: dict[str, Any] = dict(stdout=True, stderr=True, stream=True, follow=follow, tail=tail if tail is not None else "all")
        if since is not None:
            kwargs["since"] = int(since)
        chunks: Iterator[bytes] = self._call(f"agent {agent.name}", self.api.logs, agent.id, **kwargs)
        return chunks

    def exec(self, fleet: str, agent: ObservedAgent, cmd: list[str], workdir: str | None = None,
             env: dict[str, str] | None = None, interactive: bool = False, tty: bool = False) -> int:
        """Run `cmd` in the agent's container, streaming to our stdout/stderr;
        returns its exit code."""
        info = self._running(agent, "exec")
        resource = f"agent {agent.name}"
        wd = workdir or info.get("Config", {}).get("WorkingDir") or None
        ex = self._call(resource, self.api.exec_create, agent.id, cmd, stdin=interactive, tty=tty,
                        environment=env or None, workdir=wd)
        sock = self._call(resource, self.api.exec_start, ex["Id"], socket=True, tty=tty)
        first = early_bytes(sock)
        raw = raw_socket(sock)
        try:
            if tty:
                if first:
                    sys.stdout.buffer.write(first)
                    sys.stdout.flush()
                bridge(raw, resize=lambda h, w: self.api.exec_resize(ex["Id"], height=h, width=w) if interactive else None)
            else:
                if interactive:
                    threading.Thread(target=_feed_stdin, args=(raw,), daemon=True).start()
                for stream, data in read_frames(raw, first):
                    target = sys.stderr.buffer if stream == 2 else sys.stdout.buffer
                    target.write(data)
                    target.flush()
        finally:
            try:
                raw.close()
            except OSError:
                pass
        code = self._call(resource, self.api.exec_inspect, ex["Id"]).get("ExitCode")
        return 0 if code is None else int(code)

    def attach(self, fleet: str, agent: ObservedAgent, detach_keys: str, replay: int = 24) -> AttachEnd:
        """Connect our terminal to the agent's own, after replaying its last
        `replay` lines of output (what its screen shows). Returns an AttachEnd:
        detached (the user typed the detach keys; the agent is left running),
        or the agent's process ended, with its exit code."""
        keys = parse_detach_keys(detach_keys)
        self._running(agent, "attach")
        resource = f"agent {agent.name}"
        # the next exit of the agent's process, as `docker attach` learns it
        # (a restart policy's restart resets the container's own exit code)
        exits: "queue.Queue[int | None]" = queue.Queue()

        def wait_exit() -> None:
            try:
                exits.put(int(self.api.wait(agent.id, condition="next-exit").get("StatusCode")))
            except Exception:
                exits.put(None)

        threading.Thread(target=wait_exit, daemon=True).start()
        # the stream first (what comes next is buffered), then the recent past
        sock = self._call(resource, self.api.attach_socket, agent.id,
                          params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "detachKeys": detach_keys})
        raw = raw_socket(sock)
        try:
            if replay > 0:
                recent = self._call(resource, self.api.logs, agent.id, stdout=True, stderr=True, tail=replay)
                if recent:
                    sys.stdout.buffer.write(recent)
                    sys.stdout.flush()
            detached = bridge(raw, resize=lambda h, w: self.api.resize(agent.id, height=h, width=w), detach=keys)
        finally:
            try:
                raw.close()
            except OSError:
                pass
        if detached:
            return AttachEnd(True)
        try:
            return AttachEnd(False, exits.get(timeout=5))
        except queue.Empty:  # the stream closed but the process did not exit
            return AttachEnd(False, None)

    def send_input(self, fleet: str, agent: ObservedAgent, data: bytes) -> None:
        """Type `data` into the agent's terminal, as a person would. Fails clearly
        (never silently) when the agent is not running or restarts meanwhile."""
        before = self._running(agent, "message")
        started = before["State"].get("StartedAt")
        sock = self._call(f"agent {agent.name}", self.api.attach_socket, agent.id, params={"stdin": 1, "stream": 1})
        raw = raw_socket(sock)
        try:
            for i in range(0, len(data), 1024):  # the terminal takes typed input in small pieces
                raw.sendall(data[i:i + 1024])
                if len(data) > 1024:
                    time.sleep(0.005)
        except OSError as exc:
            raise ProviderError(f"agent {agent.name}", f"message not delivered: {exc}") from None
        finally:
            try:
                raw.close()
            except OSError:
                pass
        after = self.inspect(agent.id)
        if after["State"].get("StartedAt") != started or not after["State"].get("Running"):
            raise ProviderError(f"agent {agent.name}", "restarted while the message was typed; it may not have arrived, send it again")

    def send_message(self, fleet: str, agent: DesiredAgent, text: str) -> str:
        """Type an agent's first message once its container runs; returns the
        container id it went to (the agent was just created or started)."""
        from docker.errors import NotFound

        from reconciler.state.messages import typed

        name = L.agent_container(fleet, agent.name)
        deadline = time.monotonic() + 15
        while True:
            try:
                info = self.api.inspect_container(name)
            except NotFound:
                raise ProviderError(f"agent {agent.name}", "its container is gone; first message not delivered") from None
            st = info.get("State", {})
            if st.get("Running") and not st.get("Restarting"):
                break
            if time.monotonic() > deadline:
                raise ProviderError(f"agent {agent.name}", f"did not start ({st.get('Status')}); first message not delivered")
            time.sleep(0.2)
        obs = ObservedAgent(name=agent.name, host=agent.host, provider="docker", id=info["Id"], state="running", spec_hash="",
                            engine=self.engine)
        self.send_input(fleet, obs, typed(text))
        return str(info["Id"])

    def details(self, fleet: str, agents: list[ObservedAgent]) -> dict[str, dict[str, Any]]:
        """Per agent: restarts, last exit code, started/finished times (one
        inspect each: for status, never for observation)."""
        from docker.errors import NotFound

        out: dict[str, dict[str, Any]] = {}
        for a in agents:
            try:
                info = self.api.inspect_container(a.id)
            except NotFound:
                continue
            st = info.get("State", {})
            out[a.id] = {
                "restarts": info.get("RestartCount", 0),
                "exit_code": st.get("ExitCode"),
                "started_at": st.get("StartedAt"),
                "finished_at": st.get("FinishedAt"),
                "running": st.get("Running", False),
            }
        return out

    def archive(self, fleet: str, agent: ObservedAgent, path: str) -> tuple[Iterable[bytes], str]:
        """Capability "archive": Docker's archive API on `path`; its members carry
        the path's last part as prefix ("workspace/...")."""
        from docker.errors import APIError, NotFound

        try:
            stream, _ = self.api.get_archive(agent.id, path)
        except NotFound:
            raise ProviderError(f"agent {agent.name}", f"has no {path} (or its container is gone)") from None
        except APIError as exc:
            raise ProviderError(f"agent {agent.name}", (exc.explanation or str(exc)).strip()) from None
        return stream, os.path.basename(path.rstrip("/")) or "."


def _feed_stdin(raw: Any) -> None:
    """Copy our stdin into an exec's socket until end of file, then half-close it."""
    try:
        while True:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                break
            raw.sendall(data)
    except OSError:
        pass
    finally:
        try:
            raw.shutdown(1)
        except OSError:
            pass
