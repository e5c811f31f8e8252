"""A local certificate authority and per-service certificates for mTLS without a mesh.

In Kubernetes, Istio issues the workload certificates; run locally, the kit creates a CA on
first use under the PKI directory and one certificate per identity, naming it as a SPIFFE URI
(spiffe://finmesh.local/svc/<name>) so that the same identity rules apply in both places.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from svc.kit.identity import spiffe_id

CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 365
CA_NAME = "finmesh local CA"


@dataclass(frozen=True)
class Credentials:
    """PEM material of one identity, plus the CA that signed it."""

    identity: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    def server(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate from the same CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def channel(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    temporary.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LocalCA:
    """The CA under `pki_dir`, created on first use; issues and caches leaf certificates."""

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        self._ca_key_path = pki_dir / "ca.key"
        self._ca_cert_path = pki_dir / "ca.crt"

    def ensure(self) -> None:
        if self._ca_cert_path.exists() and self._ca_key_path.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(self._ca_key_path, _key_pem(key))
        self._ca_cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def credentials(self, identity: str) -> Credentials:
        """The certificate of `identity`, issued on first request and reused afterwards."""
        self.ensure()
        key_path = self.pki_dir / f"{identity}.key"
        cert_path = self.pki_dir / f"{identity}.crt"
        if not (key_path.exists() and cert_path.exists()):
            self._issue(identity, key_path, cert_path)
        return Credentials(
            identity=identity,
            key_pem=key_path.read_bytes(),
            cert_pem=cert_path.read_bytes(),
            ca_pem=self._ca_cert_path.read_bytes(),
        )

    def _issue(self, identity: str, key_path: Path, cert_path: Path) -> None:
        ca_key = serialization.load_pem_private_key(self._ca_key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self._ca_cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=LEAF_VALIDITY_DAYS))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(spiffe_id(identity)),
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
