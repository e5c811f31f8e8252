"""Contact verification through the gRPC contract, the codes mailed by the real notification
service to the real SMTP server: a code per channel, rate limited, five wrong tries void it; a
contact change (step-up) stays pending until the new address is verified."""

from __future__ import annotations

import re
import uuid

import grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import user_events_pb2
from finmesh.user.v1 import user_service_pb2 as user

from tests.harness.calls import eventually
from tests.harness.identity import bearer, refused, rid
from tests.notification.conftest import Mesh, mesh

__all__ = ["mesh"]

CODE = re.compile(r"verification code is ([0-9]{6})")
EMAIL = user.CONTACT_CHANNEL_EMAIL


def _address() -> str:
    return f"c{uuid.uuid4().hex[:10]}@example.com"


async def _code(mesh: Mesh, address: str, count: int = 1) -> str:
    """The `count`-th verification code mailed to `address`, once it arrived."""

    def codes() -> list[str]:
        found = []
        for received in [m for m in mesh.smtp.received if m.recipients == [address]]:
            body = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            found.extend(CODE.findall(body))
        return found

    async def arrived() -> bool:
        return len(codes()) >= count

    await eventually(arrived)
    return codes()[count - 1]


def _verify(code: str) -> user.VerifyContactRequest:
    return user.VerifyContactRequest(request_id=rid("verify"), channel=EMAIL, code=code)


async def test_verifying_the_registered_email(mesh: Mesh) -> None:
    identity = mesh.identity
    address = _address()
    registered = await identity.register(email=address)
    me = bearer((await identity.tokens(address)).access_token)
    sent = await identity.users.SendVerificationCode(
        user.SendVerificationCodeRequest(request_id=rid("send"), channel=EMAIL), metadata=me
    )
    assert sent.masked_destination == address[0] + "***@example.com"
    assert sent.next_send_time.ToMicroseconds() > sent.expire_time.ToMicroseconds() - 10 * 60 * 1_000_000
    code = await _code(mesh, address)
    wrong = "000000" if code != "000000" else "111111"
    await refused(
        identity.users.VerifyContact(_verify(wrong), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    verified = (await identity.users.VerifyContact(_verify(code), metadata=me)).user
    assert (verified.email, verified.email_verified, verified.version) == (
        address,
        True,
        registered.version + 1,
    )
    [event] = await identity.events(identity.user_app, user_events_pb2.UserContactVerified)
    assert (event.user_id, event.channel, event.replaced_previous) == (registered.user_id, EMAIL, False)
    # A code works once; another within the minute is refused.
    await refused(
        identity.users.VerifyContact(_verify(code), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        identity.users.SendVerificationCode(
            user.SendVerificationCodeRequest(request_id=rid("send"), channel=EMAIL), metadata=me
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
    )
    await refused(
        identity.users.SendVerificationCode(
            user.SendVerificationCodeRequest(request_id=rid("send"), channel=user.CONTACT_CHANNEL_PHONE),
            metadata=me,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )


async def test_five_wrong_codes_void_the_code(mesh: Mesh) -> None:
    identity = mesh.identity
    address = _address()
    await identity.register(email=address)
    me = bearer((await identity.tokens(address)).access_token)
    await identity.users.SendVerificationCode(
        user.SendVerificationCodeRequest(request_id=rid("send"), channel=EMAIL), metadata=me
    )
    code = await _code(mesh, address)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        await refused(
            identity.users.VerifyContact(_verify(wrong), metadata=me),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
    await refused(
        identity.users.VerifyContact(_verify(code), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    found = (await identity.users.GetMyUser(user.GetMyUserRequest(), metadata=me)).user
    assert not found.email_verified


async def test_changing_the_email_stays_pending_until_verified(mesh: Mesh) -> None:
    identity = mesh.identity
    old, new = _address(), _address()
    registered = await identity.register(email=old)
    access = (await identity.tokens(old)).access_token
    me = bearer(access)
    _, recovery = await identity.enable_totp(access)
    step_up = await identity.auth.VerifyStepUp(
        auth.VerifyStepUpRequest(
            request_id=rid("step-up"),
            purpose=auth_resources.STEP_UP_PURPOSE_CONTACT_CHANGE,
            recovery_code=recovery.pop(),
        ),
        metadata=me,
    )
    await refused(
        identity.users.ChangeContact(
            user.ChangeContactRequest(request_id=rid("change"), email=new, step_up_token="no-step-up"),
            metadata=me,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "STEP_UP_REQUIRED",
    )
    changed = await identity.users.ChangeContact(
        user.ChangeContactRequest(
            request_id=rid("change"), email=new.upper(), step_up_token=step_up.step_up_token
        ),
        metadata=me,
    )
    assert (changed.user.email, changed.user.pending_email) == (old, new)
    [requested] = await identity.events(identity.user_app, user_events_pb2.UserContactChangeRequested)
    assert (requested.user_id, requested.channel) == (registered.user_id, EMAIL)
    # The old address still logs in until the new one is verified.
    assert (await identity.login(old)).HasField("challenge")
    code = await _code(mesh, new)
    verified = (await identity.users.VerifyContact(_verify(code), metadata=me)).user
    assert (verified.email, verified.pending_email, verified.email_verified) == (new, "", True)
    [event] = await identity.events(identity.user_app, user_events_pb2.UserContactVerified)
    assert event.replaced_previous
    assert (await identity.login(new)).HasField("challenge")
    await refused(identity.login(old), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    # The old address is free again.
    assert (await identity.register(email=old)).user_id != registered.user_id
