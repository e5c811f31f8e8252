"""Staff roles through the gRPC contract: maker-checker assignment (a second admin approves with
a step-up), roles in the next tokens, escalation attempts refused, revocation ending sessions,
the last admin kept."""

from __future__ import annotations

import time

import grpc
import jwt
from finmesh.auth.v1 import auth_resources_pb2 as resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.common.v1 import enums_pb2
from finmesh.events.v1 import auth_events_pb2
from finmesh.user.v1 import user_service_pb2 as user

from svc.auth import totp
from tests.harness.identity import CHECKER_EMAIL, CHECKER_REGISTRATION, Identity, bearer, refused, rid

DENIED = grpc.StatusCode.PERMISSION_DENIED


def _roles(token: str) -> list[str]:
    return list(jwt.decode(token, options={"verify_signature": False})["roles"])


async def test_maker_checker_grants_a_role_in_the_next_tokens(identity: Identity) -> None:
    maker = await identity.admin_token()
    grantee = await identity.register(email="agent@example.com")
    grantee_token = (await identity.tokens("agent@example.com")).access_token
    create = auth.CreateRoleAssignmentRequest(
        request_id=rid(), user_id=grantee.user_id, role=enums_pb2.ROLE_SUPPORT, justification="helpdesk"
    )
    # Staff roles need 2FA.
    await refused(
        identity.auth.CreateRoleAssignment(create, metadata=bearer(maker)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    await identity.enable_totp(grantee_token)
    created = (await identity.auth.CreateRoleAssignment(create, metadata=bearer(maker))).role_assignment
    assert created.state == resources.ROLE_ASSIGNMENT_STATE_PENDING_APPROVAL
    again = auth.CreateRoleAssignmentRequest()
    again.CopyFrom(create)
    again.request_id = rid()
    await refused(
        identity.auth.CreateRoleAssignment(again, metadata=bearer(maker)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )

    checker = await identity.admin_token(CHECKER_EMAIL, CHECKER_REGISTRATION)
    checker_secret, _ = await identity.enable_totp(checker)
    maker_secret, _ = await identity.enable_totp(maker)

    async def step_up(token: str, secret: bytes) -> str:
        response = await identity.auth.VerifyStepUp(
            auth.VerifyStepUpRequest(
                request_id=rid(),
                purpose=resources.STEP_UP_PURPOSE_STAFF_APPROVAL,
                totp_code=totp.totp(secret, time.time() + 30),
            ),
            metadata=bearer(token),
        )
        return response.step_up_token

    def approve(token: str) -> auth.ApproveRoleAssignmentRequest:
        return auth.ApproveRoleAssignmentRequest(
            request_id=rid(), role_assignment_id=created.role_assignment_id, step_up_token=token
        )

    own = approve(await step_up(maker, maker_secret))
    await refused(
        identity.auth.ApproveRoleAssignment(own, metadata=bearer(maker)), DENIED, "PERMISSION_DENIED"
    )
    await refused(
        identity.auth.ApproveRoleAssignment(approve("su_forged"), metadata=bearer(checker)),
        DENIED,
        "STEP_UP_REQUIRED",
    )
    approved = await identity.auth.ApproveRoleAssignment(
        approve(await step_up(checker, checker_secret)), metadata=bearer(checker)
    )
    assert approved.role_assignment.state == resources.ROLE_ASSIGNMENT_STATE_ACTIVE
    assert approved.role_assignment.decided_by != approved.role_assignment.requested_by

    assert _roles(grantee_token) == ["user"]
    challenge = (await identity.login("agent@example.com")).challenge.challenge_token
    assert challenge
    # A support agent reaches staff look-ups now, and still may not grant roles.
    listed = await identity.auth.ListRoleAssignments(
        auth.ListRoleAssignmentsRequest(user_id=grantee.user_id), metadata=bearer(maker)
    )
    assert [row.role for row in listed.role_assignments] == [enums_pb2.ROLE_SUPPORT]
    checked = await identity.auth.CheckPermission(
        auth.CheckPermissionRequest(user_id=grantee.user_id, permission="user.users.read")
    )
    assert (checked.allowed, checked.granted_by) == (True, enums_pb2.ROLE_SUPPORT)
    approved_events = await identity.events(identity.auth_app, auth_events_pb2.RoleAssignmentApproved)
    assert [event.user_id for event in approved_events] == [grantee.user_id]


async def test_escalation_attempts_are_refused(identity: Identity) -> None:
    grantee = await identity.register(email="climber@example.com")
    token = (await identity.tokens("climber@example.com")).access_token
    to_admin = auth.CreateRoleAssignmentRequest(
        request_id=rid(), user_id=grantee.user_id, role=enums_pb2.ROLE_ADMIN, justification="me"
    )
    await refused(
        identity.auth.CreateRoleAssignment(to_admin, metadata=bearer(token)), DENIED, "PERMISSION_DENIED"
    )
    maker = await identity.admin_token()
    me = jwt.decode(maker, options={"verify_signature": False})["sub"]
    for_self = auth.CreateRoleAssignmentRequest(
        request_id=rid(), user_id=me, role=enums_pb2.ROLE_AUDITOR, justification="x"
    )
    await refused(
        identity.auth.CreateRoleAssignment(for_self, metadata=bearer(maker)), DENIED, "PERMISSION_DENIED"
    )
    user_role = auth.CreateRoleAssignmentRequest(
        request_id=rid(), user_id=grantee.user_id, role=enums_pb2.ROLE_USER, justification="x"
    )
    await refused(
        identity.auth.CreateRoleAssignment(user_role, metadata=bearer(maker)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        identity.auth.ListRoles(auth.ListRolesRequest(), metadata=bearer(token)), DENIED, "PERMISSION_DENIED"
    )
    lookup = identity.users.GetUser(user.GetUserRequest(user_id=grantee.user_id), metadata=bearer(token))
    await refused(lookup, DENIED, "PERMISSION_DENIED")


async def test_revocation_ends_sessions_and_rejection_is_final(identity: Identity) -> None:
    maker = await identity.admin_token()
    checker = await identity.admin_token(CHECKER_EMAIL, CHECKER_REGISTRATION)
    checker_secret, _ = await identity.enable_totp(checker)
    grantee = await identity.register(email="temp@example.com")
    grantee_tokens = await identity.tokens("temp@example.com")
    await identity.enable_totp(grantee_tokens.access_token)

    async def assign(role: int) -> str:
        created = await identity.auth.CreateRoleAssignment(
            auth.CreateRoleAssignmentRequest(
                request_id=rid(), user_id=grantee.user_id, role=role, justification="j"
            ),  # type: ignore[arg-type]
            metadata=bearer(maker),
        )
        return created.role_assignment.role_assignment_id

    rejected_id = await assign(enums_pb2.ROLE_APPROVER)
    reject = auth.RejectRoleAssignmentRequest(
        request_id=rid(), role_assignment_id=rejected_id, note="not needed"
    )
    rejected = await identity.auth.RejectRoleAssignment(reject, metadata=bearer(checker))
    assert rejected.role_assignment.state == resources.ROLE_ASSIGNMENT_STATE_REJECTED
    again = auth.RejectRoleAssignmentRequest(request_id=rid(), role_assignment_id=rejected_id, note="again")
    await refused(
        identity.auth.RejectRoleAssignment(again, metadata=bearer(checker)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )

    active_id = await assign(enums_pb2.ROLE_OPERATOR)
    step_up = await identity.auth.VerifyStepUp(
        auth.VerifyStepUpRequest(
            request_id=rid(),
            purpose=resources.STEP_UP_PURPOSE_STAFF_APPROVAL,
            totp_code=totp.totp(checker_secret, time.time() + 30),
        ),
        metadata=bearer(checker),
    )
    await identity.auth.ApproveRoleAssignment(
        auth.ApproveRoleAssignmentRequest(
            request_id=rid(), role_assignment_id=active_id, step_up_token=step_up.step_up_token
        ),
        metadata=bearer(checker),
    )
    revoke = auth.RevokeRoleAssignmentRequest(
        request_id=rid(), role_assignment_id=active_id, note="left the team"
    )
    revoked = await identity.auth.RevokeRoleAssignment(revoke, metadata=bearer(maker))
    assert revoked.role_assignment.state == resources.ROLE_ASSIGNMENT_STATE_REVOKED
    refresh = auth.RefreshTokenRequest(request_id=rid(), refresh_token=grantee_tokens.refresh_token)
    await refused(identity.auth.RefreshToken(refresh), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    checked = await identity.auth.CheckPermission(
        auth.CheckPermissionRequest(user_id=grantee.user_id, permission="user.users.freeze")
    )
    assert not checked.allowed
