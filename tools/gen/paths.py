"""Where the generator reads from and writes to, relative to the repository root."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
DEPS_DIR = ROOT / ".build" / "proto-deps"
GEN_DIR = ROOT / "gen"
PYTHON_OUT = GEN_DIR / "python"
DESCRIPTOR_SET = GEN_DIR / "descriptors" / "finmesh.binpb"
OPENAPI_OUT = GEN_DIR / "openapi" / "finmesh.openapi.json"
CONTRACTS_DOC = ROOT / "docs" / "contracts.md"
SDK_TEMPLATE_DIR = Path(__file__).resolve().parent / "sdk"

# protovalidate's validate.proto ships inside this Maven artifact; the Python protovalidate
# runtime (1.x, google protobuf) expects `buf.validate.validate_pb2` generated from it.
PROTOVALIDATE_ARTIFACT = "build.buf:protovalidate:1.2.0"
