"""A test certificate authority: TLS for loopback services and the IdP's JWT signing key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .paths import SYSTEM_CA_BUNDLE


@dataclass(frozen=True)
class PKI:
    dir: Path
    ca_cert: Path        # the test CA alone
    bundle: Path         # system CAs + test CA: what processes that call the IdP must trust
    server_cert: Path    # localhost / 127.0.0.1 / ::1
    server_key: Path
    sig_cert: Path       # self-signed certificate of the JWT signing key (x5c in the JWKS)
    sig_key: Path

    def ca_env(self) -> dict[str, str]:
        """Environment that makes Python, Go, curl, AWS SDKs and Node trust the test CA."""
        b = str(self.bundle)
        return {"REQUESTS_CA_BUNDLE": b, "SSL_CERT_FILE": b, "CURL_CA_BUNDLE": b,
                "AWS_CA_BUNDLE": b, "NODE_EXTRA_CA_CERTS": b}


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key, issuer_name: x509.Name | None, issuer_key, ca: bool, sans=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> PKI:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    ca_key = _key()
    ca = _cert("jhub-cloud test CA", ca_key, None, ca_key, ca=True)
    srv_key = _key()
    srv = _cert("localhost", srv_key, ca.subject, ca_key, ca=False,
                sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                      x509.IPAddress(ipaddress.ip_address("::1"))])
    sig_key = _key()
    sig = _cert("jhub-cloud test OIDC signing", sig_key, None, sig_key, ca=False)
    pem = serialization.Encoding.PEM
    pki = PKI(d, d / "ca.crt", d / "bundle.crt", d / "server.crt", d / "server.key", d / "sig.crt", d / "sig.key")
    pki.ca_cert.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(srv.public_bytes(pem))
    pki.sig_cert.write_bytes(sig.public_bytes(pem))
    _write_key(srv_key, pki.server_key)
    _write_key(sig_key, pki.sig_key)
    pki.bundle.write_bytes(SYSTEM_CA_BUNDLE.read_bytes() + b"\n" + ca.public_bytes(pem))
    for f in (pki.ca_cert, pki.server_cert, pki.sig_cert, pki.bundle):
        f.chmod(0o644)
    return pki
