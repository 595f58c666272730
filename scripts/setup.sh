#!/usr/bin/env bash
# One command for a working checkout: the Debian packages FleetMQ and its tests use, then npm's.
set -Eeuo pipefail

readonly DEBIAN_PACKAGES=(
  redis-server redis-sentinel haproxy openssh-server mosquitto mosquitto-clients openssl
  iproute2 systemd-container mmdebstrap qemu-system-x86 qemu-utils grub-pc-bin grub2-common
  genisoimage shellcheck fdisk python3-paho-mqtt python3-venv openjdk-17-jre-headless maven kcat nftables
  chromium
)

# Apache Kafka for the rules tests (test/helpers/kafka.ts): the broker's jar and its runtime
# dependencies, resolved by Maven into a git-ignored folder. The distribution's shell scripts are
# not among Maven's artifacts; the helper runs its main classes with `java -cp`.
readonly KAFKA_VERSION=4.4.0
readonly KAFKA_DIR=.cache/kafka/$KAFKA_VERSION

# The property-based API tester the management API's tests run (test/cluster/api-schemathesis.test.ts),
# from PyPI into a virtual environment of the checkout (git-ignored).
readonly SCHEMATHESIS_VERSION=4.32.5
readonly SCHEMATHESIS_VENV=.cache/schemathesis

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

# Idempotent: a folder that holds the marker was resolved completely and is kept.
install_kafka() {
  if [ -f "$KAFKA_DIR/complete" ]; then
    log "Apache Kafka $KAFKA_VERSION: present in $KAFKA_DIR"
    return
  fi
  log "Apache Kafka $KAFKA_VERSION: resolving org.apache.kafka:kafka_2.13 and its runtime dependencies with Maven"
  local work
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the folder is this call's
  trap "rm -rf '$work'" RETURN
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fleetmq.test</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  mvn --batch-mode --quiet -Dstyle.color=never -f "$work/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$work/libs" >&2
  touch "$work/libs/complete"
  rm -rf "$KAFKA_DIR"
  mkdir -p "$(dirname "$KAFKA_DIR")"
  mv "$work/libs" "$KAFKA_DIR"
  log "Apache Kafka $KAFKA_VERSION: $(find "$KAFKA_DIR" -name '*.jar' | wc -l) jars in $KAFKA_DIR"
}

install_schemathesis() {
  local bin="$SCHEMATHESIS_VENV/bin/schemathesis"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    log "Schemathesis $SCHEMATHESIS_VERSION: present"
    return
  fi
  log "Schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
  # Debian's own python3: a python3 of pyenv or similar may lack the venv module.
  local python=/usr/bin/python3
  [ -x "$python" ] || python=python3
  "$python" -m venv "$SCHEMATHESIS_VENV"
  "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

cd "$(dirname "$0")/.."
install_debian_packages
install_kafka
log "npm dependencies"
npm ci --no-audit --no-fund
install_schemathesis
log "compiling TypeScript"
npm run --silent build
log "ready: npm test runs the suite, npx fleetmq start --help shows how to run a node"
