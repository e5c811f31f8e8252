"""The in-app inbox (read/unread, pages), preferences and languages, templates from draft to
published, and the refusals of the sending and admin methods, through the contract."""

from __future__ import annotations

import uuid

import grpc
from finmesh.events.v1 import deposit_events_pb2, notification_events_pb2
from finmesh.notification.v1 import notification_resources_pb2 as resources
from finmesh.notification.v1 import notification_service_pb2 as service
from google.protobuf import field_mask_pb2

from tests.harness.calls import eventually, refused
from tests.notification.conftest import Mesh

EMAIL, SMS, PUSH, IN_APP = 1, 2, 3, 4
SECURITY, TRANSACTIONS = 1, 3
SENT, SUPPRESSED = 4, 7
PREFERENCE = 1


def rid(stem: str = "req") -> str:
    return f"{stem}-{uuid.uuid4().hex}"


def send(user_id: str, **fields: object) -> service.SendNotificationRequest:
    values: dict[str, object] = {
        "request_id": rid("send"),
        "user_id": user_id,
        "event_key": "deposit.credited",
        "category": TRANSACTIONS,
        "variables": {"amount": "5", "asset": "ethereum:ETH", "tx_hash": "0xabc", "deposit_id": "d-1"},
        "channels": [IN_APP],
    }
    values.update(fields)
    return service.SendNotificationRequest(**values)  # type: ignore[arg-type]


