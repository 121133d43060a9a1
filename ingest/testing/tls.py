"""Throwaway certificates for a test broker's TLS listener, made with `cryptography`.

`make_broker_pki(directory)` writes, in well under a second:

* ``ca.pem``: a self-signed certificate authority, what clients trust
  (`ssl.ca.location` of confluent-kafka, `ssl_cafile` of kafka-python);
* ``broker.pem``: the broker's PKCS#8 private key followed by its certificate
  and the CA's, the form of Kafka's PEM keystore (`ssl.keystore.type=PEM`), for
  the names clients connect with: IP 127.0.0.1 and DNS localhost.

`write_ca(path)` makes one more CA, which signed nothing of the broker's: what a
test needs to show an untrusted certificate being refused.

The keys never leave the directory (the broker's temporary one, deleted when
it stops) and are unencrypted: they protect nothing but a loopback test broker.
`cryptography` comes with the `test` extra and is imported only when a function
here is called.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.errors import ServiceToolMissingError
from ingest.install_hint import install_hint

INSTALL_CRYPTOGRAPHY = f"cryptography ({install_hint('test')})"
VALID_FOR = datetime.timedelta(days=2)  # long enough for any test session, short enough to be harmless


@dataclass(frozen=True)
class BrokerPki:
    """Where `make_broker_pki` wrote its files."""

    ca_pem: Path
    keystore_pem: Path


def cryptography_available() -> bool:
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


def _modules() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        raise ServiceToolMissingError(f"making test certificates needs {INSTALL_CRYPTOGRAPHY}") from None
    return x509, hashes, serialization, ec


def _certificate(subject: str, public_key: Any, issuer: str, issuer_key: Any, *, ca: bool) -> Any:
    x509, hashes, _serialization, _ec = _modules()
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a clock a little behind
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        ]), critical=False).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _new_key() -> Any:
    # P-256: generated in a millisecond (an RSA key takes far longer on a busy
    # 2-core machine), and read by Java's PEM keystore and every client.
    _x509, _hashes, _serialization, ec = _modules()
    return ec.generate_private_key(ec.SECP256R1())


def _ca(name: str) -> tuple[Any, Any]:
    key = _new_key()
    return key, _certificate(name, key.public_key(), name, key, ca=True)


def _pem(cert: Any) -> bytes:
    _x509, _hashes, serialization, _ec = _modules()
    return cert.public_bytes(serialization.Encoding.PEM)


def write_ca(path: str | Path, name: str = "ingest untrusted test CA") -> Path:
    """A new, unrelated CA certificate written to `path` (PEM); returns the path."""
    _key, cert = _ca(name)
    path = Path(path)
    path.write_bytes(_pem(cert))
    return path


def make_broker_pki(directory: str | Path) -> BrokerPki:
    """A CA and a broker certificate it signed, for 127.0.0.1 and localhost (see the module docstring)."""
    _x509, _hashes, serialization, _ec = _modules()
    directory = Path(directory)
    ca_key, ca_cert = _ca("ingest test CA")
    broker_key = _new_key()
    broker_cert = _certificate("127.0.0.1", broker_key.public_key(), "ingest test CA", ca_key, ca=False)
    ca_pem = directory / "ca.pem"
    ca_pem.write_bytes(_pem(ca_cert))
    keystore = directory / "broker.pem"
    key_pem = broker_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    keystore.write_bytes(key_pem + _pem(broker_cert) + _pem(ca_cert))
    keystore.chmod(0o600)
    return BrokerPki(ca_pem=ca_pem, keystore_pem=keystore)
