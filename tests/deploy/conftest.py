"""Fixtures of the deployment tests: the tools (built by the same script as `make deploy-check`) and
rendering a profile with the real helm binary. A missing tool fails the tests; nothing is skipped."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from svc.kit.catalog import Catalog, load
from tools.deploy import paths
from tools.deploy.generate import render_all, write

ROOT = paths.ROOT
BIN = ROOT / ".build" / "go" / "bin"
KUBE_VERSION = "1.37.0"
NAMESPACE = "finmesh"

Manifest = list[dict[str, Any]]
Render = Callable[..., Manifest]


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    """helm and finmesh-validate, built (or found up to date) by tools/deploy/install-tools.sh."""
    subprocess.run(["bash", str(ROOT / "tools" / "deploy" / "install-tools.sh")], check=True, timeout=1800)
    found = {"helm": BIN / "helm", "validate": BIN / "finmesh-validate"}
    for name, path in found.items():
        assert path.is_file(), f"{name} was not built at {path}"
    return found


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load(paths.CATALOG)


def helm_template(
    helm: Path, profile: str, chart: Path = paths.CHART_DIR, settings: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = [
        str(helm),
        "template",
        "finmesh",
        str(chart),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(chart / f"values-{profile}.yaml"),
    ]
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def render(tools: dict[str, Path]) -> Render:
    """Renders a profile of a chart and returns its objects; a failing render fails the test."""
    cache: dict[tuple[str, Path, tuple[str, ...]], Manifest] = {}

    def _render(profile: str, chart: Path = paths.CHART_DIR, settings: tuple[str, ...] = ()) -> Manifest:
        key = (profile, chart, settings)
        if key not in cache:
            result = helm_template(tools["helm"], profile, chart, settings)
            assert result.returncode == 0, result.stderr
            cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[key]

    return _render


@pytest.fixture
def chart_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of the chart whose generated files a test may regenerate from another catalog."""
    copy = tmp_path / "finmesh"
    shutil.copytree(paths.CHART_DIR, copy)
    yield copy


def regenerate(catalog: Catalog, chart: Path) -> None:
    write(render_all(catalog, paths.DESCRIPTOR_SET, chart))


def objects(manifest: Manifest, kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {doc["metadata"]["name"]: doc for doc in manifest if doc["kind"] == kind}
