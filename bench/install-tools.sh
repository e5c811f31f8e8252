#!/usr/bin/env bash
# Installs and builds what the gateway benchmark runs, pinned and idempotent (run by bench/gateway.py
# before it measures, never by tests):
#   PostgreSQL           for the ledger behind the proxies (tools/ci/install-system-packages.sh)
#   wrk                  the HTTP load generator (Debian package)
#   ghz                  the gRPC load generator, github.com/bojand/ghz at GHZ_VERSION
#   finmesh-grpcgateway  bench/grpcgateway/main.go over grpc-gateway code generated from the same
#                        descriptor set as the Python gateway's (gen/descriptors/finmesh.binpb) by
#                        buf with protoc-gen-go, protoc-gen-go-grpc and protoc-gen-grpc-gateway;
#                        the generated code lives in .build/grpcgateway, never in the repository.
# Everything goes to .build/go/bin; nothing is installed at import time of tests.
set -euo pipefail
cd "$(dirname "$0")/.."
GHZ_VERSION=v0.120.0
PROTOC_GEN_GO_VERSION=v1.36.12        # google.golang.org/protobuf in bench/grpcgateway/go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GRPC_GATEWAY_VERSION=v2.33.0          # github.com/grpc-ecosystem/grpc-gateway/v2 in go.mod
BIN="$PWD/.build/go/bin"
WORK="$PWD/.build/grpcgateway"
BUF="$PWD/.build/npm/node_modules/.bin/buf"
mkdir -p "$BIN"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

bash tools/ci/install-system-packages.sh
if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk"
  SUDO=()
  [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get install -y -q wrk >/dev/null \
    || { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" apt-get install -y -q wrk >/dev/null; }
fi

# go_install NAME PACKAGE VERSION: builds PACKAGE@VERSION into $BIN unless that version is there.
go_install() {
  if [[ ! -x "$BIN/$1" || ! -f "$BIN/.$1-$3" ]]; then
    echo "bench: building $1 $3"
    GOBIN="$BIN" go install "$2@$3"
    rm -f "$BIN/.$1-"* && touch "$BIN/.$1-$3"
  fi
}
go_install ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
go_install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
go_install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
go_install protoc-gen-grpc-gateway \
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway "$GRPC_GATEWAY_VERSION"

[[ -x "$BUF" ]] || make -s "${BUF#"$PWD"/}"

# The ledger's files and what they import, generated into a copy of the Go module; googleapis
# and the well-known types keep their own Go packages (genproto, protobuf-go).
mkdir -p "$WORK"
cp bench/grpcgateway/main.go bench/grpcgateway/go.mod bench/grpcgateway/go.sum "$WORK/"
cat >"$WORK/buf.gen.yaml" <<YAML
version: v2
managed:
  enabled: true
  disable:
    - file_option: go_package
      path: google
  override:
    - file_option: go_package_prefix
      value: finmesh/bench/grpcgateway/gen
plugins:
  - local: $BIN/protoc-gen-go
    out: $WORK/gen
    opt: paths=source_relative
  - local: $BIN/protoc-gen-go-grpc
    out: $WORK/gen
    opt: paths=source_relative
  - local: $BIN/protoc-gen-grpc-gateway
    out: $WORK/gen
    opt: paths=source_relative
YAML
rm -rf "$WORK/gen"
"$BUF" generate gen/descriptors/finmesh.binpb --template "$WORK/buf.gen.yaml" \
  --path finmesh/ledger/v1 --path finmesh/common/v1 --path buf/validate/validate.proto
# go build is incremental: a no-op when neither the sources nor go.sum changed.
(cd "$WORK" && go build -mod=readonly -o "$BIN/finmesh-grpcgateway" .)
