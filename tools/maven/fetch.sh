#!/usr/bin/env bash
# Fetch the runtime classpath of a Java server the test harness runs (Kafka, S3Proxy) into DEST,
# from the Maven artifacts pinned in POM:
#   tools/maven/fetch.sh POM DEST NAME JAR_PREFIX...
# Idempotent: a marker holding the pom's hash makes a second run a no-op; the jars are copied to
# a staging dir first and moved in place only when complete, after checking that a jar starting
# with each JAR_PREFIX is there. Maven's own cache (~/.m2, or MAVEN_OPTS=-Dmaven.repo.local=...)
# means a re-fetch after `make clean` downloads nothing.
set -euo pipefail

POM="$1"
DEST="$2"
NAME="$3"
shift 3
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

for jar in "$@"; do
  compgen -G "$stage/$jar*.jar" >/dev/null || { echo "fetch.sh: no $jar*.jar in the fetched classpath" >&2; exit 1; }
done

echo "$want" >"$stage/.complete"
rm -rf "$DEST"
mv "$stage" "$DEST"
echo "fetch.sh: $NAME classpath ready in $DEST ($(ls "$DEST"/*.jar | wc -l) jars)"
