"""The per-run CA and the leaf certificates it mints, one per inspected host name.

The CA's private key is made when the run starts and lives only in this process's memory:
never on disk, never in the child's reach; a new run has a new CA. Its certificate is name-
constrained (critical ``nameConstraints``) to the inspected hosts, so even a stolen key could
vouch for nothing else; it is valid for two days. Leaf keys are P-256 (fast to make: the
first request's extra cost is a few milliseconds) and are handed to OpenSSL through a memfd,
so they are not written to any file system either.

The child trusts the CA through a bundle in the run directory (``write_bundle``): the system's
CAs followed by the run CA, so uninspected hosts verify as before.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import threading
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["SNI_ATTRIBUTE", "RunCA", "system_ca_file"]

_VALIDITY = datetime.timedelta(days=2)
_BACKDATE = datetime.timedelta(hours=1)  # (clock skew between the proxy and the child: none, but be kind)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _subtree(host: str) -> x509.GeneralName:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return x509.DNSName(host)
    return x509.IPAddress(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}"))


class RunCA:
    """A CA for ``hosts`` (the inspected names), and a server ``SSLContext`` per host."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "capgate"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"capgate run CA {os.getpid()}")])
        public = self._key.public_key()
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        subtrees = [_subtree(h) for h in dict.fromkeys(hosts)]
        if subtrees:
            builder = builder.add_extension(x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None),
                                            critical=True)
        self.cert = builder.sign(self._key, hashes.SHA256())
        self.name = name
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a certificate for exactly ``host`` (cached)."""
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is None:
                ctx = self._contexts[host] = self._mint(host)
            return ctx

    def _mint(self, host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + _VALIDITY)
            .add_extension(x509.SubjectAlternativeName([_general_name(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = _sni_check(host)
        fd = os.memfd_create("capgate-leaf", os.MFD_CLOEXEC)  # (OpenSSL loads keys from paths only)
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return ctx

    def write_bundle(self, path: str) -> str:
        """Write the system CAs plus this CA (PEM) to ``path`` (a new file, mode 0444)."""
        system = b""
        found = system_ca_file()
        if found is not None:
            with open(found, "rb") as fh:
                system = fh.read()
            if system and not system.endswith(b"\n"):
                system += b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        with os.fdopen(fd, "wb") as fh:
            fh.write(system + self.pem)
        return path


SNI_ATTRIBUTE = "capgate_sni"


def _sni_check(host: str) -> Any:
    """The server-name callback of ``host``'s context: records what the client asked for on
    the socket (``SNI_ATTRIBUTE``; per connection, so concurrent handshakes do not mix) and
    ends the handshake when it is not ``host`` — a certificate for one name is never shown to
    a client asking for another. An IP host has no SNI to compare."""
    literal = _general_name(host).__class__ is x509.IPAddress

    def check(sock: Any, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        setattr(sock, SNI_ATTRIBUTE, name)
        if literal or (name or "").lower().rstrip(".") == host:
            return None
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    return check


def system_ca_file() -> str | None:
    """The system's CA bundle file (OpenSSL's default, else the usual distribution paths)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt",
                      "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None
