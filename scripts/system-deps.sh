#!/usr/bin/env bash
# Installs the Debian packages the test-suite drives for real, only when missing:
# chromium (the UI check) and redis-server (the scale-out tests start their own).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} and cannot apt-get here; tests needing them will skip" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
