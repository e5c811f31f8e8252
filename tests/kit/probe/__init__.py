"""The kit's probe service: compiled on demand from probe.proto for tests and benchmarks."""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path
from types import ModuleType

from grpc_tools import protoc

PROBE_DIR = Path(__file__).parent
REPO = PROBE_DIR.parents[2]
PROBE_SERVICE = "finmesh.kitprobe.v1.ProbeService"


def compile_probe(out: Path) -> tuple[ModuleType, ModuleType]:
    """Generates the probe's modules into `out` and imports them: (messages, stubs)."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROBE_DIR}",
        f"-I{REPO / '.build' / 'proto-deps'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "finmesh/kitprobe/v1/probe.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("tests/kit/probe/finmesh/kitprobe/v1/probe.proto does not compile")
    # The probe shares the `finmesh` namespace with the SDK: extend the installed package's path.
    import finmesh

    if str(out / "finmesh") not in finmesh.__path__:
        finmesh.__path__.append(str(out / "finmesh"))
    return (
        importlib.import_module("finmesh.kitprobe.v1.probe_pb2"),
        importlib.import_module("finmesh.kitprobe.v1.probe_pb2_grpc"),
    )
