#!/usr/bin/env bash
# make deploy-dry-run: renders every profile (make deploy-check: lint, render, offline validation),
# builds tools/deploy/apiserver into .build/go/bin (incremental go build) and sends every rendered
# object to an embedded etcd + kube-apiserver on 127.0.0.1 as a server-side dry-run create.
# Not run by CI: the first build of kube-apiserver takes minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
BIN="$PWD/.build/go/bin"
OUT=.build/deploy/rendered
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

PY="$PY" bash tools/deploy/check.sh
mkdir -p "$BIN"
(cd tools/deploy/apiserver && go build -mod=readonly -o "$BIN/finmesh-apiserver" .)
"$BIN/finmesh-apiserver" -namespace finmesh -log .build/deploy/apiserver.log "$OUT"/*.yaml
