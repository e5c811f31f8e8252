"""Provider adapters: email over SMTP, and SMS and push through an HTTP provider API.

Every adapter hands one rendered message to its provider and returns the provider's message id,
or raises DeliveryFailure saying whether the failure is permanent (the provider refused the
message or the destination: no retry) or temporary (the provider could not take it now: retry).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

import httpx

DETAIL_CHARS_MAX = 1000
SMTP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
# 408 (timeout) and 429 (rate limited) are the provider's "not now"; other 4xx are "never".
TEMPORARY_HTTP_STATUSES = frozenset({408, 425, 429})


class DeliveryFailure(Exception):
    """A provider did not take a message."""

    def __init__(self, detail: str, *, permanent: bool) -> None:
        super().__init__(detail)
        self.detail = detail[:DETAIL_CHARS_MAX]
        self.permanent = permanent


@dataclass(frozen=True)
class Rendered:
    """One message ready for its channel."""

    delivery_id: str
    destination: str
    subject: str
    body: str
    html_body: str = ""
    action_link: str = ""


class Provider(Protocol):
    """A channel's provider adapter."""

    name: str

    async def send(self, message: Rendered) -> str:
        """Hands the message over; the provider's id of it, or DeliveryFailure."""
        ...


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str = ""
    password: str = ""
    message_id_domain: str = "notification.finmesh.local"


class SmtpProvider:
    """Email through an SMTP relay. The Message-ID derives from the delivery id, so a message
    the relay saw twice (a retry after a lost reply) is recognisable as one message."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: Rendered) -> str:
        return await asyncio.to_thread(self._send, message)

    def _email(self, message: Rendered) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.settings.sender
        email["To"] = message.destination
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = f"<{message.delivery_id}@{self.settings.message_id_domain}>"
        email.set_content(message.body)
        if message.html_body:
            email.add_alternative(message.html_body, subtype="html")
        return email

    def _send(self, message: Rendered) -> str:
        email = self._email(message)
        try:
            with smtplib.SMTP(self.settings.host, self.settings.port, timeout=SMTP_TIMEOUT_S) as client:
                if self.settings.starttls:
                    client.starttls(context=ssl.create_default_context())
                if self.settings.username:
                    client.login(self.settings.username, self.settings.password)
                client.send_message(email)
        except smtplib.SMTPRecipientsRefused as error:
            replies = list(error.recipients.values())
            code, reply = replies[0] if replies else (550, b"recipient refused")
            raise DeliveryFailure(
                f"SMTP {code} {reply.decode(errors='replace')}", permanent=code >= 500
            ) from None
        except smtplib.SMTPResponseException as error:
            answer = error.smtp_error
            text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
            detail = f"SMTP {error.smtp_code} {text}"
            raise DeliveryFailure(detail, permanent=error.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryFailure(f"SMTP relay unreachable: {error!r}", permanent=False) from None
        return str(email["Message-ID"])


class HttpProvider:
    """SMS or push through a provider's HTTP API: one JSON POST per message, bearer-authenticated.

    The body is {"id", "to", "title", "body", "link"}; a 2xx answer with a JSON `id` (or none) is
    acceptance. The delivery id goes as the Idempotency-Key header, so a provider that honours it
    never sends a retried message twice.
    """

    def __init__(self, name: str, url: str, token: str = "") -> None:
        self.name = name
        self.url = url
        self.token = token

    async def send(self, message: Rendered) -> str:
        headers = {"Idempotency-Key": message.delivery_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = {
            "id": message.delivery_id,
            "to": message.destination,
            "title": message.subject,
            "body": message.body,
            "link": message.action_link,
        }
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                response = await client.post(self.url, json=payload, headers=headers)
        except httpx.HTTPError as error:
            raise DeliveryFailure(f"{self.name} provider unreachable: {error!r}", permanent=False) from None
        if response.is_success:
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            return (
                str(answer.get("id") or message.delivery_id)
                if isinstance(answer, dict)
                else message.delivery_id
            )
        detail = f"HTTP {response.status_code} {response.text[:200]}"
        temporary = response.status_code >= 500 or response.status_code in TEMPORARY_HTTP_STATUSES
        raise DeliveryFailure(detail, permanent=not temporary)