async def test_inbox_pages_and_read_state(mesh: Mesh) -> None:
    user = await mesh.identity.register(email=f"i{uuid.uuid4().hex[:8]}@example.com")
    me = await mesh.user_token(user.email)
    for amount in ("1", "2", "3"):
        variables = {"amount": amount, "asset": "ethereum:ETH", "tx_hash": "0xabc", "deposit_id": "d"}
        await mesh.stub.SendNotification(send(user.user_id, variables=variables))

    async def three() -> bool:
        # The welcome and the sign-in notice arrive in the background too; counts below need all.
        listed = await mesh.stub.ListInboxMessages(service.ListInboxMessagesRequest(), metadata=me)
        keys = [m.event_key for m in listed.inbox_messages]
        return sorted(keys) == ["auth.new_login", *["deposit.credited"] * 3, "user.registered"]

    await eventually(three)
    first = await mesh.stub.ListInboxMessages(
        service.ListInboxMessagesRequest(category=TRANSACTIONS, page_size=2), metadata=me
    )
    assert len(first.inbox_messages) == 2 and first.next_page_token
    rest = await mesh.stub.ListInboxMessages(
        service.ListInboxMessagesRequest(
            category=TRANSACTIONS, page_size=2, page_token=first.next_page_token
        ),
        metadata=me,
    )
    assert len(rest.inbox_messages) == 1 and not rest.next_page_token
    newest_first = [m.body.split()[0] for m in (*first.inbox_messages, *rest.inbox_messages)]
    assert newest_first == ["3", "2", "1"]
    assert first.inbox_messages[0].title == "Deposit credited"
    assert first.inbox_messages[0].action_link == "finmesh://deposits/d"
    summary = await mesh.stub.GetInboxSummary(service.GetInboxSummaryRequest(), metadata=me)
    by_category = {c.category: c.unread_count for c in summary.by_category}
    assert by_category == {SECURITY: 1, 2: 1, TRANSACTIONS: 3} and summary.unread_count == 5

    mark = service.MarkInboxMessagesReadRequest(
        request_id=rid("read"),
        ids=service.MessageIds(inbox_message_ids=[first.inbox_messages[0].inbox_message_id]),
    )
    marked = await mesh.stub.MarkInboxMessagesRead(mark, metadata=me)
    assert marked.marked_count == 1 and marked.unread_count == summary.unread_count - 1
    assert await mesh.stub.MarkInboxMessagesRead(mark, metadata=me) == marked  # idempotent retry
    unread = await mesh.stub.ListInboxMessages(
        service.ListInboxMessagesRequest(category=TRANSACTIONS, unread_only=True), metadata=me
    )
    assert [m.body.split()[0] for m in unread.inbox_messages] == ["2", "1"]
    everything = await mesh.stub.MarkInboxMessagesRead(
        service.MarkInboxMessagesReadRequest(request_id=rid("read"), up_to_time=summary.latest_create_time),
        metadata=me,
    )
    assert everything.unread_count == 0
    read = await mesh.stub.ListInboxMessages(
        service.ListInboxMessagesRequest(category=TRANSACTIONS), metadata=me
    )
    assert all(m.read and m.HasField("read_time") for m in read.inbox_messages)

    # Another user sees none of it; a forged page token is refused.
    other = await mesh.identity.register(email=f"o{uuid.uuid4().hex[:8]}@example.com")
    theirs = await mesh.stub.ListInboxMessages(
        service.ListInboxMessagesRequest(category=TRANSACTIONS), metadata=await mesh.user_token(other.email)
    )
    assert not theirs.inbox_messages
    await refused(
        mesh.stub.ListInboxMessages(
            service.ListInboxMessagesRequest(page_token="bm90LWEtdG9rZW4="), metadata=me
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        mesh.stub.ListInboxMessages(service.ListInboxMessagesRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_preferences_language_and_templates(mesh: Mesh) -> None:
    user = await mesh.identity.register(email=f"p{uuid.uuid4().hex[:8]}@example.com")
    me = await mesh.user_token(user.email)
    defaults = await mesh.stub.GetNotificationPreferences(
        service.GetNotificationPreferencesRequest(), metadata=me
    )
    pairs = {(s.category, s.channel): s for s in defaults.preferences.settings}
    assert len(pairs) == 24 and pairs[(SECURITY, EMAIL)].mandatory and not pairs[(6, EMAIL)].enabled
    await refused(
        mesh.stub.UpdateNotificationPreferences(
            service.UpdateNotificationPreferencesRequest(
                request_id=rid("prefs"),
                preferences=resources.NotificationPreferences(
                    settings=[resources.PreferenceSetting(category=SECURITY, channel=EMAIL, enabled=False)]
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["settings"]),
            ),
            metadata=me,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    updated = await mesh.stub.UpdateNotificationPreferences(
        service.UpdateNotificationPreferencesRequest(
            request_id=rid("prefs"),
            preferences=resources.NotificationPreferences(
                language="de-CH",
                settings=[resources.PreferenceSetting(category=TRANSACTIONS, channel=EMAIL, enabled=False)],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["language", "settings"]),
        ),
        metadata=me,
    )
    assert updated.preferences.language == "de-CH"
    assert not {(s.category, s.channel): s.enabled for s in updated.preferences.settings}[
        (TRANSACTIONS, EMAIL)
    ]

    credited = deposit_events_pb2.DepositCredited()
    credited.meta.event_id = str(uuid.uuid4())
    credited.meta.aggregate_id = "deposit-1"
    credited.deposit.deposit_id = "deposit-1"
    credited.deposit.user_id = user.user_id
    credited.deposit.amount.asset = "ethereum:ETH"
    credited.deposit.amount.amount = "1000"
    credited.deposit.tx_hash = "0xfeed"
    await mesh.publish(credited)

    async def settled() -> bool:
        found = await mesh.deliveries(source_event_id=credited.meta.event_id)
        return len(found) == 3 and all(d.state in (SENT, SUPPRESSED) for d in found)

    await eventually(settled)
    by_channel = {d.channel: d for d in await mesh.deliveries(source_event_id=credited.meta.event_id)}
    assert by_channel[EMAIL].state == SUPPRESSED and by_channel[EMAIL].suppression_reason == PREFERENCE
    assert by_channel[IN_APP].state == SENT and by_channel[IN_APP].language == "de"  # de-CH falls back to de
    suppressed = await mesh.events(notification_events_pb2.NotificationDeliverySuppressed)
    assert by_channel[EMAIL].delivery_id in {e.delivery_id for e in suppressed}
    inbox = await mesh.stub.ListInboxMessages(
        service.ListInboxMessagesRequest(category=TRANSACTIONS), metadata=me
    )
    assert [m.title for m in inbox.inbox_messages] == ["Einzahlung gutgeschrieben"]

    # An operator writes a new German inbox text: a draft, then published over the built-in one.
    draft = await mesh.stub.CreateTemplate(
        service.CreateTemplateRequest(
            request_id=rid("tpl"),
            template=resources.Template(
                event_key="deposit.credited",
                channel=IN_APP,
                language="de",
                category=TRANSACTIONS,
                subject="Geld ist da",
                body="{{amount}} {{asset}} sind angekommen.",
            ),
        ),
        metadata=mesh.admin,
    )
    assert draft.template.state == 1 and draft.template.version == 2
    assert list(draft.template.variables) == ["amount", "asset"]
    preview = await mesh.stub.RenderTemplate(
        service.RenderTemplateRequest(template_id=draft.template.template_id, variables={"amount": "<7>"}),
        metadata=mesh.admin,
    )
    assert preview.body == "<7> {{asset}} sind angekommen." and list(preview.missing_variables) == ["asset"]
    await refused(
        mesh.stub.UpdateTemplate(
            service.UpdateTemplateRequest(
                request_id=rid("tpl"),
                template=resources.Template(template_id=draft.template.template_id, html_body="<p>x</p>"),
                update_mask=field_mask_pb2.FieldMask(paths=["html_body"]),
            ),
            metadata=mesh.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    published = await mesh.stub.PublishTemplate(
        service.PublishTemplateRequest(request_id=rid("pub"), template_id=draft.template.template_id),
        metadata=mesh.admin,
    )
    assert published.template.state == 2 and published.archived_template.state == 3
    assert published.archived_template.version == 1
    await refused(
        mesh.stub.UpdateTemplate(
            service.UpdateTemplateRequest(
                request_id=rid("tpl"),
                template=resources.Template(template_id=draft.template.template_id, body="changed"),
                update_mask=field_mask_pb2.FieldMask(paths=["body"]),
            ),
            metadata=mesh.admin,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    await mesh.stub.SendNotification(send(user.user_id))

    async def new_text() -> bool:
        listed = await mesh.stub.ListInboxMessages(
            service.ListInboxMessagesRequest(category=TRANSACTIONS), metadata=me
        )
        return [m.title for m in listed.inbox_messages][:1] == ["Geld ist da"]

    await eventually(new_text)
    active = await mesh.stub.ListTemplates(
        service.ListTemplatesRequest(event_key="deposit.credited", channel=IN_APP, states=[2]),
        metadata=mesh.admin,
    )
    assert sorted(t.language for t in active.templates) == ["de", "en"]


async def test_sending_and_admin_refusals(mesh: Mesh) -> None:
    user = await mesh.identity.register(email=f"r{uuid.uuid4().hex[:8]}@example.com")
    me = await mesh.user_token(user.email)
    await refused(
        mesh.stub.SendNotification(send(user.user_id), metadata=me),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    await refused(
        mesh.stub.SendNotification(send(user.user_id, destination_override="x@example.com")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        mesh.stub.SendNotification(send("not-a-uuid")), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    await refused(
        mesh.stub.SendNotification(send(user.user_id, sensitive_variables=["code"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    once = send(user.user_id, request_id="send-once-0001")
    first = await mesh.stub.SendNotification(once)
    assert await mesh.stub.SendNotification(once) == first
    await refused(
        mesh.stub.SendNotification(send(user.user_id, request_id="send-once-0001", event_key="kyc.approved")),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert len(await mesh.deliveries(user_id=user.user_id, event_key="deposit.credited")) == 1
    await refused(
        mesh.stub.GetDelivery(
            service.GetDeliveryRequest(delivery_id=first.deliveries[0].delivery_id), metadata=me
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    await refused(
        mesh.stub.GetDelivery(service.GetDeliveryRequest(delivery_id=str(uuid.uuid4())), metadata=mesh.admin),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    await refused(
        mesh.stub.DeletePushDevice(
            service.DeletePushDeviceRequest(request_id=rid("del"), push_device_id=str(uuid.uuid4())),
            metadata=me,
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    device = await mesh.stub.RegisterPushDevice(
        service.RegisterPushDeviceRequest(
            request_id=rid("dev"), platform=2, push_token="fcm-token-0123456789"
        ),
        metadata=me,
    )
    assert device.push_device.token_suffix == "23456789"
    again = await mesh.stub.RegisterPushDevice(
        service.RegisterPushDeviceRequest(
            request_id=rid("dev"), platform=2, push_token="fcm-token-0123456789"
        ),
        metadata=me,
    )
    assert again.push_device.push_device_id == device.push_device.push_device_id  # the same token, one device
    listed = await mesh.stub.ListPushDevices(service.ListPushDevicesRequest(), metadata=me)
    assert [d.push_device_id for d in listed.push_devices] == [device.push_device.push_device_id]
