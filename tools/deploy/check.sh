#!/usr/bin/env bash
# make deploy-check: generated files up to date, helm lint and helm template of every profile
# (with and without optional services), every rendered object validated offline.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
BIN=.build/go/bin
OUT=.build/deploy/rendered
# The Kubernetes release whose API types (k8s.io/api, go.mod of tools/deploy/validate) validate the output.
KUBE_VERSION=1.37.0
PROFILES=(custodial-wallet lending staking rwa full)

bash tools/deploy/install-tools.sh
"$PY" -m tools.deploy --check
rm -rf "$OUT" && mkdir -p "$OUT"
for profile in "${PROFILES[@]}"; do
  values=(-f "charts/finmesh/values-$profile.yaml")
  "$BIN/helm" lint --strict --quiet --kube-version "$KUBE_VERSION" charts/finmesh "${values[@]}"
  "$BIN/helm" template finmesh charts/finmesh --namespace finmesh --kube-version "$KUBE_VERSION" \
    "${values[@]}" >"$OUT/$profile.yaml"
  "$BIN/helm" template finmesh charts/finmesh --namespace finmesh --kube-version "$KUBE_VERSION" \
    "${values[@]}" --set deployOptional=false >"$OUT/$profile-required.yaml"
done
"$BIN/finmesh-validate" "$OUT"/*.yaml
echo "deploy-check: ${#PROFILES[@]} profiles linted, rendered and validated"
