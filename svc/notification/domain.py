"""The notification service's rules: channels and categories, preferences and the pairs that cannot
be switched off, the delivery state machine with its retry backoff, template rendering and the
language fallback, masking of destinations. Pure: no I/O.
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from svc.kit import errors


class Channel(IntEnum):
    EMAIL = 1
    SMS = 2
    PUSH = 3
    IN_APP = 4


class Category(IntEnum):
    SECURITY = 1
    ACCOUNT = 2
    TRANSACTIONS = 3
    VERIFICATION = 4
    PRODUCTS = 5
    MARKETING = 6


class DeliveryState(IntEnum):
    """finmesh.notification.v1.DeliveryState; transitions in DELIVERY_TRANSITIONS."""

    PENDING = 1
    SENDING = 2
    RETRY_SCHEDULED = 3
    SENT = 4
    DELIVERED = 5
    BOUNCED = 6
    SUPPRESSED = 7
    DEAD_LETTERED = 8
    DISCARDED = 9


DELIVERY_TRANSITIONS = frozenset(
    {
        (DeliveryState.PENDING, DeliveryState.SENDING),
        (DeliveryState.PENDING, DeliveryState.SUPPRESSED),
        (DeliveryState.RETRY_SCHEDULED, DeliveryState.SENDING),
        (DeliveryState.SENDING, DeliveryState.SENT),
        (DeliveryState.SENDING, DeliveryState.RETRY_SCHEDULED),
        (DeliveryState.SENDING, DeliveryState.DEAD_LETTERED),
        (DeliveryState.SENDING, DeliveryState.SUPPRESSED),
        (DeliveryState.SENT, DeliveryState.DELIVERED),
        (DeliveryState.SENT, DeliveryState.BOUNCED),
        (DeliveryState.DEAD_LETTERED, DeliveryState.PENDING),
        (DeliveryState.DEAD_LETTERED, DeliveryState.DISCARDED),
    }
)


def require_transition(current: DeliveryState, target: DeliveryState, delivery_id: str) -> None:
    if (current, target) not in DELIVERY_TRANSITIONS:
        raise errors.InvalidState(
            f"delivery {delivery_id} is {current.name}, cannot become {target.name}",
            metadata={"delivery_id": delivery_id, "state": current.name, "target": target.name},
        )


class Suppression(IntEnum):
    PREFERENCE = 1
    NO_CONTACT = 2
    NO_DEVICE = 3
    NO_TEMPLATE = 4
    USER_CLOSED = 5
    DESTINATION_BLOCKED = 6


class TemplateState(IntEnum):
    """DRAFT -> ACTIVE (publish; the previous ACTIVE one -> ARCHIVED), DRAFT|ACTIVE -> ARCHIVED."""

    DRAFT = 1
    ACTIVE = 2
    ARCHIVED = 3


TEMPLATE_TRANSITIONS = frozenset(
    {
        (TemplateState.DRAFT, TemplateState.ACTIVE),
        (TemplateState.DRAFT, TemplateState.ARCHIVED),
        (TemplateState.ACTIVE, TemplateState.ARCHIVED),
    }
)


def require_template_transition(current: TemplateState, target: TemplateState, template_id: str) -> None:
    if (current, target) not in TEMPLATE_TRANSITIONS:
        raise errors.InvalidState(
            f"template {template_id} is {current.name}, cannot become {target.name}",
            metadata={"template_id": template_id, "state": current.name},
        )


# -- preferences -------------------------------------------------------------------------------

# Security notices by email and in the inbox reach every user: an attacker who took over an
# account must not be able to silence the warning about it.
MANDATORY = frozenset({(Category.SECURITY, Channel.EMAIL), (Category.SECURITY, Channel.IN_APP)})


def default_enabled(category: Category, channel: Channel) -> bool:
    """Marketing is off until the user consents; SMS (paid per message) carries security only."""
    if category is Category.MARKETING:
        return False
    if channel is Channel.SMS:
        return category is Category.SECURITY
    return True


def enabled(settings: Mapping[tuple[int, int], bool], category: Category, channel: Channel) -> bool:
    """Whether a category goes to a channel under the user's settings (mandatory pairs always)."""
    if (category, channel) in MANDATORY:
        return True
    return settings.get((int(category), int(channel)), default_enabled(category, channel))


# -- retries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff from `base_ms` doubling per attempt up to `max_ms`, with jitter; at most `attempts_max`."""

    base_ms: int = 30_000
    max_ms: int = 3_600_000
    attempts_max: int = 8

    def backoff_ms(self, attempt: int, rng: random.Random | None = None) -> int:
        """The wait after failed attempt number `attempt` (from 1): between half and all of the
        doubled base, so that deliveries failing together do not retry together."""
        ceiling = min(self.max_ms, self.base_ms << min(attempt - 1, 30))
        return int(ceiling * (0.5 + 0.5 * (rng or random).random()))


# -- templates ---------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{\{\s*([a-z][a-z0-9_]{0,63})\s*\}\}")


def variables_of(*texts: str) -> list[str]:
    """The placeholders the texts use, sorted."""
    return sorted({name for text in texts for name in PLACEHOLDER.findall(text)})


class MissingVariables(errors.DomainError):
    """A template uses variables the notification does not give."""

    reason = "TEMPLATE_VARIABLES_MISSING"


def render(text: str, variables: Mapping[str, str], *, escape: bool = False) -> str:
    """`{{name}}` replaced by its value (HTML-escaped when `escape`); MissingVariables otherwise."""
    missing = [name for name in variables_of(text) if name not in variables]
    if missing:
        raise MissingVariables(
            "the template needs " + ", ".join(missing), metadata={"missing_variables": ",".join(missing)}
        )

    def value(match: re.Match[str]) -> str:
        found = variables[match.group(1)]
        return html.escape(found) if escape else found

    return PLACEHOLDER.sub(value, text)


def languages(preferred: str) -> list[str]:
    """The languages to try, in order: the tag, its base language, then `en`."""
    tried: list[str] = []
    for candidate in (preferred, preferred.split("-")[0], "en"):
        if candidate and candidate not in tried:
            tried.append(candidate)
    return tried


# -- destinations ------------------------------------------------------------------------------


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    return number[:3] + "*" * max(0, len(number) - 5) + number[-2:]


def mask(channel: Channel, destination: str) -> str:
    if channel is Channel.EMAIL:
        return mask_email(destination)
    if channel is Channel.SMS:
        return mask_phone(destination)
    return destination


def unique(items: Iterable[Channel]) -> list[Channel]:
    return list(dict.fromkeys(items))
