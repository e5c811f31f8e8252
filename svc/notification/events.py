"""What the notification service consumes (the events users are told about) and publishes (what
became of each delivery), the latter through the outbox in the transaction of the change.

Each consumed event becomes one notice: who, which event key and category, the template
variables and the channels it goes to. Events of other kinds on the same topics are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from finmesh.events.v1 import (
    auth_events_pb2,
    deposit_events_pb2,
    event_meta_pb2,
    kyc_events_pb2,
    user_events_pb2,
    withdraw_events_pb2,
)
from finmesh.user.v1 import user_service_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event
from svc.notification.domain import Category, Channel

PRODUCER = "notification"
CONSUMER = "notification-events"
TOPICS = (
    "finmesh.user.v1.users",
    "finmesh.auth.v1.sessions",
    "finmesh.deposit.v1.deposits",
    "finmesh.withdraw.v1.withdrawals",
    "finmesh.kyc.v1.submissions",
)
EVERYWHERE = (Channel.EMAIL, Channel.IN_APP, Channel.PUSH)
KYC_LEVEL_NAMES = {1: "L0", 2: "L1", 3: "L2", 4: "L3"}


@dataclass(frozen=True)
class Notice:
    """One thing to tell one user."""

    user_id: str
    event_key: str
    category: Category
    channels: tuple[Channel, ...]
    variables: dict[str, str] = field(default_factory=dict)
    language: str = ""


def _registered(event: user_events_pb2.UserRegistered) -> Notice:
    return Notice(
        event.user_id,
        "user.registered",
        Category.ACCOUNT,
        (Channel.EMAIL, Channel.IN_APP),
        {},
        event.language,
    )


def _contact_change(event: user_events_pb2.UserContactChangeRequested) -> Notice:
    """Told to the contacts the user has now: the new one is pending until verified, so a
    takeover that changes the email address is seen by its owner."""
    channel = "phone number" if event.channel == user_service_pb2.CONTACT_CHANNEL_PHONE else "email address"
    return Notice(
        event.user_id,
        "user.contact_change_requested",
        Category.SECURITY,
        (Channel.EMAIL, Channel.SMS, Channel.IN_APP),
        {"channel": channel},
    )


def _login(event: auth_events_pb2.LoginSucceeded) -> Notice | None:
    if not event.new_device_or_ip:
        return None
    variables = {
        "ip": event.ip,
        "location": event.approximate_location or "unknown location",
        "device": event.device.device_name or "unknown device",
    }
    return Notice(event.user_id, "auth.new_login", Category.SECURITY, EVERYWHERE, variables)


def _deposit(event: deposit_events_pb2.DepositCredited) -> Notice:
    deposit = event.deposit
    variables = {
        "deposit_id": deposit.deposit_id,
        "amount": deposit.amount.amount,
        "asset": deposit.amount.asset,
        "tx_hash": deposit.tx_hash,
    }
    return Notice(deposit.user_id, "deposit.credited", Category.TRANSACTIONS, EVERYWHERE, variables)


def _withdrawal(event_key: str) -> Callable[[Message], Notice]:
    def notice(event: Message) -> Notice:
        withdrawal = event.withdrawal  # type: ignore[attr-defined]
        variables = {
            "withdrawal_id": withdrawal.withdrawal_id,
            "amount": withdrawal.amount.amount,
            "asset": withdrawal.amount.asset,
            "destination": withdrawal.destination.address,
            "tx_hash": withdrawal.tx_hash,
        }
        return Notice(withdrawal.user_id, event_key, Category.TRANSACTIONS, EVERYWHERE, variables)

    return notice


def _kyc_approved(event: kyc_events_pb2.KycSubmissionApproved) -> Notice:
    variables = {"level": KYC_LEVEL_NAMES.get(int(event.approved_level), "")}
    return Notice(
        event.user_id, "kyc.approved", Category.VERIFICATION, (Channel.EMAIL, Channel.IN_APP), variables
    )


def _kyc_rejected(event: kyc_events_pb2.KycSubmissionRejected) -> Notice:
    return Notice(event.user_id, "kyc.rejected", Category.VERIFICATION, (Channel.EMAIL, Channel.IN_APP))


def _kyc_information(event: kyc_events_pb2.KycInformationRequested) -> Notice:
    return Notice(
        event.user_id, "kyc.information_requested", Category.VERIFICATION, (Channel.EMAIL, Channel.IN_APP)
    )


NOTICES: dict[str, Callable[[Message], Notice | None]] = {
    user_events_pb2.UserRegistered.DESCRIPTOR.full_name: _registered,  # type: ignore[dict-item]
    user_events_pb2.UserContactChangeRequested.DESCRIPTOR.full_name: _contact_change,  # type: ignore[dict-item]
    auth_events_pb2.LoginSucceeded.DESCRIPTOR.full_name: _login,  # type: ignore[dict-item]
    deposit_events_pb2.DepositCredited.DESCRIPTOR.full_name: _deposit,  # type: ignore[dict-item]
    withdraw_events_pb2.WithdrawalRequested.DESCRIPTOR.full_name: _withdrawal("withdrawal.requested"),
    withdraw_events_pb2.WithdrawalConfirmed.DESCRIPTOR.full_name: _withdrawal("withdrawal.confirmed"),
    withdraw_events_pb2.WithdrawalRejected.DESCRIPTOR.full_name: _withdrawal("withdrawal.rejected"),
    withdraw_events_pb2.WithdrawalCancelled.DESCRIPTOR.full_name: _withdrawal("withdrawal.cancelled"),
    withdraw_events_pb2.WithdrawalFailed.DESCRIPTOR.full_name: _withdrawal("withdrawal.failed"),
    kyc_events_pb2.KycSubmissionApproved.DESCRIPTOR.full_name: _kyc_approved,  # type: ignore[dict-item]
    kyc_events_pb2.KycSubmissionRejected.DESCRIPTOR.full_name: _kyc_rejected,  # type: ignore[dict-item]
    kyc_events_pb2.KycInformationRequested.DESCRIPTOR.full_name: _kyc_information,  # type: ignore[dict-item]
}


def notice_of(event: Message) -> Notice | None:
    """The notice an event gives, or None for an event users are not told about."""
    make = NOTICES.get(event.DESCRIPTOR.full_name)
    return make(event) if make is not None else None


# -- published ---------------------------------------------------------------------------------


def _meta(aggregate_type: str, aggregate_id: str, version: int) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, aggregate_version=version
    )


async def publish(session: AsyncSession, event: Message) -> None:
    await add_event(session, event, producer=PRODUCER)


def delivery_meta(delivery_id: str, version: int) -> event_meta_pb2.EventMeta:
    return _meta("notification_delivery", delivery_id, version)


def inbox_meta(inbox_message_id: str) -> event_meta_pb2.EventMeta:
    return _meta("inbox_message", inbox_message_id, 1)


def template_meta(template_id: str, version: int) -> event_meta_pb2.EventMeta:
    return _meta("notification_template", template_id, version)
