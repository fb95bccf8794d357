"""The Modal provider: a shared host is a named, tagged Modal Sandbox; each agent
on it is a process started with `Sandbox.exec` under a small supervisor (see
sh.py), so agents share the sandbox's /workspace, network and bill.

The sandbox's tags are the state, as Docker labels are for the Docker provider:
the same keys (project, kind, host, spec-hash) plus one tag per agent holding its
spec hash, a generation and flags. Tag values stay within 63 characters of
`[A-Za-z0-9._-]`: a sha256 is stored in base64url (43 characters), whole, so the
hashes compared by reconcile are the same as Docker's.

Observation uses the public SDK only: one `Sandbox.list(app_id, tags)` per app
(which pages until an empty page) plus one `get_tags()` per host sandbox, since
the listing drops tags. That scales with hosts, not agents, and never execs.
App ids, tunnel URLs (fixed at creation) and specs behind hashes are cached under
$FLEET_HOME (local.py), so a no-op apply makes no other call.

The parts: tags.py (tag keys and encodings), session.py (client, errors,
sandbox handles, agent supervisors), hosts.py (sandboxes, uploads, snapshots),
io.py (input, logs, exec, attach, archives), sh.py and router.py (what runs in
the sandbox), local.py (what is kept under $FLEET_HOME). This module holds
observation and the agents' lifecycle, and declares the capabilities.

`modal` is imported only when this provider is used (a fleet with a Modal host).

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core import labels as L
from reconciler.core.errors import ProviderError
from reconciler.core.outcome import Outcome
from reconciler.core.model import Desired, DesiredAgent, ObservedAgent, ObservedHost
from reconciler.providers import base
from reconciler.providers.base import AgentExtras
from reconciler.providers.modal import local, sh
from reconciler.providers.modal.hosts import ModalHosts
from reconciler.providers.modal.io import ModalAgentIO, detach_sequence
from reconciler.providers.modal.session import _modal
from reconciler.providers.modal.tags import (
    AGENT_TAG, CREATED_TAG, PENDING, PORTS_TAG, WORKDIR, _b64, _gen_time, _generation, _hex, _iso, agent_tag, app_name,
    parse_agent_tag,
)


class ModalProvider(ModalHosts, ModalAgentIO):
    """Realises shared hosts as Modal sandboxes and agents as supervised execs."""

    name = "modal"
    capabilities = frozenset({base.ARCHIVE, base.SNAPSHOTS})

    # ------------------------------------------------------------------ observe

    def observe(self, fleet: str) -> tuple[list[ObservedHost], list[ObservedAgent]]:
        modal = _modal()
        hosts: list[ObservedHost] = []
        agents: list[ObservedAgent] = []
        with self._errors(f"fleet {fleet} on Modal"):
            for name, env, app_id in self._apps(fleet):
                found = None
                if app_id is not None:
                    try:
                        found = self._list(app_id, fleet)
                    except modal.exception.NotFoundError:
                        found = None  # a cached id of an app that is gone: look it up again
                if found is None:
                    app_id = self._app_id(fleet, name, env, create=False)
                    found = self._list(app_id, fleet) if app_id else []
                for sb in found:
                    tags = dict(sb.get_tags())
                    if tags.get(L.PROJECT) != fleet or tags.get(L.KIND) != "host" or not tags.get(L.HOST):
                        continue
                    host, host_agents = self._records(fleet, sb, tags)
                    self._remember(fleet, host.name, sb)
                    hosts.append(host)
                    agents.extend(host_agents)
        return hosts, agents

    def _list(self, app_id: str, fleet: str) -> list[Any]:
        modal = _modal()
        return list(modal.Sandbox.list(app_id=app_id, tags={L.PROJECT: fleet, L.KIND: "host"}, client=self.client))

    def _records(self, fleet: str, sb: Any, tags: dict[str, str]) -> tuple[ObservedHost, list[ObservedAgent]]:
        name = tags[L.HOST]
        sid = sb.object_id
        raw_hash = tags.get(L.SPEC_HASH, "")
        spec_hash = "" if raw_hash == PENDING else _hex(raw_hash)
        ports = [int(p) for p in tags.get(PORTS_TAG, "").split(".") if p.isdigit()]
        urls: dict[int, str] = {}
        if ports:
            cached = local.tunnels(fleet, sid)
            if cached is None:
                cached = {p: t.url for p, t in sb.tunnels(timeout=30).items()}
                local.remember_tunnels(fleet, sid, cached)
            urls = cached
        created = _iso(float(tags[CREATED_TAG])) if tags.get(CREATED_TAG, "").isdigit() else None
        agents: list[ObservedAgent] = []
        on_host: dict[str, str] = {}
        for key, value in sorted(tags.items()):
            if not key.startswith(AGENT_TAG):
                continue
            agent = key[len(AGENT_TAG):]
            a_hash, gen, flags = parse_agent_tag(value)
            on_host[agent] = a_hash
            running = "r" in flags
            agents.append(
                ObservedAgent(
                    name=agent, host=name, provider="modal", id=f"{sid}:{agent}:{gen}",
                    state="running" if running else "exited", spec_hash=a_hash,
                    spec=local.spec(fleet, a_hash) if a_hash else {}, created=_iso(_gen_time(gen)),
                    status=f"supervised in sandbox {sid}" if running else "stopped by fleet",
                    host_id=sid, message_pending="m" in flags,
                )
            )
        host = ObservedHost(
            name=name, provider="modal", id=sid, state="running", spec_hash=spec_hash,
            spec=local.spec(fleet, spec_hash) if spec_hash else {}, urls=urls, created=created, agents=on_host,
        )
        return host, agents

    # ------------------------------------------------------------------ agents

    def observe_warnings(self, fleet: str) -> list[str]:
        return []

    def create_agent(self, desired: Desired, agent: DesiredAgent, extras: AgentExtras | None = None) -> Outcome:
        """Prepare the agent's supervisor in its host's sandbox and start it; returns
        its id (sandbox:agent:generation). Of `extras` only the environment applies
        and read-only file binds, copied into the sandbox (the grants CA bundle:
        public certificates, never a secret)."""
        fleet = desired.fleet
        resource = f"agent {agent.name}"
        host = desired.hosts.get(agent.host or "")
        if host is None or host.provider != "modal":
            raise ProviderError(resource, "an agent on Modal runs on a shared host with provider: modal")
        sb = self._host_sandbox(fleet, host.name, host.modal, resource)
        gen = _generation()
        with self._errors(resource, host.name):
            self._owned_tags(sb, fleet, resource)  # never exec in a sandbox that is not this fleet's
            env = {**agent.env, **(extras.env if extras is not None else {})}
            for src, bind in (extras.binds if extras is not None else {}).items():
                self._put_file(sb, Path(src), bind["bind"], resource)  # a sandbox has no binds: a copy
            script = sh.prepare(agent.name, agent.command, agent.restart, env, tuple(agent.ports.values()))
            code, out, err = self._run(sb, ["sh", "-s"], stdin=script.encode(), timeout=60)
            if code != 0:
                why = (out + err).decode(errors="replace").strip()[-200:] or f"exit code {code}"
                hint = "; the host image needs a POSIX sh" if code in (126, 127) else ""
                raise ProviderError(resource, f"could not prepare it in the sandbox ({why}){hint}")
            if agent.ports:
                self._ensure_router(sb, resource, required=True)
            self._start(sb, agent.name, resource)
            flags = "r" + ("m" if agent.message else "")
            self._set_agent_tag(sb, fleet, agent.name, resource, agent_tag(agent.spec_hash, gen, flags))
        local.remember_spec(fleet, agent.spec_hash, agent.spec())
        agent_id = f"{sb.object_id}:{agent.name}:{gen}"
        self._agent_ids[(fleet, agent.name)] = agent_id
        return Outcome(id=agent_id)

    def _put_file(self, sb: Any, src: Path, dest: str, resource: str) -> None:
        quoted = shlex.quote(dest)
        code, out, err = self._run(sb, ["sh", "-c", f"mkdir -p \"$(dirname {quoted})\" && cat > {quoted}"],
                                   stdin=src.read_bytes(), timeout=60)
        if code != 0:
            raise ProviderError(resource, f"could not write {dest} in the sandbox ({(out + err).decode(errors='replace').strip()[-200:]})")

    def start_agent(self, fleet: str, agent: ObservedAgent) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            self._agent_entry(self._owned_tags(sb, fleet, resource), agent.name, resource)
            if agent.spec.get("ports"):  # (re)start the port router too, should it have died
                self._ensure_router(sb, resource, required=True)
            self._start(sb, agent.name, resource)
            self._set_agent_tag(sb, fleet, agent.name, resource, running=True)

    def restart_agent(self, fleet: str, agent: ObservedAgent) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            self._owned_tags(sb, fleet, resource)
            self._stop(sb, agent.name, resource)
            if agent.spec.get("ports"):
                self._ensure_router(sb, resource, required=True)
            self._start(sb, agent.name, resource)

    def stop_agent(self, fleet: str, agent: ObservedAgent) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            self._agent_entry(self._owned_tags(sb, fleet, resource), agent.name, resource)
            self._stop(sb, agent.name, resource)
            self._set_agent_tag(sb, fleet, agent.name, resource, running=False)

    def remove_agent(self, fleet: str, agent: ObservedAgent) -> None:
        """Stop the agent and forget it; an agent whose sandbox has ended is gone already."""
        modal = _modal()
        resource = f"agent {agent.name}"
        if not agent.host_id or agent.host_id in self._ended:
            return
        try:
            sb = self._sandbox(agent.host_id, resource)
        except ProviderError:
            return
        with self._errors(resource, agent.host):
            try:
                self._owned_tags(sb, fleet, resource)
                self._stop(sb, agent.name, resource, script=sh.DESTROY)
                self._set_agent_tag(sb, fleet, agent.name, resource, None)
            except (modal.exception.NotFoundError, modal.exception.ConflictError):
                return  # the sandbox has ended: the agent went with it


__all__ = [
    "ModalProvider", "agent_tag", "parse_agent_tag", "app_name", "detach_sequence",
    "AGENT_TAG", "PORTS_TAG", "CREATED_TAG", "PENDING", "WORKDIR", "_b64",
]


if TYPE_CHECKING:  # mypy checks that the class implements the protocol and its declared capabilities
    _provider: base.Provider = ModalProvider()
    _archive: base.Archive = ModalProvider()
    _snapshots: base.Snapshots = ModalProvider()
