"""UserService: translates the contract's messages to the domain and back, and runs each change
with its status-change record, its event and its idempotency key in one transaction.

Who may do what: end users (a verified token without a staff role) reach only the `me` methods;
staff (support and above) and internal callers (no end-user token; the mesh has already checked
the calling service against the catalog) reach the others.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.user.v1 import user_service_pb2 as service
from finmesh.user.v1 import user_service_pb2_grpc as service_grpc
from google.protobuf import timestamp_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, idempotency, identifiers, paging
from svc.kit.context import EndUser, call
from svc.kit.db import Database
from svc.kit.stepup import AuthStepUp
from svc.user import domain, events, store, verification
from svc.user.credentials import PasswordCredentials
from svc.user.domain import Actor, Channel, Profile, Reason, Status, StatusChange, User
from svc.user.holdings import Holdings

SERVICE = "/finmesh.user.v1.UserService/"
STAFF_ROLES = frozenset({"support", "operator", "approver", "admin", "auditor"})
# Freezes with these reasons end every session at once: a stolen session must not live on.
REVOKING_REASONS = frozenset({Reason.SECURITY, Reason.FRAUD_SUSPECTED})
ASCENDING = 1
STEP_UP_ACCOUNT_CLOSE = auth_resources.STEP_UP_PURPOSE_ACCOUNT_CLOSE
STEP_UP_CONTACT_CHANGE = auth_resources.STEP_UP_PURPOSE_CONTACT_CHANGE


def _now_us() -> int:
    return time.time_ns() // 1000


def _timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def user_message(user: User) -> service.User:
    """The contract's User."""
    message = service.User(
        user_id=user.user_id,
        email=user.email,
        email_verified=user.email_verified,
        phone=user.phone,
        phone_verified=user.phone_verified,
        pending_email=user.pending_email,
        pending_phone=user.pending_phone,
        profile=service.UserProfile(
            display_name=user.profile.display_name,
            language=user.profile.language,
            time_zone=user.profile.time_zone,
            country_of_residence=user.profile.country_of_residence,
            marketing_consent=user.profile.marketing_consent,
        ),
        status=int(user.status),  # type: ignore[arg-type]
        status_reasons=[int(reason) for reason in user.reasons],  # type: ignore[misc]
        create_time=_timestamp(user.create_time_us),
        update_time=_timestamp(user.update_time_us),
        version=user.version,
    )
    if user.close_time_us is not None:
        message.close_time.CopyFrom(_timestamp(user.close_time_us))
    return message


def _change_message(change: StatusChange) -> service.StatusChange:
    return service.StatusChange(
        previous_status=int(change.previous_status),  # type: ignore[arg-type]
        new_status=int(change.new_status),  # type: ignore[arg-type]
        reason=int(change.reason),  # type: ignore[arg-type]
        note=change.note,
        actor_type=int(change.actor_type),  # type: ignore[arg-type]
        actor_id=change.actor_id,
        approval_id=change.approval_id,
        change_time=_timestamp(change.change_time_us),
    )


def _profile_of(message: service.UserProfile) -> Profile:
    return Profile(
        display_name=message.display_name,
        language=message.language,
        time_zone=message.time_zone,
        country_of_residence=message.country_of_residence,
        marketing_consent=message.marketing_consent,
    )


def _end_user() -> EndUser | None:
    served = call()
    return served.user if served is not None else None


def _me() -> EndUser:
    """The calling end user; UNAUTHENTICATED without a verified token."""
    user = _end_user()
    if user is None:
        raise errors.Unauthenticated("this method acts on the calling user: send an access token")
    return user


def _require_staff() -> None:
    """Staff end users and internal callers pass; other end users are refused."""
    user = _end_user()
    if user is not None and not user.roles & STAFF_ROLES:
        raise errors.PermissionDenied("support and above only", metadata={"required_role": "support"})


