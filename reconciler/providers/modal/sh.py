"""The shell side of Modal agents: a small supervisor and the scripts that talk to it.

Why it exists: a Modal exec's stdin is reachable only from the client that
started it, and a later `fleet message` or `fleet attach` runs in another
process. So each agent runs under a supervisor (POSIX sh, nothing beyond what a
Debian-based image has; `script` from bsdutils gives the terminal) started by
one long-lived `Sandbox.exec` per agent. Everything about an agent lives in
`/run/fleet/<agent>/`:

    config   the agent's command, restart policy and environment (sh, sourced)
    in       a FIFO feeding the agent's terminal (message, attach)
    log      the terminal's output, appended across restarts (logs)
    status   "<state> <restarts> <last exit code> <since>", state one of
             running | restarting | exited | stopped
    pid      the supervisor's pid; agent.pid: the agent's session leader
    ports    the agent's declared ports, one a line (read by the port router)

The supervisor holds the FIFO open read-write so writers never block and the
agent never sees end-of-file when a writer leaves; it restarts the agent per
`restart` (always / on-failure / never) with a capped backoff, and stops it
(its whole process group) on SIGTERM. Replacing one agent stops only its own
supervisor (found by pid file, checked against /proc/<pid>/cmdline) and starts
another: neighbours keep running.
"""

from __future__ import annotations

import re
import secrets
import shlex

from reconciler.core.errors import FleetError

ROOT = "/run/fleet"
SUPERVISOR_PATH = f"{ROOT}/supervise"

SUPERVISOR = r"""# fleet agent supervisor: sh /run/fleet/supervise AGENT
a=$1
d=/run/fleet/$a
[ -f "$d/config" ] || { echo "fleet: no $d/config" >&2; exit 70; }
. "$d/config"
[ -p "$d/in" ] || { rm -f "$d/in"; mkfifo -m 600 "$d/in"; } || exit 71
exec 3<>"$d/in" </dev/null >/dev/null 2>&1
: >>"$d/log"
echo $$ >"$d/pid"
restarts=0 code=- child= delay=1
status() { echo "$1 $restarts $code $(date +%s)" >"$d/status.tmp" && mv -f "$d/status.tmp" "$d/status"; }
finish() {
  if [ -n "$child" ]; then
    ap=$(cat "$d/agent.pid" 2>/dev/null)
    [ -n "$ap" ] && kill -TERM -"$ap" 2>/dev/null
    kill -TERM "$child" 2>/dev/null
    i=0
    while kill -0 "$child" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    [ -n "$ap" ] && kill -KILL -"$ap" 2>/dev/null
    kill -KILL "$child" 2>/dev/null
  fi
  status stopped; rm -f "$d/pid" "$d/agent.pid"; exit 0
}
trap finish TERM INT HUP
run="echo \$\$ >'$d/agent.pid'; stty cols 160 rows 48 2>/dev/null; exec $FLEET_COMMAND"
# `&` in a script starts its job with SIGINT/SIGQUIT ignored, and that is
# inherited: Ctrl-C typed at the agent's terminal must act as on Docker
dflt=
env --default-signal=INT,QUIT true 2>/dev/null && dflt="env --default-signal=INT,QUIT"
while :; do
  status running
  started=$(date +%s)
  if command -v script >/dev/null 2>&1; then
    SHELL=/bin/sh $dflt script -qfec "$run" /dev/null <"$d/in" >>"$d/log" 2>&1 &
  else
    $dflt setsid sh -c "$run" <"$d/in" >>"$d/log" 2>&1 &
  fi
  child=$!
  wait "$child"; code=$?
  child=
  case $FLEET_RESTART in
    never) break ;;
    on-failure) [ "$code" = 0 ] && break ;;
  esac
  restarts=$((restarts+1))
  status restarting
  [ $(( $(date +%s) - started )) -ge 10 ] && delay=1
  sleep "$delay" & child=$!; wait "$child"; child=
  delay=$((delay*2)); [ $delay -gt 30 ] && delay=30
done
status exited; rm -f "$d/pid" "$d/agent.pid"
"""

# Stop the supervisor of agent $1 if one runs (and the agent with it). A pid file
# from another life (a restored snapshot) is ignored unless that pid really is
# this agent's supervisor.
_STOP = r"""
stop_agent() {
  d=/run/fleet/$1
  p=$(cat "$d/pid" 2>/dev/null) || return 0
  [ -n "$p" ] || return 0
  case "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" in
    "sh /run/fleet/supervise $1 "*) ;;
    *) return 0 ;;
  esac
  kill -TERM "$p" 2>/dev/null
  i=0
  while kill -0 "$p" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$p" 2>/dev/null
  ap=$(cat "$d/agent.pid" 2>/dev/null)
  [ -n "$ap" ] && kill -KILL -"$ap" 2>/dev/null
  rm -f "$d/pid" "$d/agent.pid"
  return 0
}
"""

# Is the supervisor of agent $1 alive? (exit 3 when not, printing its status)
_ALIVE = r"""
alive() {
  d=/run/fleet/$1
  p=$(cat "$d/pid" 2>/dev/null)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ -p "$d/in" ]; then return 0; fi
  cat "$d/status" 2>/dev/null || echo "missing"
  exit 3
}
"""

STOP = _STOP + 'stop_agent "$1"\n'

