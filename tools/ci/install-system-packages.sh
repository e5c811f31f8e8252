#!/usr/bin/env bash
# Install the Debian (12, bookworm) packages that the test harness runs for real:
# PostgreSQL 15, Redis, SoftHSM2 (the PKCS#11 token), and the JDK + Maven that fetch and run
# the Kafka broker.
# Idempotent and quiet: does nothing when everything is there; otherwise one
# `apt-get update` and one `apt-get install`. Runs as root, or through sudo.
set -euo pipefail

# "package|test that says it is already there"; add a line per new need.
NEEDS=(
  "postgresql-15|test -x /usr/lib/postgresql/15/bin/postgres || test -n \"\${FINMESH_PG_BIN:-}\""
  "redis-server|command -v redis-server >/dev/null || test -n \"\${FINMESH_REDIS_SERVER:-}\""
  "openjdk-17-jdk-headless|command -v java >/dev/null"
  "maven|command -v mvn >/dev/null"
  "softhsm2|command -v softhsm2-util >/dev/null || test -n \"\${FINMESH_SOFTHSM_UTIL:-}\""
)

missing=()
for entry in "${NEEDS[@]}"; do
  pkg="${entry%%|*}"
  check="${entry#*|}"
  if ! bash -c "$check" 2>/dev/null; then
    missing+=("$pkg")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-system-packages: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi

echo "install-system-packages: installing ${missing[*]}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"; } >"$log" 2>&1; then
  echo "install-system-packages: apt-get failed:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
