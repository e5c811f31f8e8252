"""The values schema and the offline validator refuse what they must."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import Render, helm_template
from tools.deploy import paths


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("image.tag=latest", "/image/tag"),
        ("unknownKey=1", "unknownKey"),
        ("services.ledger.replicaz=2", "replicaz"),
        ("services.nosuch.port=1", "nosuch"),
        ("defaults.resources.limits=null", "limits"),
        ("mesh.outlierDetection.baseEjectionTime=30", "baseEjectionTime"),
        # Secrets only by reference: a literal private key, PIN or database URL is refused.
        (
            "serviceSettings.withdraw.settings.APPROVAL_PRIVATE_KEY=c2VjcmV0",
            "'APPROVAL_PRIVATE_KEY' not allowed",
        ),
        (
            "serviceSettings.deposit.settings.APPROVAL_PRIVATE_KEY=c2VjcmV0",
            "'APPROVAL_PRIVATE_KEY' not allowed",
        ),
        ("serviceSettings.deposit.secretSettings.APPROVAL_PRIVATE_KEY=c2VjcmV0", "/APPROVAL_PRIVATE_KEY"),
        ("serviceSettings.custody.settings.HSM_PIN=1234", "'HSM_PIN' not allowed"),
        (
            "serviceSettings.ledger.settings.DATABASE_URL=postgresql://u:p@db/ledger",
            "'DATABASE_URL' not allowed",
        ),
        ("serviceSettings.chain-gateway.settings.CHAINS=x", "'CHAINS' not allowed"),
        ("serviceSettings.notification.secretSettings.SMTP_PASSWORD.secret=smtp", "missing property 'key'"),
        ("serviceSettings.withdraw.settings.HOT_WALLETZ=1", "HOT_WALLETZ"),
        ("serviceSettings.ledger.secretFiles.PKI_DIR.secret=x", "PKI_DIR"),
        ("serviceSettings.nosuch.settings.PKI_DIR=x", "nosuch"),
        ("serviceSettings.withdraw.settings.FEE_CAP_PER_GAS=9007199254740993", "FEE_CAP_PER_GAS"),
        ("config.redisUrl=null", "redisUrl"),
    ],
)
def test_schema_rejects_bad_values(tools: dict[str, Path], setting: str, complaint: str) -> None:
    result = helm_template(tools["helm"], "full", paths.CHART_DIR, (setting,))
    assert result.returncode != 0
    assert complaint in result.stderr


def test_rendered_profiles_are_valid(tools: dict[str, Path], render: Render, tmp_path: Path) -> None:
    rendered = tmp_path / "full.yaml"
    result = helm_template(tools["helm"], "full")
    rendered.write_text(result.stdout)
    check = subprocess.run([str(tools["validate"]), str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(
    "document",
    [
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: n}\nspec: {replicaz: 1}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: n, labelz: {}}\n",
        "apiVersion: v9\nkind: Nothing\nmetadata: {name: x}\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: n}\n"
        "spec: {action: ALLOW, rulez: []}\n",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x, namespace: n}\n"
        "spec: {host: '', trafficPolicy: {outlierDetection: {baseEjectionTime: 30s}}}\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x, namespace: n}\n"
        "spec: {hosts: [a], http: [{route: [{destination: {host: a}}], retries: {attempts: -1}}]}\n",
    ],
)
def test_validator_refuses_bad_objects(tools: dict[str, Path], tmp_path: Path, document: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(document)
    check = subprocess.run([str(tools["validate"]), str(bad)], capture_output=True, text=True)
    assert check.returncode == 1, check.stdout
    assert "invalid" in check.stderr
