#!/usr/bin/env bash
# buf breaking: today's contracts (the descriptor set in gen/) against the released ones, the
# proto/ tree of the commit named in .ci/contracts-baseline. Both sides are compiled the same
# way (protoc with imports), so only finmesh's own files can differ.
set -euo pipefail
cd "$(dirname "$0")/../.."
buf=${BUF:-.build/npm/node_modules/.bin/buf}
python=${PYTHON:-.venv/bin/python}
baseline=$(tr -d '[:space:]' < .ci/contracts-baseline)
if ! git cat-file -e "${baseline}^{commit}" 2>/dev/null; then
  # A rewritten history (squash on landing) loses the recorded commit: compare against the
  # commit that first added the full v1 surface instead, and say so.
  fallback=$(git log --diff-filter=A --format=%H -- proto/finmesh/ledger/v1 | tail -n 1)
  echo "contracts baseline ${baseline} is not in this clone's history; using ${fallback}" >&2
  baseline=${fallback:?no commit adds proto/finmesh/ledger/v1}
fi
work=.build/breaking
rm -rf "$work" && mkdir -p "$work/src"
git archive "$baseline" proto | tar -x -C "$work/src"
well_known=$("$python" -c 'from importlib import resources; print(resources.files("grpc_tools") / "_proto")')
(cd "$work/src/proto" && find . -name '*.proto' | sed 's#^\./##' | sort) > "$work/files"
"$python" -m grpc_tools.protoc -I "$work/src/proto" -I .build/proto-deps -I "$well_known" \
  --include_imports --descriptor_set_out="$work/baseline.binpb" $(cat "$work/files")
"$buf" breaking gen/descriptors/finmesh.binpb --against "$work/baseline.binpb" --config '{"version":"v2","breaking":{"use":["FILE"]}}'
echo "contracts: no breaking change against ${baseline}"
