"""The Grafana dashboard shipped with the chart: RED per service and RPC, ledger and chain follower panels.

RED panels read the kit's metrics (`finmesh_rpc_requests_total{service,method,code}` and the
`finmesh_rpc_duration_seconds` histogram). The ledger and chain follower panels name metrics the
ledger and chain-gateway services are to export; they stay empty until those services do.
"""

from __future__ import annotations

from typing import Any

from svc.kit.catalog import Catalog

_SELECTOR = 'service=~"$service", method=~"$method"'
# Metrics the later services will export (placeholders until then).
LEDGER_METRICS = (
    ("Journal entries posted /s", "sum by (service) (rate(finmesh_ledger_entries_posted_total[5m]))"),
    ("Unbalanced postings refused /s", "sum(rate(finmesh_ledger_unbalanced_rejected_total[5m]))"),
    ("Outbox backlog", "max by (service) (finmesh_outbox_pending_events)"),
)
CHAIN_FOLLOWER_METRICS = (
    ("Blocks behind head", "max by (chain) (finmesh_chain_follower_lag_blocks)"),
    ("Reorgs /h", "sum by (chain) (increase(finmesh_chain_follower_reorgs_total[1h]))"),
    ("Last processed block", "max by (chain) (finmesh_chain_follower_block_height)"),
)


def _panel(panel_id: int, title: str, expr: str, legend: str, x: int, y: int, unit: str) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
    }


def _row(panel_id: int, title: str, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def _red_panels() -> list[dict[str, Any]]:
    rate = f"sum by (service, method) (rate(finmesh_rpc_requests_total{{{_SELECTOR}}}[5m]))"
    errors = (
        f'sum by (service, method) (rate(finmesh_rpc_requests_total{{{_SELECTOR}, code!="OK"}}[5m]))'
        f" / clamp_min({rate}, 1e-9)"
    )

    def quantile(q: str) -> str:
        buckets = f"rate(finmesh_rpc_duration_seconds_bucket{{{_SELECTOR}}}[5m])"
        return f"histogram_quantile({q}, sum by (service, method, le) ({buckets}))"

    return [
        _row(1, "RED per service and RPC", 0),
        _panel(2, "Rate (requests/s)", rate, "{{service}} {{method}}", 0, 1, "reqps"),
        _panel(3, "Errors (share not OK)", errors, "{{service}} {{method}}", 8, 1, "percentunit"),
        _panel(4, "Duration p99", quantile("0.99"), "{{service}} {{method}}", 16, 1, "s"),
        _panel(5, "Duration p50", quantile("0.5"), "{{service}} {{method}}", 0, 9, "s"),
        _panel(
            6,
            "Errors by code /s",
            f'sum by (service, code) (rate(finmesh_rpc_requests_total{{{_SELECTOR}, code!="OK"}}[5m]))',
            "{{service}} {{code}}",
            8,
            9,
            "reqps",
        ),
        _panel(
            7,
            "Requests by service /s",
            'sum by (service) (rate(finmesh_rpc_requests_total{service=~"$service"}[5m]))',
            "{{service}}",
            16,
            9,
            "reqps",
        ),
    ]


def _placeholder_panels(
    first_id: int, title: str, y: int, metrics: tuple[tuple[str, str], ...]
) -> list[dict[str, Any]]:
    panels = [_row(first_id, title, y)]
    for index, (name, expr) in enumerate(metrics):
        panels.append(
            _panel(first_id + 1 + index, name, expr, "{{service}}{{chain}}", 8 * index, y + 1, "short")
        )
    return panels


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,
        "current": {"text": "All", "value": "$__all"},
    }


def dashboard(catalog: Catalog) -> dict[str, Any]:
    """The dashboard model (Grafana JSON), one `service` choice per catalog service."""
    service_variable = {
        "name": "service",
        "type": "custom",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "query": ",".join(catalog.services),
        "current": {"text": "All", "value": "$__all"},
    }
    return {
        "uid": "finmesh-red",
        "title": "finmesh: services (RED), ledger, chain follower",
        "tags": ["finmesh"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                service_variable,
                _variable("method", 'label_values(finmesh_rpc_requests_total{service=~"$service"}, method)'),
            ]
        },
        "panels": [
            *_red_panels(),
            *_placeholder_panels(20, "Ledger (exported by the ledger service)", 17, LEDGER_METRICS),
            *_placeholder_panels(
                30, "Chain follower (exported by chain-gateway)", 26, CHAIN_FOLLOWER_METRICS
            ),
        ],
    }
