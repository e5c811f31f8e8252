#!/usr/bin/env bash
# Fetch the runtime classpath of S3Proxy (the S3-compatible object store the test harness runs)
# into .build/s3proxy/libs (or $1), from Maven artifacts pinned in tools/s3proxy/pom.xml
# (tools/maven/fetch.sh: idempotent, staged, checked).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
exec bash "$ROOT/tools/maven/fetch.sh" "$ROOT/tools/s3proxy/pom.xml" "${1:-$ROOT/.build/s3proxy/libs}" \
  "S3Proxy" s3proxy- filesystem- jclouds-blobstore-
