"""A real SMTP server for tests (aiosmtpd) on a free loopback port, in its own thread: it keeps
every message it accepts, and can be told to answer the next messages with a temporary (4xx) or
permanent (5xx) refusal to exercise retries and dead letters."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from .process import free_port

WAIT_S = 10.0


@dataclass
class Received:
    """One accepted message: its envelope and the parsed message."""

    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    refusals: dict[str, list[str]] = field(default_factory=dict)
    refused_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for recipient in envelope.rcpt_tos:
                pending = self.refusals.get(recipient)
                if pending:
                    self.refused_total += 1
                    return pending.pop(0)
            parsed = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK message accepted"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1; `start()`, `stop()`, and what it received."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._handler = _Handler()
        self._controller = Controller(self._handler, hostname=self.host, port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        with self._handler.lock:
            return list(self._handler.received)

    @property
    def refused_total(self) -> int:
        return self._handler.refused_total

    def refuse_next(
        self, recipient: str, count: int, reply: str = "451 4.3.0 mailbox temporarily unavailable"
    ) -> None:
        """Answers the next `count` messages to `recipient` with `reply` instead of accepting them."""
        with self._handler.lock:
            self._handler.refusals.setdefault(recipient, []).extend([reply] * count)

    async def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[Received]:
        """Waits until at least `count` messages arrived; returns them."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.received)} of {count} messages arrived in {timeout_s} s")
            await asyncio.sleep(0.02)
        return self.received
