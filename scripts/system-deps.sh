#!/usr/bin/env bash
# Installs the Debian packages the test-suite drives for real, only when missing:
# chromium (the UI check), redis-server (the scale-out tests start their own), and a Docker
# engine with debootstrap (tests/integration/test_docker_image.py builds the image on a
# Debian base made here, since no image registry may be reachable).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# dockerd, not just any `docker`: a client alone cannot build or run an image.
[ -x /usr/sbin/dockerd ] || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} and cannot apt-get here; tests needing them will skip" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
