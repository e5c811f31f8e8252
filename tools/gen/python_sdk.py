"""Runs protoc (from grpcio-tools) over proto/ to produce the Python SDK and the descriptor set."""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

from tools.gen.paths import DEPS_DIR, DESCRIPTOR_SET, PROTO_DIR, PYTHON_OUT, SDK_TEMPLATE_DIR

# Generated from third-party protos because no PyPI package ships them for the google
# protobuf runtime; google/api and google/rpc come from googleapis-common-protos at runtime.
THIRD_PARTY_GENERATED = ("buf/validate/validate.proto",)


def _well_known_include() -> str:
    return str(resources.files("grpc_tools") / "_proto")


def _run_protoc(args: list[str]) -> None:
    command = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{DEPS_DIR}", f"-I{_well_known_include()}", *args]
    if protoc.main(command) != 0:
        raise SystemExit("protoc failed: " + " ".join(args[:3]) + " ...")


def project_protos() -> list[str]:
    """Every .proto of the project, as import paths relative to proto/, sorted."""
    return sorted(str(path.relative_to(PROTO_DIR)) for path in PROTO_DIR.rglob("*.proto"))


def _plugin(name: str) -> str:
    executable = Path(sys.executable).parent / name
    if not executable.exists():
        raise SystemExit(f"{name} not found next to {sys.executable}: install the dev dependencies")
    return f"--plugin={name}={executable}"


def _add_init_files(root: Path) -> None:
    for directory in sorted(path for path in root.rglob("*") if path.is_dir()):
        if any(directory.glob("*.py")) or any(directory.iterdir()):
            (directory / "__init__.py").touch()


def generate_python() -> None:
    """Regenerates gen/python from scratch so that removed protos leave no stale modules."""
    protos = project_protos()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        _run_protoc(
            [
                _plugin("protoc-gen-mypy"),
                _plugin("protoc-gen-mypy_grpc"),
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out={out}",
                f"--mypy_grpc_out={out}",
                *protos,
            ]
        )
        _run_protoc(
            [_plugin("protoc-gen-mypy"), f"--python_out={out}", f"--mypy_out={out}", *THIRD_PARTY_GENERATED]
        )
        remove_empty_grpc_modules(out)
        _add_init_files(out)
        for template in sorted(SDK_TEMPLATE_DIR.iterdir()):
            shutil.copyfile(template, out / template.name)
        (out / "finmesh" / "py.typed").touch()
        if PYTHON_OUT.exists():
            shutil.rmtree(PYTHON_OUT)
        shutil.copytree(out, PYTHON_OUT)


def generate_descriptor_set() -> None:
    """One FileDescriptorSet with imports and comments: what the gateway and the docs load."""
    DESCRIPTOR_SET.parent.mkdir(parents=True, exist_ok=True)
    _run_protoc(
        [
            f"--descriptor_set_out={DESCRIPTOR_SET}",
            "--include_imports",
            "--include_source_info",
            *project_protos(),
        ]
    )


def remove_empty_grpc_modules(root: Path) -> None:
    """protoc's grpc plugin writes a module for every file; keep only those that define a service."""
    for module in sorted(root.rglob("*_pb2_grpc.py")):
        if "class " not in module.read_text():
            module.unlink()
            module.with_suffix(".pyi").unlink(missing_ok=True)
