#!/usr/bin/env bash
# Fetch the runtime classpath of the Kafka broker used by the test harness into
# .build/kafka/libs (or $1), from Maven artifacts pinned in tools/kafka/pom.xml.
# Idempotent: a marker holding the pom's hash makes a second run a no-op; the jars are
# copied to a staging dir first and moved in place only when complete. Maven's own cache
# (~/.m2, or MAVEN_OPTS=-Dmaven.repo.local=...) means a re-fetch after `make clean` downloads nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
POM="$ROOT/tools/kafka/pom.xml"
DEST="${1:-$ROOT/.build/kafka/libs}"
MARKER="$DEST/.complete"

want="$(sha256sum "$POM" | cut -d' ' -f1)"
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$want" ]]; then
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (Debian: apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch.sh: java not found (Debian: apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }

parent="$(dirname "$DEST")"
mkdir -p "$parent"
stage="$(mktemp -d "$parent/.libs.XXXXXX")"
chmod 755 "$stage"
log="$(mktemp "$parent/.fetch.XXXXXX.log")"
trap 'rm -rf "$stage" "$log"' EXIT

if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$stage" >"$log" 2>&1; then
  echo "fetch.sh: mvn dependency:copy-dependencies failed:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi

# Sanity: the broker entry point and a logging backend must be there.
for jar in kafka_2.13- kafka-clients- kafka-server- reload4j-; do
  compgen -G "$stage/$jar*.jar" >/dev/null || { echo "fetch.sh: no $jar*.jar in the fetched classpath" >&2; exit 1; }
done

echo "$want" >"$stage/.complete"
rm -rf "$DEST"
mv "$stage" "$DEST"
echo "fetch.sh: Kafka broker classpath ready in $DEST ($(ls "$DEST"/*.jar | wc -l) jars)"
