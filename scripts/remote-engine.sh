#!/usr/bin/env bash
# A "remote machine" for tests, on this machine: a second Docker engine in a
# network namespace of its own, behind an sshd, reachable as `ssh NAME`.
#
#   scripts/remote-engine.sh up NAME      # idempotent; prints the status lines
#   scripts/remote-engine.sh status NAME  # key=value lines; exit 0 when up
#   scripts/remote-engine.sh down NAME    # removes all of it (keeps the image cache)
#   scripts/remote-engine.sh down --purge NAME  # also the engine's data root and keys
#   scripts/remote-engine.sh deps         # only install openssh-server/-client when missing
#
# What `up` makes (see /work/shared/REMOTE.md for why each step is so):
# - netns fleet-remote-NAME, veth fr-NAME (this side, 10.231.X.Y+1/30) <-> eth0
#   inside (+2/30), lo up, a default route inside;
# - a dockerd started with nsenter --net (never `ip netns exec`, never
#   `--bridge none`): socket /run/fleet-remote/NAME/sock/docker.sock, exec root
#   /run/fleet-remote/NAME/exec, pidfile /run/fleet-remote/NAME/docker.pid, data root
#   /var/lib/fleet-remote/NAME/docker. Its binary is a symlink named
#   fleet-remoted so that `pkill -x dockerd` / `pgrep -x dockerd` (which restart or
#   count the machine's own engine) never hit or count it; containerd namespaces of
#   its own, in case it shares a system containerd (/run/containerd) with the
#   machine's engine, as on hosts where containerd runs as a service;
# - $FLEET_BASE_IMAGE (fleet-base:bookworm) loaded into it when missing;
# - an sshd listening on the namespace side, in a mount namespace of its own
#   where /run is a fresh tmpfs and /var/run/docker.sock leads to the second
#   engine (a symlink into a bind of its socket *directory*, so a restarted
#   engine's new socket is seen too);
# - a user key pair and host key under /var/lib/fleet-remote/NAME/ssh, and a
#   marked `Host NAME` block at the top of root's ~/.ssh/config (passwd home)
#   with StrictHostKeyChecking accept-new and a UserKnownHostsFile of its own.
#
# Needs root, iproute2, nsenter/unshare, dockerd and the docker CLI; installs
# openssh-server/openssh-client with apt-get when missing.
set -euo pipefail

usage() { echo "usage: $0 up|down [--purge]|status NAME, or $0 deps" >&2; exit 2; }
die() { echo "remote-engine: $*" >&2; exit 1; }

cmd=${1:-}; shift || true
if [ "$cmd" = deps ]; then set -- deps; fi  # no NAME: only the tools
purge=0
if [ "${1:-}" = --purge ]; then purge=1; shift; fi
NAME=${1:-}
[ "$cmd" = deps ] && NAME=deps
[ -n "$cmd" ] && [ -n "$NAME" ] || usage
[[ $NAME =~ ^[a-z][a-z0-9-]{0,11}$ ]] || die "NAME must be 1-12 of a-z 0-9 - starting with a letter (it names a network interface): '$NAME'"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, a second dockerd)"

IMAGE=${FLEET_BASE_IMAGE:-fleet-base:bookworm}
NS=fleet-remote-$NAME
VETH=fr-$NAME
RUN=/run/fleet-remote/$NAME
LIB=/var/lib/fleet-remote/$NAME
SOCKDIR=$RUN/sock
SOCK=$SOCKDIR/docker.sock
DOCKER_HOST_URL=unix://$SOCK
SSHDIR=$LIB/ssh
VIEW=$LIB/sockview            # the socket directory as sshd's mount namespace sees it
SSHD_PID=$LIB/sshd.pid        # outside /run: sshd's /run is a tmpfs of its own
HOME_DIR=$(getent passwd "$(id -un)" | cut -d: -f6)
SSH_CONFIG=$HOME_DIR/.ssh/config
MARK_BEGIN="# >>> fleet remote-engine $NAME (scripts/remote-engine.sh; removed by 'down') >>>"
MARK_END="# <<< fleet remote-engine $NAME <<<"

