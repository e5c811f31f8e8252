#!/usr/bin/env bash
# Builds the deployment tools from the Go module proxy, pinned, into .build/go/bin (idempotent):
#   helm             helm.sh/helm/v3 at HELM_VERSION
#   finmesh-validate tools/deploy/validate (k8s.io/client-go scheme + Istio's own config validation)
set -euo pipefail
cd "$(dirname "$0")/../.."
HELM_VERSION=v3.22.0
BIN="$PWD/.build/go/bin"
mkdir -p "$BIN"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
if [[ ! -x "$BIN/helm" || ! -f "$BIN/.helm-$HELM_VERSION" ]]; then
  echo "deploy: building helm $HELM_VERSION"
  GOBIN="$BIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -f "$BIN"/.helm-* && touch "$BIN/.helm-$HELM_VERSION"
fi
# go build is incremental: a no-op when neither the sources nor go.sum changed.
(cd tools/deploy/validate && go build -mod=readonly -o "$BIN/finmesh-validate" .)
