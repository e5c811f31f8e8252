"""The notification service's settings: the kit's, plus the SMTP relay, the SMS and push provider
APIs, the data key and the retry policy."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from svc.kit.config import KitSettings


class NotificationSettings(KitSettings):
    """Settings of the notification service (FINMESH_* variables)."""

    # The SMTP relay; an empty host leaves the email channel out of this deployment.
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_sender: str = "finmesh <no-reply@finmesh.local>"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    # Provider APIs for SMS and push (see channels.HttpProvider); empty leaves the channel out.
    sms_provider_url: str = ""
    sms_provider_token: str = ""
    push_provider_url: str = ""
    push_provider_token: str = ""
    # Base64 AES-256 keys sealing template variables and push tokens, the first seals new data;
    # empty means one key in <data_dir>/notification-data.key, created on first start.
    data_keys: tuple[str, ...] = ()
    # Retries: 30 s doubling with jitter up to an hour, at most 8 attempts (the contract's policy).
    retry_backoff_ms: int = Field(default=30_000, gt=0)
    retry_backoff_max_ms: int = Field(default=3_600_000, gt=0)
    retry_attempts_max: int = Field(default=8, ge=1, le=100)
    worker_poll_interval_ms: int = Field(default=200, gt=0, le=60_000)
    # Consumer retries of the event handler before the event is parked in <topic>.dlq.
    consumer_attempts_max: int = Field(default=5, ge=1, le=100)

    @property
    def data_key_path(self) -> Path:
        return self.data_dir / "notification-data.key"
