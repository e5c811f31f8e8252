"""The path-template parser and the OpenAPI mapping of HTTP rules the contracts do not all use yet."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest
from grpc_tools import protoc

from tools.gen import descriptors
from tools.gen.http_rules import Template, Variable, parse_template
from tools.gen.openapi import build_document
from tools.gen.paths import DEPS_DIR


@pytest.mark.parametrize(
    ("text", "segments", "verb", "pattern"),
    [
        ("/v1/users/{user_id}", ("v1", "users", Variable(("user_id",))), "", "/v1/users/*"),
        ("/v1/users/{user.id}/x", ("v1", "users", Variable(("user", "id")), "x"), "", "/v1/users/*/x"),
        (
            "/v1/{name=users/*}:cancel",
            ("v1", Variable(("name",), ("users", "*"))),
            "cancel",
            "/v1/users/*:cancel",
        ),
        ("/v1/files/{path=**}", ("v1", "files", Variable(("path",), ("**",))), "", "/v1/files/**"),
        ("/v1/users/me:close", ("v1", "users", "me"), "close", "/v1/users/me:close"),
    ],
)
def test_parse_template(text: str, segments: tuple[str | Variable, ...], verb: str, pattern: str) -> None:
    template = parse_template(text)
    assert template == Template(segments=segments, verb=verb)
    assert template.pattern == pattern
    assert str(template) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("v1/users", "must start with '/'"),
        ("/v1//users", "empty segment"),
        ("/v1/users/", "empty segment"),
        ("/v1/{a{b}}", "cannot be nested"),
        ("/v1/{a", "unclosed '{'"),
        ("/v1/a}", "unmatched '}'"),
        ("/v1/**/x", "'**' must be the last segment"),
        ("/v1/{a}/{a}", "bound more than once: a"),
        ("/v1/{1a}", "invalid field path '1a'"),
        ("/v1/{a=}", "empty segment in variable"),
        ("/v1/{a}x", "text after a variable"),
        ("/v1/x:", "invalid verb ''"),
        ("/v1/a=b", "invalid segment 'a=b'"),
    ],
)
def test_parse_template_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid path template") as raised:
        parse_template(text)
    assert reason in str(raised.value)


SAMPLE = """
syntax = "proto3";
package finmesh.sample.v1;
import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

// A thing.
message Thing {
  // Id of the thing.
  string id = 1;
  int64 count = 2;
  google.protobuf.Int32Value limit = 3;
  google.protobuf.Timestamp created_at = 4;
  map<string, Thing> children = 5;
  Thing parent = 6;
}
message GetThingRequest { string thing_id = 1; Thing filter = 2; }
message UpdateThingRequest { string request_id = 1; Thing thing = 2; }
message MoveThingRequest { string request_id = 1; string name = 2; string to = 3; }

// Things.
service SampleService {
  // Gets a thing.
  //
  // Long description.
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {
      get: "/v1/things/{thing_id}"
      additional_bindings { post: "/v1/things/{thing_id}:get" body: "*" }
    };
  }
  rpc UpdateThing(UpdateThingRequest) returns (Thing) {
    option (google.api.http) = {patch: "/v1/things/{thing.id}" body: "thing"};
  }
  rpc MoveThing(MoveThingRequest) returns (Thing) {
    option (google.api.http) = {post: "/v1/{name=shelves/*/things/*}:move" body: "*" response_body: "parent"};
  }
}
"""


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OpenAPI document of the sample service above."""
    if not (DEPS_DIR / "google" / "api" / "annotations.proto").exists():
        pytest.fail(f"{DEPS_DIR} lacks google/api: run 'make gen' (or python -m tools.gen.deps)")
    root = tmp_path_factory.mktemp("sample")
    (root / "sample.proto").write_text(SAMPLE)
    out = root / "sample.binpb"
    includes = [f"-I{root}", f"-I{DEPS_DIR}", f"-I{resources.files('grpc_tools') / '_proto'}"]
    flags = ["--include_imports", "--include_source_info", f"--descriptor_set_out={out}"]
    assert protoc.main(["protoc", *includes, *flags, "sample.proto"]) == 0
    return build_document(descriptors.load(out), "0.0.0")


def _operation(document: dict[str, Any], path: str, verb: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][verb]
    return operation


def test_query_parameters_follow_grpc_gateway(document: dict[str, Any]) -> None:
    operation = _operation(document, "/v1/things/{thing_id}", "get")
    assert operation["operationId"] == "SampleService_GetThing"
    assert (operation["summary"], operation["description"]) == ("Gets a thing.", "Long description.")
    names = [(parameter["in"], parameter["name"]) for parameter in operation["parameters"]]
    # Messages expand to dotted names; maps and recursive references cannot be query parameters.
    queries = ["filter.id", "filter.count", "filter.limit", "filter.createdAt"]
    assert names == [("path", "thing_id"), *(("query", name) for name in queries)]
    schemas = {parameter["name"]: parameter["schema"] for parameter in operation["parameters"]}
    assert schemas["filter.count"] == {"type": "string", "format": "int64"}
    assert schemas["filter.limit"] == {"type": ["integer", "null"], "format": "int32"}
    assert schemas["filter.createdAt"]["format"] == "date-time"


def test_additional_binding_with_body_star(document: dict[str, Any]) -> None:
    operation = _operation(document, "/v1/things/{thing_id}:get", "post")
    assert operation["operationId"] == "SampleService_GetThing2"
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert list(body["properties"]) == ["filter"]  # thing_id comes from the path
    assert [parameter["name"] for parameter in operation["parameters"]] == ["thing_id"]


def test_field_body_and_nested_path_variable(document: dict[str, Any]) -> None:
    operation = _operation(document, "/v1/things/{thing.id}", "patch")
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/finmesh.sample.v1.Thing"
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert parameters["thing.id"]["in"] == "path"
    assert parameters["thing.id"]["description"] == "Id of the thing."
    assert parameters["requestId"]["in"] == "query"


def test_multi_segment_variable_response_body_and_errors(document: dict[str, Any]) -> None:
    operation = _operation(document, "/v1/{name}:move", "post")
    (name,) = [parameter for parameter in operation["parameters"] if parameter["name"] == "name"]
    assert name["schema"]["pattern"] == "^shelves/[^/]+/things/[^/]+$"
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert list(body["properties"]) == ["requestId", "to"]
    response = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert response == {"$ref": "#/components/schemas/finmesh.sample.v1.Thing"}
    error = operation["responses"]["default"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/google.rpc.Status"}
    assert set(document["components"]["schemas"]["google.rpc.Status"]["properties"]) == {
        "code",
        "message",
        "details",
    }
