"""The Docker provider: private hosts as one container per agent, shared hosts as
the pod pattern (a holder container owning network, ports and /workspace; each
agent its own container joined to it).

Observation is one label-filtered list call (sparse: no per-container inspect).
A container is this fleet's only when it carries its labels AND the exact name
fleet gave it (labels.ownership): a copy carrying the labels under another name
is reported, never adopted, replaced or destroyed. Hardening, the shared network
and volume reuse live in docker_security.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from reconciler.core import labels as L
from reconciler.state import workspaces
from reconciler.providers.docker import security as sec
from reconciler.core.errors import EngineUnavailable, ProviderError
from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef, ObservedAgent, ObservedHost
from reconciler.providers.docker import images as docker_images
from reconciler.providers.docker import made
from reconciler.core.outcome import Outcome

RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}
HOLDER_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
STOP_TIMEOUT = 10
_EXIT_RE = re.compile(r"Exited \((-?\d+)\)")
_CONFLICT_RE = re.compile(r'container name "/?([^"]+)" is already in use by container "([0-9a-f]+)"')


def _client(parallel: int = 8):
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(max_pool_size=max(parallel + 2, 10), timeout=120)
        client.api.ping()
    except DockerException as exc:
        raise EngineUnavailable(
            "no Docker engine answers "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}). "
            "Start Docker (on Debian as root: `make engine`, or `dockerd &`), or set DOCKER_HOST."
        ) from None
    return client


def _spec_label(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _parse_ports(entries: list[dict]) -> dict[int, int]:
    ports: dict[int, int] = {}
    for e in entries or []:
        if e.get("PublicPort") and e.get("Type", "tcp") == "tcp":
            ports[int(e["PrivatePort"])] = int(e["PublicPort"])
    return ports


def _address(c: dict) -> str | None:
    """The container's IPv4 address (first network by name), from the sparse list: no inspect."""
    nets = ((c.get("NetworkSettings") or {}).get("Networks")) or {}
    return next((str(nets[n]["IPAddress"]) for n in sorted(nets) if (nets[n] or {}).get("IPAddress")), None)


def _state(raw: str) -> str:
    return raw if raw in ("created", "running", "restarting", "paused", "exited", "dead", "removing") else "unknown"


def _created(c: dict) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(int(c.get("Created", 0)), tz=timezone.utc).isoformat()


