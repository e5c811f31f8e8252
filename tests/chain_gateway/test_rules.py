"""The chain gateway contract's CEL rules in Python (svc/kit/common_rules.py) agree with
protovalidate's CEL, so that every chain gateway request is validated without the interpreter."""

from __future__ import annotations

import pytest
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from hypothesis import given

import svc.kit.common_rules  # noqa: F401 - registers the rules
from svc.kit import validation
from tests.kit.test_validation import _settings, assert_agree, messages

EXAMPLES = 20


def request_types() -> list[Descriptor]:
    service = chain_gateway_service_pb2.DESCRIPTOR.services_by_name["ChainGatewayService"]
    requests = {method.input_type.full_name: method.input_type for method in service.methods}
    return [requests[name] for name in sorted(requests)]


@pytest.mark.parametrize("descriptor", request_types(), ids=lambda descriptor: descriptor.name)
def test_every_request_is_validated_without_the_cel_interpreter(descriptor: Descriptor) -> None:
    assert validation._is_compiled(descriptor), f"{descriptor.full_name} still needs protovalidate"


@pytest.mark.parametrize("descriptor", request_types(), ids=lambda descriptor: descriptor.name)
def test_python_rules_agree_with_protovalidate(descriptor: Descriptor) -> None:
    @_settings(EXAMPLES)
    @given(messages(descriptor))
    def agree(message: Message) -> None:
        assert_agree(message)

    agree()
