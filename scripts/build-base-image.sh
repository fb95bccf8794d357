#!/usr/bin/env bash
# Build fleet-base:bookworm, a minimal Debian with what the demo and the tests
# need (no registry is reachable, so nothing can be pulled). Skipped when the
# image already exists. debootstrap + docker import: about a minute.
#
# The Debian mirror is the one this machine's apt uses (its sources.list,
# sources.list.d/*.list and deb822 *.sources; see scripts/debian-mirror.py), so
# the build works wherever apt works, behind a local mirror too; an apt proxy
# (Acquire::http::Proxy) is passed on as http_proxy. FLEET_DEBIAN_MIRROR=URL
# overrides; with nothing configured it is http://deb.debian.org/debian.
# (FLEET_APT_ROOT=DIR reads DIR/etc/apt instead: for tests.)
set -euo pipefail
IMAGE=${FLEET_BASE_IMAGE:-fleet-base:bookworm}
SUITE=bookworm
PKGS=ca-certificates,curl,git,python3,procps,iproute2
here=$(cd "$(dirname "$0")" && pwd)
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi

if [ -n "${FLEET_DEBIAN_MIRROR:-}" ]; then
  mirror=$FLEET_DEBIAN_MIRROR source="FLEET_DEBIAN_MIRROR"
elif mirror=$(python3 "$here/debian-mirror.py" "$SUITE" --root "${FLEET_APT_ROOT:-/}"); then
  source="this machine's apt sources"
else
  mirror=http://deb.debian.org/debian source="the default (no Debian source found in /etc/apt)"
fi
if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null 2>&1; then
  proxy=$(apt-config shell p Acquire::http::Proxy 2>/dev/null | sed -n "s/^p='\(.*\)'$/\1/p")
  if [ -n "$proxy" ] && [ "$proxy" != DIRECT ]; then export http_proxy=$proxy; fi
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
dir=$(mktemp -d /tmp/fleet-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
log=$(mktemp "${TMPDIR:-/tmp}/fleet-debootstrap.XXXXXX")  # kept for a look after a failure
echo "fleet setup: debootstrapping $IMAGE from $mirror ($source${http_proxy:+, via proxy $http_proxy}), about a minute" >&2
if ! debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$dir" "$mirror" >"$log" 2>&1; then
  echo "fleet setup: debootstrap of Debian $SUITE from $mirror ($source) failed; last lines of $log:" >&2
  tail -n 5 "$log" | sed 's/^/  /' >&2
  echo "fleet setup: check that apt can reach that mirror (apt-get update), or set FLEET_DEBIAN_MIRROR to a Debian mirror that serves $SUITE" >&2
  exit 1
fi
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
echo "fleet setup: built $IMAGE" >&2
