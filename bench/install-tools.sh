#!/usr/bin/env bash
# What `make bench` needs besides the venv and the engine: Debian's
# docker-compose (v1), nginx, wrk and a static busybox (for the tiny image).
# Installs what is missing with apt-get as root; elsewhere says what to install.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /bin/busybox ] || docker image inspect fleet-bench-tiny >/dev/null 2>&1 || missing+=(busybox-static)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "bench: please install ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "bench: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
# Debian's nginx package may start a system nginx on port 80: the benchmark runs its own
if [[ " ${missing[*]} " == *" nginx "* ]] && command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