# a /30 from the name: 10.231.A.B, this side .B+1, the namespace side .B+2
h=$(printf %s "$NAME" | cksum | cut -d' ' -f1)
NET=10.231.$(( (h >> 6) % 256 )).$(( (h % 64) * 4 ))
HOST_IP=${NET%.*}.$(( ${NET##*.} + 1 ))
NS_IP=${NET%.*}.$(( ${NET##*.} + 2 ))

rdocker() { docker -H "$DOCKER_HOST_URL" "$@"; }
nsrun() { nsenter --net=/var/run/netns/"$NS" "$@"; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ensure_ssh() {
  if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; then return; fi
  command -v apt-get >/dev/null || die "sshd/ssh missing and no apt-get: install OpenSSH server and client"
  echo "remote-engine: installing openssh-server openssh-client (log: /var/log/fleet-remote-apt.log)" >&2
  apt-get update -qq >/var/log/fleet-remote-apt.log 2>&1 || true
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >>/var/log/fleet-remote-apt.log 2>&1; then
    tail -n 20 /var/log/fleet-remote-apt.log >&2
    die "apt-get install openssh-server openssh-client failed"
  fi
}

net_up() {
  [ -e /var/run/netns/"$NS" ] || ip netns add "$NS"
  if ! ip link show "$VETH" >/dev/null 2>&1; then
    if ip -4 -o addr show | grep -q " $HOST_IP/"; then die "$HOST_IP is already in use on this machine"; fi
    ip link add "$VETH" type veth peer name "${VETH}-i"
    ip link set "${VETH}-i" netns "$NS"
    nsrun ip link set "${VETH}-i" name eth0
  fi
  ip addr replace "$HOST_IP/30" dev "$VETH"
  ip link set "$VETH" up
  nsrun ip addr replace "$NS_IP/30" dev eth0
  nsrun ip link set lo up
  nsrun ip link set eth0 up
  nsrun ip route replace default via "$HOST_IP"
}

engine_answers() { rdocker version >/dev/null 2>&1; }

engine_up() {
  mkdir -p "$RUN/exec" "$SOCKDIR" "$LIB/docker"
  if pid_alive "$RUN/docker.pid" && engine_answers; then return; fi
  if pid_alive "$RUN/docker.pid"; then   # started but not answering yet (or stuck)
    for _ in $(seq 1 40); do engine_answers && return; sleep 0.5; done
    die "the engine (pid $(cat "$RUN/docker.pid")) does not answer; see $LIB/dockerd.log"
  fi
  ln -sfn "$(command -v dockerd)" "$LIB/fleet-remoted"
  # setsid: not in the caller's process group (a test runner's Ctrl-C does not reach it)
  setsid nsenter --net=/var/run/netns/"$NS" "$LIB/fleet-remoted" \
    --host "$DOCKER_HOST_URL" --data-root "$LIB/docker" --exec-root "$RUN/exec" \
    --pidfile "$RUN/docker.pid" \
    --containerd-namespace "fleet-remote-$NAME" --containerd-plugins-namespace "fleet-remote-$NAME-plugins" \
    >>"$LIB/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do engine_answers && return; sleep 0.5; done
  tail -n 20 "$LIB/dockerd.log" >&2 || true
  die "the second dockerd did not answer within 60 s (log: $LIB/dockerd.log)"
}

image_up() {
  if rdocker image inspect "$IMAGE" >/dev/null 2>&1; then return; fi
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE is missing on this machine's engine: run 'make base-image'"
  docker save "$IMAGE" | rdocker load -q >/dev/null
}

ssh_keys() {
  mkdir -p "$SSHDIR"; chmod 700 "$LIB" "$SSHDIR"
  [ -f "$SSHDIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "fleet-remote-$NAME host" -f "$SSHDIR/host_ed25519"
  [ -f "$SSHDIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "fleet-remote-$NAME user" -f "$SSHDIR/id_ed25519"
  cp "$SSHDIR/id_ed25519.pub" "$SSHDIR/authorized_keys"
  chmod 600 "$SSHDIR/authorized_keys"
  cat >"$SSHDIR/sshd_config" <<EOF
# sshd of the test remote engine $NAME (scripts/remote-engine.sh)
ListenAddress $NS_IP:22
HostKey $SSHDIR/host_ed25519
AuthorizedKeysFile $SSHDIR/authorized_keys
PidFile $SSHD_PID
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
GatewayPorts clientspecified
ClientAliveInterval 5
ClientAliveCountMax 3
MaxSessions 50
MaxStartups 50:30:100
EOF
}

sshd_up() {
  if pid_alive "$SSHD_PID"; then return; fi
  mkdir -p "$VIEW"
  # In its own mount namespace: keep a handle on the socket directory, lay a
  # fresh tmpfs over /run (hides this machine's /run/docker.sock and
  # /run/fleet-remote), and make /run/docker.sock lead to the second engine.
  setsid nsenter --net=/var/run/netns/"$NS" unshare --mount --propagation private sh -c "
    mount --bind '$SOCKDIR' '$VIEW' &&
    mount -t tmpfs -o mode=755 fleet-remote-run /run &&
    mkdir -p /run/sshd && chmod 755 /run/sshd &&
    ln -s '$VIEW/docker.sock' /run/docker.sock &&
    exec /usr/sbin/sshd -f '$SSHDIR/sshd_config' -E '$LIB/sshd.log'
  " </dev/null >>"$LIB/sshd.log" 2>&1
  for _ in $(seq 1 40); do pid_alive "$SSHD_PID" && return; sleep 0.25; done
  tail -n 20 "$LIB/sshd.log" >&2 || true
  die "sshd did not start (log: $LIB/sshd.log)"
}

with_config_lock() {  # one writer of ~/.ssh/config at a time (engines of several names)
  mkdir -p "$HOME_DIR/.ssh"; chmod 700 "$HOME_DIR/.ssh"
  exec 9>"$(if [ -d /run/lock ]; then echo /run/lock; else echo /tmp; fi)/fleet-remote-ssh-config.lock"; flock 9
}

write_config() {  # through the file (a symlinked ~/.ssh/config stays a symlink), under the lock
  if [ -f "$SSH_CONFIG" ]; then cat "$1" >"$SSH_CONFIG"; rm -f "$1"; else chmod 600 "$1"; mv "$1" "$SSH_CONFIG"; fi
}

config_remove() {
  [ -f "$SSH_CONFIG" ] || return 0
  local tmp; tmp=$(mktemp "$SSH_CONFIG.XXXXXX")
  awk -v b="$MARK_BEGIN" -v e="$MARK_END" '$0==b{skip=1;next} $0==e{skip=0;next} !skip' "$SSH_CONFIG" >"$tmp"
  write_config "$tmp"
}

config_up() {
  with_config_lock
  config_remove
  local tmp; tmp=$(mktemp "$SSH_CONFIG.XXXXXX")
  # at the top: ssh takes the first value it finds, so a later `Host *` cannot override ours
  {
    echo "$MARK_BEGIN"
    echo "Host $NAME"
    echo "  HostName $NS_IP"
    echo "  User root"
    echo "  IdentityFile $SSHDIR/id_ed25519"
    echo "  IdentitiesOnly yes"
    echo "  StrictHostKeyChecking accept-new"
    echo "  UserKnownHostsFile $SSHDIR/known_hosts"
    echo "  BatchMode yes"
    echo "$MARK_END"
    [ -f "$SSH_CONFIG" ] && cat "$SSH_CONFIG"
  } >"$tmp"
  write_config "$tmp"
}

bridge_ip() { nsrun ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1; }

status() {
  local ok=0
  echo "name=$NAME"
  echo "ssh_alias=$NAME"
  echo "netns=$NS"
  echo "host_ip=$HOST_IP"
  echo "remote_ip=$NS_IP"
  echo "docker_host=$DOCKER_HOST_URL"
  echo "ssh_key=$SSHDIR/id_ed25519"
  if [ -e /var/run/netns/"$NS" ]; then echo "bridge_ip=$(bridge_ip)"; else echo "bridge_ip="; ok=1; fi
  if pid_alive "$RUN/docker.pid"; then echo "dockerd_pid=$(cat "$RUN/docker.pid")"; else echo "dockerd_pid="; ok=1; fi
  if engine_answers; then echo "engine=up"; else echo "engine=down"; ok=1; fi
  if pid_alive "$SSHD_PID"; then echo "sshd_pid=$(cat "$SSHD_PID")"; else echo "sshd_pid="; ok=1; fi
  if [ -f "$SSH_CONFIG" ] && grep -qxF "$MARK_BEGIN" "$SSH_CONFIG"; then echo "ssh_config=present"; else echo "ssh_config=absent"; ok=1; fi
  return $ok
}

stop_pid() {  # stop_pid PIDFILE WHAT SECONDS: TERM, wait, then KILL
  local f=$1 what=$2 secs=$3 pid
  pid_alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((secs * 4))); do kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }; sleep 0.25; done
  echo "remote-engine: $what (pid $pid) did not stop in ${secs}s: killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

down() {
  if engine_answers; then
    local ids
    ids=$(rdocker ps -aq)
    [ -z "$ids" ] || rdocker rm -f $ids >/dev/null 2>&1 || true
    rdocker volume prune -f >/dev/null 2>&1 || true
    ids=$(rdocker volume ls -q)
    [ -z "$ids" ] || rdocker volume rm -f $ids >/dev/null 2>&1 || true
    rdocker network prune -f >/dev/null 2>&1 || true
  fi
  stop_pid "$SSHD_PID" sshd 5
  stop_pid "$RUN/docker.pid" "the second dockerd" 30
  # whatever still runs in the namespace (ssh sessions forked by sshd, a stuck shim): by pid
  if [ -e /var/run/netns/"$NS" ]; then
    for p in $(ip netns pids "$NS" 2>/dev/null || true); do kill -KILL "$p" 2>/dev/null || true; done
  fi
  ip link del "$VETH" 2>/dev/null || true
  [ -e /var/run/netns/"$NS" ] && ip netns del "$NS"
  with_config_lock; config_remove
  rm -rf "$RUN"
  rmdir /run/fleet-remote 2>/dev/null || true
  if [ "$purge" = 1 ] && [ -d "$LIB" ]; then
    # renamed at once, deleted in the background (a data root takes a while to delete)
    local trash; trash=$(mktemp -d /var/lib/fleet-remote/.deleting-XXXXXX)
    mv "$LIB" "$trash/"
    setsid rm -rf "$trash" </dev/null >/dev/null 2>&1 &
  fi
}

case $cmd in
  deps) ensure_ssh ;;
  up)
    ensure_ssh
    net_up
    engine_up
    image_up
    ssh_keys
    sshd_up
    config_up
    status || { echo "remote-engine: not fully up" >&2; exit 1; } ;;
  status) status ;;
  down) down ;;
  *) usage ;;
esac
