"""values.schema.json of the chart: unknown keys, unknown services, bad image tags and bad resources fail."""

from __future__ import annotations

from typing import Any

from svc.kit.catalog import Catalog
from tools.deploy.settings import ServiceSettings

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A release version or a commit build; never a moving tag such as `latest`.
IMAGE_TAG = r"^(v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?|sha-[0-9a-f]{7,40})$"
_DURATION = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$"
_SECRET_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# Helm reads every number of the values as float64: beyond 2^53 an integer (an amount in wei) is
# silently rounded, so the schema refuses such numbers and they are given as strings.
SAFE_INTEGER_MAX = 2**53 - 1


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _string(pattern: str | None = None) -> dict[str, Any]:
    return {"type": "string", "pattern": pattern} if pattern else {"type": "string", "minLength": 1}


def _resources() -> dict[str, Any]:
    amounts = _object({"cpu": _string(_QUANTITY), "memory": _string(_QUANTITY)}, ["cpu", "memory"])
    return _object({"requests": amounts, "limits": amounts}, ["requests", "limits"])


def _int(minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _service(catalog: Catalog) -> dict[str, Any]:
    names = {"type": "array", "items": {"enum": [*sorted(catalog.services), "gateway"]}, "uniqueItems": True}
    return _object(
        {
            "enabled": {"type": "boolean"},
            "domain": _string(),
            "optional": {"type": "boolean"},
            "grpcService": _string(r"^[a-z][a-z0-9_.]*\.[A-Z][A-Za-z0-9]*$"),
            "port": _int(1024, 65535),
            "metricsPort": _int(1024, 65535),
            "callers": names,
            "readOnlyMethods": {"type": "array", "items": _string(r"^[A-Z][A-Za-z0-9]*$")},
            "replicas": _int(1),
            "resources": _resources(),
            "autoscaling": _autoscaling(),
            "redis": {"type": "boolean"},
        },
        ["domain", "optional", "grpcService", "port", "metricsPort", "callers", "readOnlyMethods", "redis"],
    )


def _autoscaling() -> dict[str, Any]:
    return _object(
        {"minReplicas": _int(1), "maxReplicas": _int(1), "targetCPUUtilizationPercentage": _int(1, 100)},
        ["minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"],
    )


def _names(names: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    """An object whose keys are some of `names`, each holding `value` (properties rather than
    propertyNames: Helm then names the refused key and where it is)."""
    return _object(dict.fromkeys(names, value))


def _service_settings(settings: dict[str, ServiceSettings]) -> dict[str, Any]:
    """serviceSettings: per service, literals only for its plain settings, Secret references for
    the rest, secret files only for its `*_FILE` settings (tools.deploy.settings)."""
    reference = {"$ref": "#/definitions/secretReference"}
    literal = {"$ref": "#/definitions/settingValue"}
    return _object(
        {
            service: _object(
                {
                    "settings": _names(described.plain, literal),
                    "secretSettings": _names(described.referable, reference),
                    "secretFiles": _names(described.files, reference),
                }
            )
            for service, described in sorted(settings.items())
        }
    )


def _setting_value() -> dict[str, Any]:
    """A literal setting: JSON, with no number Helm would round."""
    value = {"$ref": "#/definitions/settingValue"}
    return {
        "anyOf": [
            {"type": ["string", "boolean"]},
            {"type": "number", "minimum": -SAFE_INTEGER_MAX, "maximum": SAFE_INTEGER_MAX},
            {"type": "array", "items": value},
            {"type": "object", "additionalProperties": value},
        ]
    }


def values_schema(catalog: Catalog, settings: dict[str, ServiceSettings]) -> dict[str, Any]:
    """The JSON schema (draft 7) Helm checks every install, upgrade, lint and template against."""
    image = _object(
        {
            "repository": _string(r"^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?$"),
            "tag": _string(IMAGE_TAG),
            "digest": _string(r"^sha256:[0-9a-f]{64}$"),
            "pullPolicy": {"enum": ["IfNotPresent", "Always"]},
        },
        ["repository", "tag", "pullPolicy"],
    )
    secret_ref = _object({"name": _string(_DNS_LABEL), "key": _string()}, ["name", "key"])
    properties: dict[str, Any] = {
        "profile": {"enum": list(catalog.profiles)},
        "profileDescription": _string(),
        "deployOptional": {"type": "boolean"},
        "image": image,
        "services": {
            "type": "object",
            "propertyNames": {"enum": sorted(catalog.services)},
            "additionalProperties": _service(catalog),
        },
        "defaults": _object(
            {
                "replicas": _int(1),
                "resources": _resources(),
                "autoscaling": _autoscaling(),
                "logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
            },
            ["replicas", "resources", "autoscaling", "logLevel"],
        ),
        "config": _object(
            {
                "kafkaBootstrapServers": _string(),
                "databaseUrl": _object(
                    {"secretPrefix": _string(_DNS_LABEL), "key": _string()}, ["secretPrefix", "key"]
                ),
                "jwtPublicKeys": secret_ref,
                "jwtIssuer": _string(),
                "jwtAudience": _string(),
                "redisUrl": secret_ref,
            },
            ["kafkaBootstrapServers", "databaseUrl", "jwtPublicKeys", "jwtIssuer", "jwtAudience", "redisUrl"],
        ),
        "serviceSettings": _service_settings(settings),
        "migrations": _object(
            {"enabled": {"type": "boolean"}, "backoffLimit": _int(0)}, ["enabled", "backoffLimit"]
        ),
        "gateway": _object(
            {
                "enabled": {"type": "boolean"},
                "args": {"type": "array", "items": _string()},
                "httpPort": _int(1024, 65535),
                "metricsPort": _int(1024, 65535),
                "replicas": _int(1),
                "resources": _resources(),
                "autoscaling": _autoscaling(),
            },
            ["enabled", "args", "httpPort", "metricsPort", "replicas", "resources", "autoscaling"],
        ),
        "mesh": _mesh(),
        "ingress": _ingress(),
        "edge": _edge(catalog),
        "monitoring": _object(
            {"prometheusAnnotations": {"type": "boolean"}, "grafanaDashboards": {"type": "boolean"}},
            ["prometheusAnnotations", "grafanaDashboards"],
        ),
        "topology": _object({"zoneKey": _string(), "maxSkew": _int(1)}, ["zoneKey", "maxSkew"]),
    }
    schema = _object(properties, [key for key in properties if key not in ("profileDescription", "edge")])
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "finmesh chart values"
    schema["definitions"] = {
        "settingValue": _setting_value(),
        "secretReference": _object(
            {"secret": _string(_SECRET_NAME), "key": _string(_SECRET_KEY)}, ["secret", "key"]
        ),
    }
    return schema


def _mesh() -> dict[str, Any]:
    return _object(
        {
            "enabled": {"type": "boolean"},
            "timeout": _string(_DURATION),
            "readOnlyRetries": _object(
                {"attempts": _int(0, 5), "perTryTimeout": _string(_DURATION), "retryOn": _string()},
                ["attempts", "perTryTimeout", "retryOn"],
            ),
            "connectionPool": _object(
                {
                    "maxConnections": _int(1),
                    "http2MaxRequests": _int(1),
                    "maxRequestsPerConnection": _int(0),
                    "connectTimeout": _string(_DURATION),
                },
                ["maxConnections", "http2MaxRequests", "maxRequestsPerConnection", "connectTimeout"],
            ),
            "outlierDetection": _object(
                {
                    "consecutive5xxErrors": _int(1),
                    "consecutiveGatewayErrors": _int(1),
                    "interval": _string(_DURATION),
                    "baseEjectionTime": _string(_DURATION),
                    "maxEjectionPercent": _int(0, 100),
                    "failurePercentageThreshold": _int(1, 100),
                    "failurePercentageRequestVolume": _int(1),
                },
                [
                    "consecutive5xxErrors",
                    "consecutiveGatewayErrors",
                    "interval",
                    "baseEjectionTime",
                    "maxEjectionPercent",
                    "failurePercentageThreshold",
                    "failurePercentageRequestVolume",
                ],
            ),
        },
        ["enabled", "timeout", "readOnlyRetries", "connectionPool", "outlierDetection"],
    )


def _ingress() -> dict[str, Any]:
    return _object(
        {
            "enabled": {"type": "boolean"},
            "namespace": _string(_DNS_LABEL),
            "selector": {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1},
            "serviceAccount": _string(_DNS_LABEL),
            "hosts": {"type": "array", "items": _string(), "minItems": 1},
            "tlsCredentialName": _string(_DNS_LABEL),
            "listenerPort": _int(1, 65535),
            "jwksUri": _string(r"^https?://.+/v1/auth/jwks$"),
            "publicPaths": {"type": "array", "items": _string(r"^/")},
            "userHeader": _string(r"^x-[a-z0-9-]+$"),
            "transcode": {"type": "boolean"},
            "rateLimit": _object(
                {"perUser": _int(1), "perIp": _int(1), "maxDynamicBuckets": _int(1)},
                ["perUser", "perIp", "maxDynamicBuckets"],
            ),
        },
        [
            "enabled",
            "namespace",
            "selector",
            "serviceAccount",
            "hosts",
            "tlsCredentialName",
            "listenerPort",
            "jwksUri",
            "publicPaths",
            "userHeader",
            "transcode",
            "rateLimit",
        ],
    )


def _edge(catalog: Catalog) -> dict[str, Any]:
    """The generated REST routes and transcoder options of the ingress (tools.deploy.edge)."""
    route = _object(
        {
            "name": _string(),
            "service": {"enum": sorted(catalog.services)},
            "rpc": _string(r"^[A-Z][A-Za-z0-9]*$"),
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
            "regex": _string(r"^\^/.*\$$"),
            "timeout": _string(_DURATION),
        },
        ["name", "service", "rpc", "method", "regex", "timeout"],
    )
    transcoder: dict[str, Any] = {"type": "object", "required": ["@type"]}
    return _object(
        {
            "filterName": _string(),
            "transcoder": transcoder,
            "routes": {"type": "array", "items": route},
        },
        ["filterName", "transcoder", "routes"],
    )