# stop the agent, then forget it: its directory goes too
DESTROY = _STOP + 'stop_agent "$1"; rm -rf "/run/fleet/$1"\n'

# wait (up to ~10 s) for the supervisor of $1 to have started (its status file is
# written first; an agent that exits at once under restart: never is done already)
READY = r"""
d=/run/fleet/$1
i=0
while [ $i -lt 100 ]; do
  if [ -s "$d/status" ]; then cat "$d/status"; exit 0; fi
  sleep 0.1; i=$((i+1))
done
exit 3
"""

# copy stdin into the agent's terminal; exit 4 when the agent restarted meanwhile
SEND = _ALIVE + r"""
alive "$1"
before=$(cut -d' ' -f2 "$d/status" 2>/dev/null)
cat >"$d/in" || exit 5
after=$(cut -d' ' -f2 "$d/status" 2>/dev/null)
[ "$before" = "$after" ] || exit 4
"""

# the agent's output: $1 agent, $2 lines ("all" or N), $3 follow (1/0); prints
# the pid of this script first so the caller can stop a follow
LOGS = r"""
d=/run/fleet/$1
echo $$
[ -e "$d/log" ] || { echo "fleet: no output recorded for $1" >&2; exit 3; }
if [ "$2" = all ]; then n=+1; else n=$2; fi
if [ "$3" = 1 ]; then exec tail -n "$n" -F "$d/log" 2>/dev/null; fi
exec tail -n "$n" "$d/log"
"""

# attach: the log's last $2 lines on, while stdin goes to the terminal; ends by
# itself (exit 6) once the agent's process ends (its status line changes state
# or restart count), so the caller can tell the user what became of it
ATTACH = _ALIVE + r"""
alive "$1"
before=$(cut -d' ' -f1,2 "$d/status" 2>/dev/null)
tail -s 0.2 -n "${2:-24}" -F "$d/log" 2>/dev/null &
t=$!
exec 4<&0
cat <&4 >"$d/in" &
c=$!
while kill -0 "$c" 2>/dev/null; do
  now=$(cut -d' ' -f1,2 "$d/status" 2>/dev/null)
  if [ "$now" != "$before" ]; then sleep 0.6; kill "$c" "$t" 2>/dev/null; exit 6; fi
  sleep 0.3
done
kill "$t" 2>/dev/null
"""

# every agent's status line on this host: "<agent> <state> <restarts> <code> <since>"
STATUS = r"""
for s in /run/fleet/*/status; do
  [ -f "$s" ] || continue
  a=${s%/status}; a=${a##*/}
  p=$(cat "/run/fleet/$a/pid" 2>/dev/null)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then up=1; else up=0; fi
  echo "$a $up $(cat "$s")"
done
"""


def in_agent_env(extra: dict[str, str]) -> str:
    """`sh -c` script running "$@" (after the agent name in $1) with the agent's
    environment, as an exec in a Docker agent's container would, plus `extra`."""
    for key in extra:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise FleetError(f"-e: {key!r} is not a valid environment variable name")
    exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(extra.items()))
    return f'[ -f "{ROOT}/$1/config" ] && . "{ROOT}/$1/config"; {exports}shift; exec "$@"'


def prepare(agent: str, command: tuple[str, ...] | None, restart: str, env: dict[str, str],
            ports: tuple[int, ...] = ()) -> str:
    """The script (fed to `sh -s` on stdin) that makes an agent ready to start:
    stops an earlier supervisor of the same agent, resets its directory, installs
    the supervisor and writes the agent's config and its declared ports (the
    host's port router forwards to these only, router.py)."""
    words = shlex.join(command) if command else "/bin/sh"
    env = {"TERM": "xterm-256color", **env}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += [f"FLEET_COMMAND={shlex.quote(words)}", f"FLEET_RESTART={shlex.quote(restart)}"]
    config = "\n".join(lines) + "\n"
    end = "FLEET_EOF_" + secrets.token_hex(8)
    d = f"{ROOT}/{agent}"
    qd = shlex.quote(d)
    return (
        _STOP
        + f"stop_agent {shlex.quote(agent)}\n"
        + f"rm -rf {qd} && mkdir -p {qd} || exit 1\n"
        + f"cat >{SUPERVISOR_PATH}.$$ <<'{end}' || exit 1\n{SUPERVISOR}{end}\n"
        + f"mv -f {SUPERVISOR_PATH}.$$ {SUPERVISOR_PATH} || exit 1\n"
        + f"cat >{qd}/config <<'{end}' || exit 1\n{config}{end}\n"
        + f"chmod 600 {qd}/config\n"
        + f"printf '%s\\n' {' '.join(str(p) for p in sorted(ports))} >{qd}/ports\n" * bool(ports)
    )


def parse_status(text: str) -> dict[str, dict]:
    """Output of STATUS -> agent -> {state, running, restarts, exit_code, since}."""
    out: dict[str, dict] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        agent, up, state, restarts, code, since = parts[:6]
        out[agent] = {
            "state": state,
            "running": up == "1" and state in ("running", "restarting"),
            "restarts": int(restarts) if restarts.isdigit() else 0,
            "exit_code": int(code) if code.lstrip("-").isdigit() else None,
            "since": int(since) if since.isdigit() else None,
        }
    return out
