"""Login identifiers in their one normal form, shared by every service that stores or compares
them (the user service registers them, the auth service counts failed logins per identifier).

An email address is NFC-normalised, trimmed and lower-cased, and must be a dot-atom address on a
domain of at least two labels: narrower than RFC 5322 (no quoted local parts, no IP literals),
which is what mail providers accept for accounts. Lower-casing the local part is what large
providers do in practice and makes `Anna@x.io` and `anna@x.io` one identifier, which matters more
for a custodian than the letter of RFC 5321. A phone number is E.164: `+`, country code and
subscriber number, separators removed, a leading `00` read as `+`.
"""

from __future__ import annotations

import re
import unicodedata

from svc.kit import errors

EMAIL_CHARS_MAX = 254
PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


def normal_email(text: str, field: str = "email") -> str:
    """An email address in normal form; INVALID_ARGUMENT naming `field` if malformed."""
    normal = unicodedata.normalize("NFC", text).strip().lower()
    if len(normal) > EMAIL_CHARS_MAX or not EMAIL.match(normal):
        raise errors.InvalidArgument([errors.FieldViolation(field, "not a valid email address", "format")])
    return normal


def normal_phone(text: str, field: str = "phone") -> str:
    """A phone number in E.164 form; INVALID_ARGUMENT naming `field` if malformed."""
    normal = re.sub(r"[\s().-]", "", text.strip())
    if normal.startswith("00"):
        normal = "+" + normal[2:]
    if not PHONE.match(normal):
        raise errors.InvalidArgument(
            [errors.FieldViolation(field, "not an E.164 phone number (+<country><number>)", "format")]
        )
    return normal
