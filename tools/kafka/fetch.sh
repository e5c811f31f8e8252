#!/usr/bin/env bash
# Fetch the runtime classpath of the Kafka broker used by the test harness into
# .build/kafka/libs (or $1), from Maven artifacts pinned in tools/kafka/pom.xml
# (tools/maven/fetch.sh: idempotent, staged, checked).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Sanity: the broker entry point and a logging backend must be there.
exec bash "$ROOT/tools/maven/fetch.sh" "$ROOT/tools/kafka/pom.xml" "${1:-$ROOT/.build/kafka/libs}" \
  "Kafka broker" kafka_2.13- kafka-clients- kafka-server- reload4j-
