#!/usr/bin/env bash
# Build fleet-base:bookworm, a minimal Debian with what the demo and the tests
# need (no registry is reachable, so nothing can be pulled). Skipped when the
# image already exists. debootstrap + docker import: about a minute.
set -euo pipefail
IMAGE=${FLEET_BASE_IMAGE:-fleet-base:bookworm}
PKGS=ca-certificates,curl,git,python3,procps,iproute2
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
dir=$(mktemp -d /tmp/fleet-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "fleet setup: debootstrapping $IMAGE (about a minute)" >&2
debootstrap --variant=minbase --include="$PKGS" bookworm "$dir" http://deb.debian.org/debian >/tmp/fleet-debootstrap.log 2>&1 \
  || { echo "debootstrap failed; see /tmp/fleet-debootstrap.log" >&2; exit 1; }
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
echo "fleet setup: built $IMAGE" >&2
