"""The errors the kv client raises, each carrying its protocol code.

This module owns the client's error classes and nothing else: the retry policy
(``meshraft.kv.retry``) chooses among them by code, the client raises them, and
``meshraft.kv`` re-exports them. It never matches an error by its text: the kind
of an error is its class and its ``code``.

- ``BadRequest`` (``TooLarge``): the request is invalid; retrying will not help.
- ``Unavailable`` (``Busy``): the request certainly did not take effect.
- ``OutcomeUnknown``: the write was sent and may or may not take effect.
- ``Unauthorized``: the server wants a client token and this one is missing or wrong.
- ``TLSFailure``: the TLS handshake failed at every endpoint.
- ``ProtocolViolation``: the server answered something that is not the protocol.
"""

from __future__ import annotations

from typing import Any

from meshraft.kv import protocol as p

__all__ = [
    "BadRequest", "Busy", "MeshraftError", "OutcomeUnknown", "ProtocolViolation", "TLSFailure",
    "TooLarge", "Unauthorized", "Unavailable",
]

# The code of a TLS set-up failure (client side only: no server ever sends it).
TLS_FAILURE = "tls"


class MeshraftError(Exception):
    """Base class of every error this client raises. ``code`` is the protocol's code."""

    code = p.INTERNAL

    def __init__(self, message: str, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class BadRequest(MeshraftError):
    code = p.BAD_REQUEST


class TooLarge(BadRequest):
    code = p.TOO_LARGE


class Unauthorized(MeshraftError):
    code = p.UNAUTHORIZED


class TLSFailure(MeshraftError):
    """TLS could not be set up with any endpoint: a configuration problem, not an outage."""

    code = TLS_FAILURE


class Unavailable(MeshraftError):
    """The request certainly did not take effect (no endpoint, no leader, no quorum)."""

    code = p.UNAVAILABLE


class Busy(Unavailable):
    code = p.BUSY


class OutcomeUnknown(MeshraftError):
    """The write was sent but no answer came back in time: it may or may not take effect."""

    code = p.TIMEOUT


class ProtocolViolation(MeshraftError):
    """The server answered something that is not the protocol."""
