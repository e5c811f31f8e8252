"""Password hashing with argon2id (RFC 9106), and the checks a new password must pass.

Verification of an unknown identifier runs against a dummy hash made with the same parameters,
so that a login with an unknown identifier costs the same time as one with a wrong password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from svc.kit import errors

# Passwords of at least 12 characters that appear at the top of public breach corpora. The
# check is a floor against the passwords attackers try first, not a full breach database.
BREACHED_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678910111213",
        "password1234",
        "password12345",
        "passwordpassword",
        "qwertyuiop123",
        "qwerty123456",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "iloveyou1234",
        "abcdefghijkl",
        "aaaaaaaaaaaa",
        "111111111111",
        "000000000000",
        "letmein12345",
        "welcome12345",
        "administrator",
        "adminadmin123",
        "changeme1234",
        "football1234",
        "baseball1234",
        "monkey123456",
        "sunshine1234",
        "princess1234",
        "trustno1trustno1",
    }
)


@dataclass(frozen=True)
class Argon2Parameters:
    """Cost parameters; the defaults are RFC 9106's second recommended option (64 MiB, t=3)."""

    time_cost: int = 3
    memory_kib: int = 65_536
    parallelism: int = 4


class Passwords:
    """Hashes and verifies passwords with argon2id."""

    def __init__(self, parameters: Argon2Parameters) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        """The argon2id hash (PHC string, salt included) of an acceptable password."""
        check_acceptable(password)
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; against the dummy hash (always False) when None."""
        try:
            matched = self._hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matched and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """Whether a stored hash was made with other parameters than today's."""
        return self._hasher.check_needs_rehash(stored)


def check_acceptable(password: str, field: str = "password") -> None:
    """Refuses passwords from the breached list and passwords of one repeated character."""
    if password.lower() in BREACHED_PASSWORDS or len(set(password)) < 4:
        raise errors.InvalidArgument(
            [errors.FieldViolation(field, "this password is too common or appears in breaches", "breached")]
        )
