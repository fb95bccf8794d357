#!/usr/bin/env bash
# Make sure a Docker engine answers. On Debian as root, install docker.io and
# start dockerd in the background when none does; elsewhere say what to start.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  echo "fleet: no Docker engine answers. Start Docker (Docker Desktop, or 'sudo systemctl start docker') and run again." >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "fleet setup: installing docker.io from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "fleet setup: starting dockerd in the background (log: /var/log/fleet-dockerd.log)" >&2
  nohup dockerd >/var/log/fleet-dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "fleet setup: dockerd did not answer within 30 s; see /var/log/fleet-dockerd.log" >&2
exit 1
