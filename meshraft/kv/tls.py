"""Client-API security helpers: TLS contexts, token files, the loopback check.

This module owns how the client port's TLS contexts are built (the server's,
optionally requiring client certificates, and the client's) and how a client
token is read and compared. It must never weaken verification: a client context
always verifies the server's certificate and host name, and a server given a
trusted CA always requires and verifies a client certificate (mutual TLS).
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
from pathlib import Path

MAX_TOKEN_BYTES = 4096


def server_context(cert: str | Path, key: str | Path,
                   trusted_ca: str | Path | None = None) -> ssl.SSLContext:
    """The client port's TLS context. With ``trusted_ca``, clients must present a
    certificate signed by it (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if trusted_ca is not None:
        ctx.load_verify_locations(cafile=str(trusted_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        # TLS 1.2 for mutual TLS: there a refused client certificate fails the handshake
        # itself, so the client knows its request was never sent. In TLS 1.3 the server
        # checks it after the client has finished and may have sent a request, and
        # asyncio closes without sending the alert: the client could only say "outcome
        # unknown". (TLS 1.2 with the default ciphers is ECDHE + AEAD.)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(cacert: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    """A client's TLS context: verify the server against ``cacert`` (the system's CAs
    if None) and its host name; present ``cert``/``key`` if given (mutual TLS)."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=None if cacert is None else str(cacert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def read_token_file(path: str | Path) -> bytes:
    """A token from a file (one trailing newline stripped). ValueError if it is empty
    or implausibly long."""
    data = Path(path).read_bytes()
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    if not data:
        raise ValueError(f"token file {path} is empty")
    if len(data) > MAX_TOKEN_BYTES:
        raise ValueError(f"token file {path} holds more than {MAX_TOKEN_BYTES} bytes")
    return data


def token_matches(given: object, expected: bytes) -> bool:
    """Constant-time comparison of a request's token with the expected one."""
    if isinstance(given, str):
        try:
            given = given.encode("utf-8")
        except UnicodeEncodeError:
            return False
    if not isinstance(given, bytes):
        return False
    return hmac.compare_digest(given, expected)


def is_loopback(host: str) -> bool:
    """True for a loopback address or the name localhost; False for anything else,
    including the wildcard addresses (0.0.0.0, ::) and other host names."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
