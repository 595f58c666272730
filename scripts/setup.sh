#!/usr/bin/env bash
# One command for a working checkout: the Debian packages FleetMQ and its tests use, then npm's.
set -Eeuo pipefail

readonly DEBIAN_PACKAGES=(
  redis-server redis-sentinel haproxy openssh-server mosquitto mosquitto-clients openssl
  iproute2 systemd-container mmdebstrap qemu-system-x86 qemu-utils grub-pc-bin grub2-common
  genisoimage shellcheck fdisk python3-paho-mqtt
)

log() { printf '[setup] %s\n' "$*" >&2; }

missing_packages() {
  local pkg
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$pkg"
  done
}

install_debian_packages() {
  local -a missing
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -eq 0 ]; then
    log "Debian packages: all ${#DEBIAN_PACKAGES[@]} present"
    return
  fi
  local -a sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      log "missing Debian packages: ${missing[*]}"
      log "run as root or with passwordless sudo, or install them yourself: sudo apt-get install ${missing[*]}"
      exit 1
    fi
  fi
  log "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

cd "$(dirname "$0")/.."
install_debian_packages
log "npm dependencies"
npm ci --no-audit --no-fund
log "compiling TypeScript"
npm run --silent build
log "ready: npm test runs the suite, npx fleetmq start --help shows how to run a node"
