"""Renders every generated deployment file to text, keyed by path; writing and checking are separate."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from svc.kit.catalog import Catalog
from tools.deploy import paths
from tools.deploy.dashboards import dashboard
from tools.deploy.edge import DESCRIPTOR_FILE, Edge
from tools.deploy.model import profile_workloads
from tools.deploy.rpcs import read_only_methods
from tools.deploy.schema import values_schema
from tools.deploy.settings import catalog_settings
from tools.deploy.values import HEADER, profile_values


def _yaml(document: object) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=110)


def _json(document: object) -> str:
    return json.dumps(document, indent=2) + "\n"


def render_all(catalog: Catalog, descriptor_set: Path, chart_dir: Path = paths.CHART_DIR) -> dict[Path, str]:
    """Every generated file of the chart: a values file per profile, the values schema, the dashboard,
    the descriptor set of the ingress transcoder."""
    read_only = read_only_methods(descriptor_set)
    edge = Edge(catalog, descriptor_set)
    settings = catalog_settings(catalog)
    files: dict[Path, str] = {}
    for profile, description in catalog.profiles.items():
        workloads = profile_workloads(catalog, profile, read_only)
        routes = edge.profile_edge(workload.entry.name for workload in workloads)
        values = profile_values(profile, description, workloads, routes, settings)
        files[paths.profile_values(profile, chart_dir)] = HEADER + _yaml(values)
    files[chart_dir / "values.schema.json"] = _json(values_schema(catalog, settings))
    files[chart_dir / "dashboards" / "finmesh.json"] = _json(dashboard(catalog))
    files[chart_dir / DESCRIPTOR_FILE] = edge.descriptor_file()
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    """The files whose content on disk differs from the rendered one."""
    return [path for path, text in files.items() if not path.exists() or path.read_text() != text]


def write(files: dict[Path, str]) -> None:
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
