#!/usr/bin/env bash
# Make this (Debian/Ubuntu) machine able to run the DigitServe stack in a real container engine:
# rootful podman with runc, podman-compose, and a local Debian base image for builds without a registry.
# Idempotent: each step is skipped when already done. Run as root.
#
#   deploy/podman-setup.sh            # engine + configuration
#   deploy/podman-setup.sh --base     # ... and the localhost/debian:bookworm base image (debootstrap)
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
SUITE=${SUITE:-bookworm}
PODMAN_COMPOSE_VENV=${PODMAN_COMPOSE_VENV:-/opt/podman-compose}

log() { printf '[podman-setup] %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "podman-setup.sh must run as root (rootful podman)" >&2
  exit 1
fi

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    if [ ! -f /var/lib/apt/periodic/.digitserve-updated ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
      apt-get update -q
      mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/.digitserve-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# 1. the engine: podman with runc (crun fails on hybrid cgroup hierarchies), slirp/netavark networking
# netavark + aardvark-dns: container networks with DNS, so compose service names resolve
apt_install podman runc catatonit netavark aardvark-dns slirp4netns uidmap iptables \
  debootstrap python3-venv ca-certificates

# 2. configuration: runc, cgroupfs, file events, netavark, ulimits within this machine's hard limits
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu)
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
conf=/etc/containers/containers.conf
want=$(cat <<CONF
# Written by DigitServe's deploy/podman-setup.sh
[containers]
default_ulimits = [
  "nofile=${nofile}:${nofile}",
  "nproc=${nproc}:${nproc}",
]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
CONF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  if [ -f "$conf" ] && ! grep -q "DigitServe" "$conf"; then
    cp "$conf" "$conf.before-digitserve"
    log "kept the previous $conf as $conf.before-digitserve"
  fi
  mkdir -p /etc/containers
  printf '%s\n' "$want" > "$conf"
  log "wrote $conf (runc, cgroupfs, nofile=$nofile, nproc=$nproc)"
fi

# 3. podman-compose from PyPI in its own venv, linked onto PATH (1.6 is what the deploy test was written against)
if ! command -v podman-compose >/dev/null 2>&1; then
  log "installing podman-compose into $PODMAN_COMPOSE_VENV"
  python3 -m venv "$PODMAN_COMPOSE_VENV"
  "$PODMAN_COMPOSE_VENV/bin/pip" install --quiet --upgrade pip
  "$PODMAN_COMPOSE_VENV/bin/pip" install --quiet "podman-compose>=1.6,<2"
  ln -sf "$PODMAN_COMPOSE_VENV/bin/podman-compose" /usr/local/bin/podman-compose
fi

podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' >/dev/null

# 4. optional: a Debian base image built from the Debian archive (no registry needed)
if [ "${1:-}" = "--base" ]; then
  if podman image exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE exists (cached)"
  else
    mirror=${DEBIAN_MIRROR:-}
    if [ -z "$mirror" ]; then
      # the mirror apt already uses (deb822 .sources or one-line sources.list)
      mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
      [ -n "$mirror" ] || mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -v security | head -n1 || true)
      [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    fi
    root=$(mktemp -d /var/tmp/digitserve-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $SUITE from $mirror"
    debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >/dev/null
    # the image's apt uses the same mirror; keep the image small
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    log "imported $BASE_IMAGE"
  fi
fi