class DockerProvider:
    """Realises hosts and agents as Docker containers."""

    name = "docker"

    def __init__(self, client=None, parallel: int = 8):
        self._client = client
        self._parallel = parallel
        self._image_locks: dict[str, threading.Lock] = {}
        self._warnings: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _client(self._parallel)
        return self._client

    @property
    def api(self):
        return self.client.api

    def _call(self, resource: str, fn, *args, **kwargs):
        from docker.errors import APIError, DockerException
        from requests.exceptions import ConnectionError as ReqConnectionError

        try:
            return fn(*args, **kwargs)
        except APIError as exc:
            text = (exc.explanation or str(exc)).strip()
            m = _CONFLICT_RE.search(text)
            if exc.status_code == 409 and m:
                raise ProviderError(resource, self._conflict(m.group(1), m.group(2))) from None
            raise ProviderError(resource, text) from None
        except (ReqConnectionError, DockerException) as exc:
            raise ProviderError(resource, f"Docker engine error: {str(exc).splitlines()[0][:200]}") from None

    def _conflict(self, name: str, holder: str) -> str:
        """Why a container name is taken: by one of fleet's own (an interrupted
        run's create finishing after it was killed: the next apply adopts it),
        or by a stranger (never touched)."""
        try:
            info = self.api.inspect_container(holder)
            lab = info.get("Config", {}).get("Labels") or {}
            owner = lab.get(L.PROJECT) if L.ownership(lab.get(L.PROJECT) or "", lab, info.get("Name", "")) else None
        except Exception:
            owner = None
        if owner:
            return (
                f"the container name {name} is already held by container {holder[:12]} of fleet {owner} "
                "(created by an interrupted run?); run `fleet apply` again to take it into account"
            )
        return (
            f"the container name {name} is taken by container {holder[:12]}, which fleet did not "
            "create for this fleet; remove or rename it (fleet never touches containers it does not own)"
        )

    # ------------------------------------------------------------------ observe

    def observe_warnings(self, fleet: str) -> list[str]:
        """What the last observe of `fleet` saw and left alone (copies carrying its labels)."""
        return list(self._warnings.get(fleet, ()))

    def observe(self, fleet: str) -> tuple[list[ObservedHost], list[ObservedAgent]]:
        from docker.errors import DockerException
        from requests.exceptions import ConnectionError as ReqConnectionError

        try:
            rows = self.api.containers(all=True, filters={"label": L.project_filter(fleet)})
        except (DockerException, ReqConnectionError) as exc:
            raise EngineUnavailable(f"cannot list containers: {str(exc).splitlines()[0][:200]}") from None
        hosts: list[ObservedHost] = []
        agents: list[ObservedAgent] = []
        warnings: list[str] = []
        for c in rows:
            lab = c.get("Labels") or {}
            if lab.get(L.PROJECT) != fleet:
                continue
            cname = ((c.get("Names") or [""])[0] or "").lstrip("/")
            owned = L.ownership(fleet, lab, cname)
            if owned is None:
                warnings.append(
                    f"container {cname or c['Id'][:12]} ({c['Id'][:12]}) carries fleet {fleet}'s labels but is not "
                    f"one fleet created (fleet names it {L.expected_name(fleet, lab) or 'nothing'}); ignored"
                )
                continue
            try:
                spec = json.loads(lab.get(L.SPEC, "{}"))
            except ValueError:
                spec = {}
            status = c.get("Status", "")
            m = _EXIT_RE.search(status)
            common = dict(
                provider="docker",
                id=c["Id"],
                state=_state(c.get("State", "")),
                spec_hash=lab.get(L.SPEC_HASH, ""),
                spec=spec,
                ports=_parse_ports(c.get("Ports", [])),
                address=_address(c),
                created=_created(c),
                legacy_name=cname if owned == "legacy" else None,
            )
            kind = lab.get(L.KIND)
            if kind == "host" and lab.get(L.HOST):
                hosts.append(ObservedHost(name=lab[L.HOST], **common))
            elif kind == "agent" and lab.get(L.AGENT):
                mode = (c.get("HostConfig") or {}).get("NetworkMode", "")
                host_id = mode.split(":", 1)[1] if mode.startswith("container:") else None
                agents.append(
                    ObservedAgent(
                        name=lab[L.AGENT],
                        host=lab.get(L.HOST) or None,
                        exit_code=int(m.group(1)) if m else None,
                        status=status,
                        host_id=host_id,
                        message_pending=lab.get(L.MESSAGE) == "pending",
                        **common,
                    )
                )
        self._warnings[fleet] = warnings
        return hosts, agents

    def inspect(self, container_id: str) -> dict:
        """Full details of one container (for status; not part of observation)."""
        return self._call(container_id[:12], self.api.inspect_container, container_id)

    # ------------------------------------------------------------------ images

    def ensure_image(self, fleet: str, image: ImageRef, resource: str) -> None:
        """Make sure `image.ref` exists locally: build it (build:) or pull it."""
        from docker.errors import APIError, ImageNotFound

        with self._lock:
            lock = self._image_locks.setdefault(image.ref, threading.Lock())
        with lock:
            try:
                self.api.inspect_image(image.ref)
                return
            except ImageNotFound:
                pass
            if image.build is not None:
                self._build(fleet, image, resource)
                return
            try:
                repo, _, tag = image.ref.rpartition(":") if ":" in image.ref.split("/")[-1] else (image.ref, "", "latest")
                self.api.pull(repo or image.ref, tag=tag or "latest")
            except APIError as exc:
                reason = (exc.explanation or str(exc)).strip().splitlines()[0][:160]
                raise ProviderError(
                    resource,
                    f"image {image.ref} is not available locally and could not be pulled ({reason}); "
                    "build it first (docker build -t ...) or use build: in fleet.yaml",
                ) from None

    def observe_images(self, fleet: str) -> tuple[str, ...]:
        return docker_images.observe_images(self.api, fleet)

    def remove_image(self, fleet: str, ref: str) -> str | None:
        return docker_images.remove_image(self.api, ref)

    def _build(self, fleet: str, image: ImageRef, resource: str) -> None:
        b = image.build
        assert b is not None
        log: list[str] = []
        try:
            for chunk in self.api.build(
                path=str(b.context), dockerfile=b.dockerfile, buildargs=dict(b.args), tag=image.ref,
                rm=True, forcerm=True, decode=True, labels={L.PROJECT: fleet, L.KIND: L.IMAGE_KIND},
            ):
                if "stream" in chunk:
                    log.append(chunk["stream"])
                if "error" in chunk:
                    tail = "".join(log[-5:]).strip().replace("\n", " | ")
                    raise ProviderError(resource, f"build of {b.context} failed: {chunk['error'].strip()} (last output: {tail[-300:]})")
        except ProviderError:
            raise
        except Exception as exc:  # APIError, BuildError, connection errors
            raise ProviderError(resource, f"build of {b.context} failed: {str(exc).splitlines()[0][:200]}") from None

    # ------------------------------------------------------------------ hosts

    def create_host(self, desired: Desired, host: DesiredHost) -> Outcome:
        fleet = desired.fleet
        resource = f"host {host.name}"
        self.ensure_image(fleet, host.image, resource)
        name = L.host_container(fleet, host.name)
        binds = {}
        volumes = ["/workspace"]
        if host.workspace is not None:
            mounts = workspaces.prepare(fleet, host.name, host.workspace)
            binds[str(mounts.workspace)] = {"bind": "/workspace", "mode": "rw"}
            for src, dst in mounts.extra.items():
                binds[src] = {"bind": dst, "mode": "rw"}
            for src, dst in mounts.read_only.items():  # the fleet file, git config: never the agent's
                binds[src] = {"bind": dst, "mode": "ro"}
        else:
            vol = sec.workspace_volume(self.api, fleet, host.name)
            binds[vol] = {"bind": "/workspace", "mode": "rw"}
        network = self._call(resource, sec.ensure_network, self.api)
        # No published ports: the proxy reaches its agents at the holder's bridge address,
        # so agents join and leave with ports without replacing it (nor their neighbours).
        hc = self.api.create_host_config(
            binds=binds,
            restart_policy={"Name": "always"},
            extra_hosts={"fleet-proxy": "host-gateway"},
            init=True,
            network_mode=network,
            **sec.hardening(),  # the holder only sleeps; agents' capabilities are their own
        )
        lab = {
            L.PROJECT: fleet, L.KIND: "host", L.HOST: host.name, L.NAMING: L.NAMING_VERSION,
            L.SPEC_HASH: host.spec_hash, L.SPEC: _spec_label(host.spec()),
        }
        c = self._call(
            resource, self.api.create_container, image=host.image.ref, command=HOLDER_COMMAND, name=name,
            labels=lab, host_config=hc, volumes=volumes,
            working_dir="/workspace", hostname=host.name,
        )
        self._call(resource, self.api.start, c["Id"])
        return self._call(resource, made.outcome, self.api, c["Id"])  # its address: routes go there

    def start_host(self, fleet: str, host: ObservedHost) -> Outcome:
        self._call(f"host {host.name}", self.api.start, host.id)
        return self._call(f"host {host.name}", made.outcome, self.api, host.id)

    def destroy_host(self, fleet: str, host: ObservedHost) -> None:
        self._remove(f"host {host.name}", host.id, fleet)

    # ------------------------------------------------------------------ agents

    def create_agent(self, desired: Desired, agent: DesiredAgent) -> Outcome:
        fleet = desired.fleet
        resource = f"agent {agent.name}"
        lab = {
            L.PROJECT: fleet, L.KIND: "agent", L.AGENT: agent.name, L.NAMING: L.NAMING_VERSION,
            L.SPEC_HASH: agent.spec_hash, L.SPEC: _spec_label(agent.spec()),
            L.PORTS: json.dumps(agent.ports, sort_keys=True),
            L.MESSAGE: "pending" if agent.message else "none",
        }
        env = dict(agent.env)
        from reconciler.grants.inject import bind_credential, container_setup  # grants: proxy settings + CA bundle, never a secret

        grant_env, grant_binds = container_setup(desired, agent)  # both empty without grants
        from reconciler.providers.docker.agentnet import container_setup as url_setup  # fleet URLs inside: names, curl, routing CA

        net_env, net_binds = url_setup(desired, agent, bundle=not agent.grants)
        env.update({**net_env, **grant_env})
        grant_binds = {**net_binds, **grant_binds}
        # capabilities are per container, even for agents sharing a holder's network
        common_hc: dict[str, Any] = dict(restart_policy={"Name": RESTART[agent.restart]}, init=True,
                                         **sec.hardening(agent.capabilities))
        if agent.restart == "on-failure":
            common_hc["restart_policy"]["MaximumRetryCount"] = 0
        if agent.host:
            lab[L.HOST] = agent.host
            holder = L.host_container(fleet, agent.host)
            hc = self.api.create_host_config(
                network_mode=f"container:{holder}", volumes_from=[holder], binds=grant_binds or None, **common_hc
            )
            kwargs: dict[str, Any] = {}
        else:
            self.ensure_image(fleet, agent.image, resource)
            binds = dict(grant_binds)
            if agent.workspace is not None:
                mounts = workspaces.prepare(fleet, agent.name, agent.workspace)
                binds[str(mounts.workspace)] = {"bind": "/workspace", "mode": "rw"}
                for src, dst in mounts.extra.items():
                    binds[src] = {"bind": dst, "mode": "rw"}
                for src, dst in mounts.read_only.items():  # the fleet file, git config: never the agent's
                    binds[src] = {"bind": dst, "mode": "ro"}
                env.update(mounts.env)
            ports = sorted(set(agent.ports.values()))
            hc = self.api.create_host_config(
                binds=binds,
                port_bindings={f"{p}/tcp": ("127.0.0.1", None) for p in ports},
                extra_hosts={"fleet-proxy": "host-gateway"},
                network_mode=self._call(resource, sec.ensure_network, self.api),
                **common_hc,
            )
            kwargs = {"ports": [(p, "tcp") for p in ports], "hostname": agent.name}
        c = self._call(
            resource, self.api.create_container, image=agent.image.ref, command=list(agent.command) if agent.command else None,
            name=L.agent_container(fleet, agent.name), labels=lab, environment=env, host_config=hc,
            tty=True, stdin_open=True, working_dir="/workspace" if (agent.workspace or agent.host) else None,
            **kwargs,
        )
        if grant_env:  # the credential works only from this container (grants.peers)
            bind_credential(fleet, agent.name, c["Id"])
        self._call(resource, self.api.start, c["Id"])
        return self._call(resource, made.outcome, self.api, c["Id"])  # its published ports: routes go there

    def start_agent(self, fleet: str, agent: ObservedAgent) -> Outcome:
        self._call(f"agent {agent.name}", self.api.start, agent.id)
        return self._call(f"agent {agent.name}", made.outcome, self.api, agent.id)  # ports change on a start

    def restart_agent(self, fleet: str, agent: ObservedAgent) -> Outcome:
        self._call(f"agent {agent.name}", self.api.restart, agent.id, timeout=STOP_TIMEOUT)
        return self._call(f"agent {agent.name}", made.outcome, self.api, agent.id)

    def stop_agent(self, fleet: str, agent: ObservedAgent) -> None:
        self._call(f"agent {agent.name}", self.api.stop, agent.id, timeout=STOP_TIMEOUT)

    def destroy_agent(self, fleet: str, agent: ObservedAgent) -> None:
        self._remove(f"agent {agent.name}", agent.id, fleet)
        from reconciler.grants import agents as grant_agents

        grant_agents.forget(fleet, agent.name)  # its proxy credential dies with it
        from reconciler.providers.docker.agentnet import forget

        forget(fleet, agent.name)  # and its hosts file

    def _remove(self, resource: str, container_id: str, fleet: str) -> None:
        """Stop gracefully, then remove; a container already gone is fine. The
        fleet label is checked again, so a reused id can never hit a stranger."""
        from docker.errors import APIError, NotFound

        try:
            info = self.api.inspect_container(container_id)
        except NotFound:
            return
        if not L.ownership(fleet, info.get("Config", {}).get("Labels") or {}, info.get("Name", "")):
            raise ProviderError(resource, f"container {container_id[:12]} is not one fleet created for fleet {fleet}; not touching it")
        try:
            if info.get("State", {}).get("Running"):
                self.api.stop(container_id, timeout=STOP_TIMEOUT)
            self.api.remove_container(container_id, force=True)
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc):
                return
            raise ProviderError(resource, (exc.explanation or str(exc)).strip()) from None

    # ------------------------------------------------------------------ volumes

    def remove_volumes(self, fleet: str) -> list[str]:
        vols = self.api.volumes(filters={"label": L.project_filter(fleet)}).get("Volumes") or []
        removed = []
        for v in vols:
            host = (v.get("Labels") or {}).get(L.HOST) or ""
            if v["Name"] not in (L.workspace_volume(fleet, host), L.legacy_workspace_volume(fleet, host)):
                continue  # labels alone do not make a volume fleet's
            self._call(f"volume {v['Name']}", self.api.remove_volume, v["Name"], force=True)
            removed.append(v["Name"])
        return removed

    # ------------------------------------------------------------------ agent operations

    def _running(self, agent: ObservedAgent, what: str) -> dict:
        """The container's details, refusing clearly when it cannot take `what`."""
        from docker.errors import NotFound

        try:
            info = self.api.inspect_container(agent.id)
        except NotFound:
            raise ProviderError(f"agent {agent.name}", f"its container is gone; run `fleet apply` first ({what} not done)") from None
        state = info.get("State", {})
        if state.get("Restarting"):
            raise ProviderError(
                f"agent {agent.name}",
                f"is restarting (last exit code {state.get('ExitCode')}); {what} not done, try again when it runs",
            )
        if not state.get("Running"):
            raise ProviderError(
                f"agent {agent.name}",
                f"is not running ({state.get('Status')}, exit code {state.get('ExitCode')}); {what} not done; "
                "`fleet apply` starts it",
            )
        return info

    def logs(self, fleet: str, agent: ObservedAgent, follow: bool = False, tail: int | None = None,
             since: float | None = None):
        """The agent's output as byte chunks (its terminal's output)."""
        kwargs: dict[str, Any] = dict(stdout=True, stderr=True, stream=True, follow=follow, tail=tail if tail is not None else "all")
        if since is not None:
            kwargs["since"] = int(since)
        return self._call(f"agent {agent.name}", self.api.logs, agent.id, **kwargs)

    def exec(self, fleet: str, agent: ObservedAgent, cmd: list[str], workdir: str | None = None,
             env: dict[str, str] | None = None, interactive: bool = False, tty: bool = False) -> int:
        """Run `cmd` in the agent's container, streaming to our stdout/stderr;
        returns its exit code."""
        import os
        import sys

        from reconciler.providers.terminal import bridge, read_frames

        info = self._running(agent, "exec")
        resource = f"agent {agent.name}"
        wd = workdir or info.get("Config", {}).get("WorkingDir") or None
        ex = self._call(resource, self.api.exec_create, agent.id, cmd, stdin=interactive, tty=tty,
                        environment=env or None, workdir=wd)
        sock = self._call(resource, self.api.exec_start, ex["Id"], socket=True, tty=tty)
        raw = getattr(sock, "_sock", sock)
        try:
            if tty:
                bridge(raw, resize=lambda h, w: self.api.exec_resize(ex["Id"], height=h, width=w) if interactive else None)
            else:
                if interactive:
                    import threading

                    def feed() -> None:
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

                    threading.Thread(target=feed, daemon=True).start()
                for stream, data in read_frames(raw):
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

    def attach(self, fleet: str, agent: ObservedAgent, detach_keys: str, replay: int = 24):
        """Connect our terminal to the agent's own, after replaying its last
        `replay` lines of output (what its screen shows). Returns an AttachEnd:
        detached (the user typed the detach keys; the agent is left running),
        or the agent's process ended, with its exit code."""
        import queue
        import sys
        import threading

        from reconciler.providers.terminal import AttachEnd, bridge, parse_detach_keys

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
        raw = getattr(sock, "_sock", sock)
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
        import time

        before = self._running(agent, "message")
        started = before["State"].get("StartedAt")
        sock = self._call(f"agent {agent.name}", self.api.attach_socket, agent.id, params={"stdin": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
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
        import time

        from docker.errors import NotFound

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
        obs = ObservedAgent(name=agent.name, host=agent.host, provider="docker", id=info["Id"], state="running", spec_hash="")
        from reconciler.state.messages import typed

        self.send_input(fleet, obs, typed(text))
        return info["Id"]

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
