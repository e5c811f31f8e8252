"""Collects third-party .proto files from installed packages into .build/proto-deps.

Nothing third-party is copied into the repository: google/api and google/rpc come from the
installed googleapis-common-protos wheel, buf/validate from the protovalidate Maven artifact.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import zipfile
from pathlib import Path

from tools.gen.paths import DEPS_DIR, PROTOVALIDATE_ARTIFACT, ROOT

GOOGLE_PACKAGES = ("google.api", "google.rpc")
VALIDATE_PROTO = "buf/validate/validate.proto"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(
        f"{module}.annotations_pb2" if module == "google.api" else f"{module}.status_pb2"
    )
    if spec is None or spec.origin is None:
        raise SystemExit(f"googleapis-common-protos is not installed: cannot find {module}")
    return Path(spec.origin).parent


def _copy_google_protos() -> None:
    for module in GOOGLE_PACKAGES:
        source = _package_dir(module)
        target = DEPS_DIR / Path(*module.split("."))
        for proto in sorted(source.rglob("*.proto")):
            destination = target / proto.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(proto, destination)


def _fetch_validate_proto() -> None:
    destination = DEPS_DIR / VALIDATE_PROTO
    if destination.exists():
        return
    _group, artifact, version = PROTOVALIDATE_ARTIFACT.split(":")
    jar_dir = ROOT / ".build" / "mvn"
    jar = jar_dir / f"{artifact}-{version}.jar"
    if not jar.exists():
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact={PROTOVALIDATE_ARTIFACT}",
                f"-DoutputDirectory={jar_dir}",
            ],
            check=True,
        )
    with zipfile.ZipFile(jar) as archive:
        data = archive.read(VALIDATE_PROTO)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)


def collect() -> Path:
    """Populates DEPS_DIR and returns it."""
    DEPS_DIR.mkdir(parents=True, exist_ok=True)
    _copy_google_protos()
    _fetch_validate_proto()
    return DEPS_DIR


if __name__ == "__main__":
    print(collect())
