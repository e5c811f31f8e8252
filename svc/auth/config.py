"""The auth service's settings: the kit's, plus keys, stores, hashing cost and bootstrap admins."""

from __future__ import annotations

from pydantic import Field

from svc.kit.config import KitSettings


class AuthSettings(KitSettings):
    """Settings of the auth service (FINMESH_* variables)."""

    # Redis holding the nonces of signed partner requests, for example redis://127.0.0.1:6379/0;
    # empty keeps them in this process's memory (one replica only).
    redis_url: str = ""
    # Base64 256-bit keys sealing signing keys, TOTP seeds and API-key secrets at rest (the first
    # seals; the others still open older blobs). Empty: a key file under data_dir, created on
    # first start (`auth-master.key`). In production a KMS-backed provider replaces both.
    master_keys: list[str] = Field(default_factory=list)
    # JOSE algorithm of the first signing key and of rotations that name none.
    signing_algorithm: str = Field(default="ES256", pattern="^(ES256|EdDSA)$")
    # argon2id cost; the defaults are RFC 9106's second recommendation. Tests lower the memory.
    argon2_time_cost: int = Field(default=3, ge=1, le=10)
    argon2_memory_kib: int = Field(default=65_536, ge=8, le=1_048_576)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)
    # Users holding ROLE_ADMIN without an assignment: the first admins, who can then grant
    # roles through maker-checker. JSON list of user ids.
    bootstrap_admin_user_ids: list[str] = Field(default_factory=list)