def _actor() -> tuple[Actor, str]:
    """Who is acting: a staff member (from the token), else the calling service."""
    user = _end_user()
    if user is not None:
        return Actor.OPERATOR, user.subject
    served = call()
    return Actor.SYSTEM, (served.caller if served is not None and served.caller else "system")


def _position(token: str, fingerprint: str) -> dict[str, Any]:
    """The position of a page token, which must come from a listing with the same filters."""
    position = paging.decode_token(token)
    if position and position.get("f", "") != fingerprint:
        raise errors.InvalidArgument(
            [errors.FieldViolation("page_token", "not a token from this listing with these filters")]
        )
    return position


class UserServicer(service_grpc.UserServiceServicer):
    """The user service's gRPC surface over its store and the auth service's credentials."""

    def __init__(
        self,
        database: Database,
        credentials: PasswordCredentials,
        holdings: Holdings,
        step_up: AuthStepUp,
        codes: verification.CodeSender,
    ) -> None:
        self.codes = codes
        self.database = database
        self.credentials = credentials
        self.holdings = holdings
        self.step_up = step_up

    async def _user(self, session: AsyncSession, user_id: str, *, lock: bool = False) -> User:
        user = await store.user_by_id(session, user_id, lock=lock)
        if user is None:
            raise errors.NotFound(f"no user {user_id}", metadata={"user_id": user_id})
        return user

    # Registration and the caller's own record

    async def RegisterUser(self, request: service.RegisterUserRequest, context: Any) -> Any:
        """Creates an ACTIVE user at L0 after the auth service stored the password."""
        email = identifiers.normal_email(request.email) if request.HasField("email") else ""
        phone = identifiers.normal_phone(request.phone) if request.HasField("phone") else ""
        method = SERVICE + "RegisterUser"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.RegisterUserResponse)
            if replay is not None:
                return replay
            if await store.user_by_identifier(session, email=email, phone=phone) is not None:
                raise self._taken(email)
        user_id = domain.user_id_for(request.request_id)
        # The password goes first: a user record without a credential could never log in, while
        # a credential whose registration then fails belongs to an id that no user ever has.
        await self.credentials.create(request.request_id, user_id, request.password)
        now = _now_us()
        user = User(
            user_id=user_id,
            email=email,
            phone=phone,
            profile=_profile_of(request.profile),
            status=Status.ACTIVE,
            reasons=(),
            accepted_terms_version=request.accepted_terms_version,
            referrer_user_id="",
            create_time_us=now,
            update_time_us=now,
            close_time_us=None,
            version=1,
        )
        response = service.RegisterUserResponse(
            user=user_message(user),
            verification_channel=int(user.channel),  # type: ignore[arg-type]
        )
        try:
            async with self.database.transaction() as session:
                replay = await idempotency.lookup(session, method, request, service.RegisterUserResponse)
                if replay is not None:
                    return replay
                await store.insert_user(session, user)
                await events.publish_registered(session, user, request.request_id)
                await idempotency.record(session, method, request, response)
        except IntegrityError:
            # A concurrent registration of the same identifier (or the same request) won.
            async with self.database.transaction() as session:
                replay = await idempotency.lookup(session, method, request, service.RegisterUserResponse)
            if replay is not None:
                return replay
            raise self._taken(email) from None
        return response

    @staticmethod
    def _taken(email: str) -> errors.AlreadyExists:
        channel = "email" if email else "phone"
        return errors.AlreadyExists(f"this {channel} is already registered", metadata={"field": channel})

    async def GetMyUser(self, request: service.GetMyUserRequest, context: Any) -> Any:
        """The calling user."""
        me = _me()
        async with self.database.transaction() as session:
            user = await self._user(session, me.subject)
        return service.GetMyUserResponse(user=user_message(user))

    async def UpdateMyProfile(self, request: service.UpdateMyProfileRequest, context: Any) -> Any:
        """Applies the masked profile fields; a mask naming only unchanged values changes nothing."""
        me = _me()
        paths = list(request.update_mask.paths)
        changes = _profile_of(request.profile)

        async def work(session: AsyncSession) -> service.UpdateMyProfileResponse:
            user = await self._user(session, me.subject, lock=True)
            if user.status is Status.CLOSED:
                raise errors.InvalidState("the account is closed", metadata={"status": user.status.name})
            profile = domain.update_profile(user.profile, changes, paths)
            changed = [path for path in paths if getattr(profile, path) != getattr(user.profile, path)]
            if changed:
                user = replace(user, profile=profile, version=user.version + 1, update_time_us=_now_us())
                await store.update_user(session, user)
                await events.publish_profile_updated(session, user, changed, request.request_id)
            return service.UpdateMyProfileResponse(user=user_message(user))

        return await idempotency.run_once(
            self.database, SERVICE + "UpdateMyProfile", request, service.UpdateMyProfileResponse, work
        )

    # Look-ups for staff and services

    async def GetUser(self, request: service.GetUserRequest, context: Any) -> Any:
        """One user."""
        _require_staff()
        async with self.database.transaction() as session:
            user = await self._user(session, request.user_id)
        return service.GetUserResponse(user=user_message(user))

    async def BatchGetUsers(self, request: service.BatchGetUsersRequest, context: Any) -> Any:
        """Users in the order asked; unknown ids listed apart."""
        _require_staff()
        async with self.database.transaction() as session:
            found = await store.users_by_id(session, list(request.user_ids))
        return service.BatchGetUsersResponse(
            users=[user_message(found[user_id]) for user_id in request.user_ids if user_id in found],
            missing_user_ids=[user_id for user_id in request.user_ids if user_id not in found],
        )

    async def LookupUser(self, request: service.LookupUserRequest, context: Any) -> Any:
        """The user that is not CLOSED holding an identifier. Internal only: never for end users."""
        if _end_user() is not None:
            raise errors.PermissionDenied("identifier look-ups are for platform services only")
        email = identifiers.normal_email(request.email) if request.HasField("email") else ""
        phone = identifiers.normal_phone(request.phone) if request.HasField("phone") else ""
        async with self.database.transaction() as session:
            user = await store.user_by_identifier(session, email=email, phone=phone)
        if user is None:
            raise errors.NotFound("no user with this identifier")
        return service.LookupUserResponse(user=user_message(user))

    async def SearchUsers(self, request: service.SearchUsersRequest, context: Any) -> Any:
        """Users matching the filters, a page at a time; the page token is bound to the filters."""
        _require_staff()
        filters = service.SearchUsersRequest()
        filters.CopyFrom(request)
        filters.ClearField("page_size")
        filters.ClearField("page_token")
        fingerprint = idempotency.fingerprint(filters)[:16]
        position = _position(request.page_token, fingerprint)
        limit = paging.page_size(request.page_size)
        after = (int(position["t"]), str(position["u"])) if position else None
        async with self.database.transaction() as session:
            found = await store.search_users(
                session,
                query=request.query.strip(),
                statuses=[Status(status) for status in request.statuses],
                reason=Reason(request.status_reason) if request.status_reason else None,
                country=request.country_of_residence,
                create_from_us=request.create_time_from.ToMicroseconds()
                if request.HasField("create_time_from")
                else None,
                create_to_us=request.create_time_to.ToMicroseconds()
                if request.HasField("create_time_to")
                else None,
                ascending=request.order == ASCENDING,
                after=after,
                limit=limit + 1,
            )
        page = found[:limit]
        token = ""
        if len(found) > limit:
            last = page[-1]
            token = paging.encode_token({"t": last.create_time_us, "u": last.user_id, "f": fingerprint})
        return service.SearchUsersResponse(users=[user_message(user) for user in page], next_page_token=token)

    async def ListUserStatusChanges(self, request: service.ListUserStatusChangesRequest, context: Any) -> Any:
        """A user's status changes, newest first."""
        _require_staff()
        position = _position(request.page_token, request.user_id)
        limit = paging.page_size(request.page_size)
        async with self.database.transaction() as session:
            await self._user(session, request.user_id)
            found = await store.list_status_changes(
                session,
                request.user_id,
                before_version=int(position["v"]) if position else None,
                limit=limit + 1,
            )
        page = found[:limit]
        token = (
            paging.encode_token({"v": page[-1].version, "f": request.user_id}) if len(found) > limit else ""
        )
        return service.ListUserStatusChangesResponse(
            status_changes=[_change_message(change) for change in page], next_page_token=token
        )

    # Status

    async def _change_status(
        self,
        session: AsyncSession,
        before: User,
        after: User,
        reason: Reason,
        note: str,
        approval_id: str,
        request_id: str,
        *,
        revoke_sessions: bool = False,
        actor: tuple[Actor, str] | None = None,
    ) -> User:
        actor_type, actor_id = actor or _actor()
        now = _now_us()
        after = replace(after, version=before.version + 1, update_time_us=now)
        change = StatusChange(
            change_id=str(uuid.uuid4()),
            user_id=before.user_id,
            previous_status=before.status,
            new_status=after.status,
            reason=reason,
            note=note,
            actor_type=actor_type,
            actor_id=actor_id,
            approval_id=approval_id,
            change_time_us=now,
            version=after.version,
            revoke_sessions=revoke_sessions,
        )
        await store.update_user(session, after)
        await store.insert_status_change(session, change)
        await events.publish_status_changed(session, after, change, request_id)
        return after

    @staticmethod
    def _require_approval(approval_id: str) -> None:
        # A staff member acts on a user's status only through the admin service's maker-checker.
        if _end_user() is not None and not approval_id:
            raise errors.InvalidArgument(
                [
                    errors.FieldViolation(
                        "approval_id", "required when a staff member initiates it", "required"
                    )
                ]
            )

    async def FreezeUser(self, request: service.FreezeUserRequest, context: Any) -> Any:
        """ACTIVE -> FROZEN, or one more reason on a FROZEN user; the same reason again is a no-op."""
        _require_staff()
        self._require_approval(request.approval_id)
        reason = Reason(request.reason)

        async def work(session: AsyncSession) -> service.FreezeUserResponse:
            user = await self._user(session, request.user_id, lock=True)
            if user.status is Status.FROZEN and reason in user.reasons:
                return service.FreezeUserResponse(user=user_message(user))
            frozen = domain.freeze(user, reason)
            revoke = request.revoke_sessions or reason in REVOKING_REASONS
            changed = await self._change_status(
                session,
                user,
                frozen,
                reason,
                request.note,
                request.approval_id,
                request.request_id,
                revoke_sessions=revoke,
            )
            return service.FreezeUserResponse(user=user_message(changed))

        return await idempotency.run_once(
            self.database, SERVICE + "FreezeUser", request, service.FreezeUserResponse, work
        )

    async def UnfreezeUser(self, request: service.UnfreezeUserRequest, context: Any) -> Any:
        """Lifts one freeze reason; FROZEN -> ACTIVE when it was the last."""
        _require_staff()
        reason = Reason(request.reason)

        async def work(session: AsyncSession) -> service.UnfreezeUserResponse:
            user = await self._user(session, request.user_id, lock=True)
            lifted = domain.unfreeze(user, reason)
            changed = await self._change_status(
                session, user, lifted, reason, request.note, request.approval_id, request.request_id
            )
            return service.UnfreezeUserResponse(user=user_message(changed))

        return await idempotency.run_once(
            self.database, SERVICE + "UnfreezeUser", request, service.UnfreezeUserResponse, work
        )

    async def CloseUser(self, request: service.CloseUserRequest, context: Any) -> Any:
        """ACTIVE or FROZEN -> CLOSED on the platform's initiative, once nothing is held."""
        _require_staff()
        self._require_approval(request.approval_id)
        reason = Reason(request.reason)
        return await self._close(
            SERVICE + "CloseUser",
            request,
            service.CloseUserResponse,
            request.user_id,
            reason,
            request.note,
            request.approval_id,
        )

    async def CloseMyAccount(self, request: service.CloseMyAccountRequest, context: Any) -> Any:
        """ACTIVE -> CLOSED at the user's request, with a step-up token (purpose ACCOUNT_CLOSE)."""
        me = _me()
        method = SERVICE + "CloseMyAccount"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.CloseMyAccountResponse)
            if replay is not None:
                return replay
            user = await self._user(session, me.subject)
        if user.status is not Status.ACTIVE:
            # A frozen user closes through support: the freeze must not be a way out of an inquiry.
            raise errors.InvalidState(
                f"a {user.status.name} account cannot be closed by its holder",
                metadata={"status": user.status.name},
            )
        await self.step_up.redeem(
            request.step_up_token, me, STEP_UP_ACCOUNT_CLOSE, f"user.close.{request.request_id}"[:128]
        )
        return await self._close(
            method,
            request,
            service.CloseMyAccountResponse,
            me.subject,
            Reason.USER_REQUEST,
            request.feedback,
            "",
            actor=(Actor.USER, me.subject),
        )

    async def _close(
        self,
        method: str,
        request: Any,
        response_type: type[Any],
        user_id: str,
        reason: Reason,
        note: str,
        approval_id: str,
        *,
        actor: tuple[Actor, str] | None = None,
    ) -> Any:
        async with self.database.transaction() as session:
            await self._user(session, user_id)
        # Asked before the transaction (a remote call must not hold the row lock); a balance that
        # arrives in between reaches an account the user can still reclaim through support.
        held = await self.holdings.held_assets(user_id)
        if held:
            raise errors.InvalidState(
                "the user still holds assets: withdraw or transfer them before closing",
                metadata={"held_assets": ",".join(held)[:256]},
            )

        async def work(session: AsyncSession) -> Any:
            user = await self._user(session, user_id, lock=True)
            closed = domain.close(user, reason, _now_us())
            changed = await self._change_status(
                session,
                user,
                closed,
                reason,
                note,
                approval_id,
                request.request_id,
                revoke_sessions=True,
                actor=actor,
            )
            return response_type(user=user_message(changed))

        return await idempotency.run_once(self.database, method, request, response_type, work)

    # Contact verification

    async def SendVerificationCode(self, request: service.SendVerificationCodeRequest, context: Any) -> Any:
        """A code to the channel's pending contact, else its current one; rate limited."""
        me = _me()
        channel = Channel(request.channel)
        method = SERVICE + "SendVerificationCode"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.SendVerificationCodeResponse)
            if replay is not None:
                return replay
            user = await self._user(session, me.subject)
        destination = _destination(user, channel)
        return await self._send_code(method, request, user, channel, destination)

    async def _send_code(
        self, method: str, request: Any, user: User, channel: Channel, destination: str
    ) -> Any:
        code = verification.new_code()
        now = _now_us()
        async with self.database.transaction() as session:
            previous = await verification.code_of(session, user.user_id, channel)
            record = verification.issue(previous, user.user_id, channel, destination, code, now)
            await verification.save(session, record, new=True)
        # Sent after the record commits, so a code that arrives is always one that verifies.
        await self.codes.send(
            f"user.verify.{request.request_id}"[:128], user.user_id, channel, destination, code
        )
        response = service.SendVerificationCodeResponse(
            masked_destination=_masked(channel, destination),
            expire_time=_timestamp(record.expire_time_us),
            next_send_time=_timestamp(now + verification.RESEND_INTERVAL_US),
        )
        async with self.database.transaction() as session:
            await idempotency.record(session, method, request, response)
        return response

    async def VerifyContact(self, request: service.VerifyContactRequest, context: Any) -> Any:
        """The code sent: verifies the contact, or makes the pending one the current one."""
        me = _me()
        channel = Channel(request.channel)
        method = SERVICE + "VerifyContact"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.VerifyContactResponse)
            if replay is not None:
                return replay
            record = await verification.code_of(session, me.subject, channel)
            right, kept = verification.check(record, me.subject, channel, request.code, _now_us())
            if kept is not None and kept != record:
                await verification.save(session, kept, new=False)
        if not right or record is None:
            raise errors.InvalidArgument(
                [
                    errors.FieldViolation(
                        "code", "the code is wrong, expired or used up: ask for a new one", "wrong"
                    )
                ]
            )

        async def work(session: AsyncSession) -> service.VerifyContactResponse:
            user = await self._user(session, me.subject, lock=True)
            verified, replaced = domain.verify_contact(user, channel, record.destination)
            verified = replace(verified, version=user.version + 1, update_time_us=_now_us())
            await store.update_user(session, verified)
            await events.publish_contact_verified(session, verified, channel, replaced, request.request_id)
            return service.VerifyContactResponse(user=user_message(verified))

        try:
            return await idempotency.run_once(
                self.database, method, request, service.VerifyContactResponse, work
            )
        except IntegrityError:
            raise self._taken(record.destination if channel is Channel.EMAIL else "") from None

    async def ChangeContact(self, request: service.ChangeContactRequest, context: Any) -> Any:
        """A new contact becomes pending (step-up CONTACT_CHANGE) and gets a code."""
        me = _me()
        method = SERVICE + "ChangeContact"
        channel = Channel.EMAIL if request.HasField("email") else Channel.PHONE
        value = (
            identifiers.normal_email(request.email)
            if channel is Channel.EMAIL
            else identifiers.normal_phone(request.phone)
        )
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.ChangeContactResponse)
            if replay is not None:
                return replay
            holder = await store.user_by_identifier(
                session, **({"email": value} if channel is Channel.EMAIL else {"phone": value})
            )
        if holder is not None:
            raise self._taken(value if channel is Channel.EMAIL else "")
        await self.step_up.redeem(
            request.step_up_token, me, STEP_UP_CONTACT_CHANGE, f"user.contact.{request.request_id}"[:128]
        )

        async def work(session: AsyncSession) -> service.ChangeContactResponse:
            user = await self._user(session, me.subject, lock=True)
            if user.status is Status.CLOSED:
                raise errors.InvalidState("the account is closed", metadata={"status": user.status.name})
            pending = replace(
                user,
                pending_email=value if channel is Channel.EMAIL else user.pending_email,
                pending_phone=value if channel is Channel.PHONE else user.pending_phone,
                version=user.version + 1,
                update_time_us=_now_us(),
            )
            await store.update_user(session, pending)
            await events.publish_contact_change_requested(session, pending, channel, request.request_id)
            return service.ChangeContactResponse(user=user_message(pending))

        response = await idempotency.run_once(
            self.database, method, request, service.ChangeContactResponse, work
        )
        user = await self._send_code_for_change(request, channel, value)
        return service.ChangeContactResponse(user=user_message(user)) if user is not None else response

    async def _send_code_for_change(self, request: Any, channel: Channel, value: str) -> User | None:
        me = _me()
        async with self.database.transaction() as session:
            user = await self._user(session, me.subject)
        try:
            await self._send_code(SERVICE + "ChangeContact.code", request, user, channel, value)
        except verification.RateLimited:
            return user  # the pending contact stays; SendVerificationCode sends once the limit allows
        return user


def _destination(user: User, channel: Channel) -> str:
    destination = (
        (user.pending_email or user.email) if channel is Channel.EMAIL else (user.pending_phone or user.phone)
    )
    if not destination:
        raise errors.InvalidState(
            f"the user has no {channel.name.lower()} to verify", metadata={"channel": channel.name}
        )
    return destination


def _masked(channel: Channel, destination: str) -> str:
    if channel is Channel.EMAIL:
        local, _, domain_part = destination.partition("@")
        return f"{local[:1]}***@{domain_part}"
    return destination[:3] + "*" * max(0, len(destination) - 5) + destination[-2:]
