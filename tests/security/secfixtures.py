"""Helpers for the security tests: a throwaway PKI (made with the `cryptography`
package) and a one-member `meshraft serve` started as a real process."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from conftest import Proc, ProcessManager, free_port, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class CA:
    """A certificate authority that lives for one test."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir, self.name = directory, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        _write(directory / name, self.key, self.cert)
        self.path = str(directory / f"{name}.crt")

    def issue(self, cn: str, server: bool) -> tuple[str, str]:
        """(cert path, key path) of a leaf for 127.0.0.1/localhost (server) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                 critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        base = self.dir / f"{self.name}-{cn}"
        _write(base, key, cert)
        return str(base.with_suffix(".crt")), str(base.with_suffix(".key"))


@dataclass
class PKI:
    ca: CA
    other_ca: CA  # trusted by nobody: for "wrong CA" tests
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str  # a client certificate from other_ca
    rogue_key: str


def make_pki(directory: Path) -> PKI:
    ca, other = CA(directory, "ca"), CA(directory, "other-ca")
    sc, sk = ca.issue("server", server=True)
    cc, ck = ca.issue("client", server=False)
    rc, rk = other.issue("rogue", server=False)
    return PKI(ca, other, sc, sk, cc, ck, rc, rk)


@dataclass
class Member:
    proc: Proc
    endpoint: str
    peer_port: int


def start_member(procs: ProcessManager, *extra: str, client_host: str = "127.0.0.1",
                 client: bool = True, listen: str | None = None,
                 transport: str = "udp") -> Member:
    """One `meshraft serve` member (its own one-node cluster); returns once it serves."""
    peer = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
    cport = free_port()
    argv = ["serve", "--id", "1", "--peers", f"1=127.0.0.1:{peer}",
            "--data-dir", str(procs.tmpdir("data")), "--transport", transport, *extra]
    if client:
        argv += ["--client", f"{client_host}:{cport}"]
    if listen is not None:
        argv += ["--listen", listen]
    proc = procs.start(*argv, name="member")
    wait_until(lambda: "clients on" in proc.log() or not proc.alive(), 30, what="member start")
    assert proc.alive(), proc.log()
    port = cport if client else peer + 1000
    return Member(proc, f"127.0.0.1:{port}", peer)
