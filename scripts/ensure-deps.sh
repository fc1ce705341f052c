#!/usr/bin/env bash
# Installs what the build and tests need, only if it is missing. Usage: scripts/ensure-deps.sh [extra-debian-packages...]
# The Swift toolchain itself is not an apt package: it must be on PATH (this machine kind has it in /opt/swift).
set -euo pipefail

if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "swift is in /opt/swift/usr/bin but not on PATH; add it: export PATH=/opt/swift/usr/bin:\$PATH" >&2
  else
    echo "swift (6.2 or newer) is required: https://www.swift.org/install/linux/" >&2
  fi
  exit 1
fi

# ca-certificates: the system roots the Realtime TLS leg trusts.
wanted=(ca-certificates "$@")
missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
