"""Round trip of the generated SDK: install gen/python into a fresh virtualenv, as a partner would.

uv resolves the SDK's dependencies from the package index (fast with a warm cache); the new
environment then imports every module of the SDK and validates a message with protovalidate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.gen.paths import PYTHON_OUT

PROTOVALIDATE = "protovalidate==1.2.0"

# Runs inside the new environment: walks and imports every installed SDK module, lists the
# installed stubs and validates one message with protovalidate.
CHECK = """
import importlib, json, pathlib, pkgutil, sys
import protovalidate
import buf, finmesh
from finmesh.common.v1 import money_pb2

site = pathlib.Path(finmesh.__file__).parents[1]
assert site.is_relative_to(sys.prefix), f"the SDK was imported from {site}, not from the new environment"
modules = []
for package in (finmesh, buf):
    modules.append(package.__name__)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        modules.append(info.name)
stubs = [
    str(path.relative_to(site)) for name in ("finmesh", "buf") for path in (site / name).rglob("*.pyi")
]
bad = money_pb2.Money(asset="not an asset", amount="1.5")
violations = [violation.proto.rule_id for violation in protovalidate.collect_violations(bad)]
print(json.dumps({"modules": sorted(modules), "stubs": sorted(stubs), "violations": violations}))
"""


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(found).exists():
        pytest.fail("uv is not installed in the project environment: run 'make venv'")
    return found


def _generated(root: Path, suffix: str) -> list[Path]:
    return sorted(
        path.relative_to(root) for package in ("finmesh", "buf") for path in (root / package).rglob(suffix)
    )


@pytest.mark.timeout(180)
def test_sdk_installs_and_imports_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = shutil.copytree(PYTHON_OUT, tmp_path / "sdk")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [_uv(), "pip", "install", "--quiet", "--python", str(python), str(source), PROTOVALIDATE]
    subprocess.run(install, check=True, timeout=150)

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(python), "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    modules = sorted(
        ".".join(path.with_suffix("").parts).removesuffix(".__init__")
        for path in _generated(PYTHON_OUT, "*.py")
    )
    stubs = [str(path) for path in _generated(PYTHON_OUT, "*.pyi")]
    assert report["modules"] == modules, "the installed SDK does not hold exactly the generated modules"
    assert report["stubs"] == stubs, "the installed SDK does not ship every .pyi stub"
    assert "string.pattern" in report["violations"], report["violations"]
