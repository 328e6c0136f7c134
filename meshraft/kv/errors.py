"""The errors the kv client raises, each carrying its protocol code.

This module owns the client's error classes and nothing else: the retry policy
(``meshraft.kv.retry``) chooses among them by code, the client raises them, and
``meshraft.kv`` re-exports them. It never matches an error by its text: the kind
of an error is its class and its ``code``.

- ``BadRequest`` (``TooLarge``): the request is invalid; retrying will not help.
  ``Compacted`` and ``FutureRevision`` (reads at a revision, compaction) are kinds of it.
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
    "BadRequest", "Busy", "Compacted", "FutureRevision", "LeaseNotFound", "MeshraftError",
    "OutcomeUnknown", "ProtocolViolation", "TLSFailure", "TooLarge", "TooManyLeases",
    "Unauthorized", "Unavailable",
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


class Compacted(BadRequest):
    """The revision asked for is below the compaction point (``compact_revision``)."""

    code = p.COMPACTED

    def __init__(self, message: str, code: str | None = None, **details: Any) -> None:
        super().__init__(message, code, **details)
        self.compact_revision = int(details.get("compact_revision") or 0)


class FutureRevision(BadRequest):
    """The revision asked for is above the store's current one (``current_revision``)."""

    code = p.FUTURE_REVISION

    def __init__(self, message: str, code: str | None = None, **details: Any) -> None:
        super().__init__(message, code, **details)
        self.current_revision = int(details.get("revision") or 0)


class LeaseNotFound(BadRequest):
    """The lease does not exist (never granted, revoked or expired)."""

    code = "lease-not-found"  # meshraft.kv.lease.LEASE_NOT_FOUND


class TooManyLeases(BadRequest):
    """A grant beyond the member's maximum number of leases."""

    code = "too-many-leases"  # meshraft.kv.lease.TOO_MANY_LEASES


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
