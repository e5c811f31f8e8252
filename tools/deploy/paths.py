"""Where the deployment generator reads from and writes to."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "svc" / "catalog.yaml"
DESCRIPTOR_SET = ROOT / "gen" / "descriptors" / "finmesh.binpb"
CHART_DIR = ROOT / "charts" / "finmesh"
DASHBOARD = CHART_DIR / "dashboards" / "finmesh.json"
SCHEMA = CHART_DIR / "values.schema.json"


def profile_values(profile: str, chart_dir: Path = CHART_DIR) -> Path:
    """The generated values file of one product profile."""
    return chart_dir / f"values-{profile}.yaml"
