"""The replicated lease table: which leases exist, their TTLs and the keys attached.

This module owns the lease part of the replicated state and the validation of
the lease commands that travel through the Raft log (``lease_grant``,
``lease_revoke``). It is pure and deterministic like the state machine that
embeds it: no clocks, no IO, no randomness, no logging. It never decides that a
lease expired: time is the leader's business (``meshraft.kv.lease_manager``),
and an expiry reaches this table only as a committed ``lease_revoke``
(docs/architecture.md#leases).

Semantics follow etcd's: a lease has an id and a TTL in whole seconds; a put may
attach its key to a lease (a put without one detaches the key); revoking the
lease deletes every attached key. Ids are chosen by the state machine (a
counter, so an id is never reused: a put with a revoked lease's id is always
"lease not found") unless the grant names one.

Bounds: the number of leases (``max_leases``, a replicated ceiling: every replica
refuses the same grant) and the keys per lease (``max_keys``, so that one revoke
is a bounded amount of work in one revision). The member's own, lower, limit on
leases is checked where a grant comes in (``meshraft.kv.lease_manager``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "APPLY_MAX_LEASES", "DEFAULT_MAX_LEASES", "LEASE_NOT_FOUND", "LEASE_OPS", "LEASE_RENEWED",
    "LEASE_TOO_MANY_KEYS",
    "MAX_KEYS_PER_LEASE", "MAX_TTL", "MIN_TTL", "TOO_MANY_LEASES", "Lease", "LeaseError",
    "LeaseObserver", "LeaseTable", "check_lease_command", "validate_lease_id",
]

# Error codes (protocol codes; meshraft.kv.protocol re-exports them).
LEASE_NOT_FOUND = "lease-not-found"
TOO_MANY_LEASES = "too-many-leases"
LEASE_TOO_MANY_KEYS = "lease-too-many-keys"
LEASE_RENEWED = "lease-renewed"  # an expiry that lost the race with a logged keepalive
_BAD_REQUEST = "bad-request"  # the same string as state_machine.BAD_REQUEST

MIN_TTL = 1  # seconds
MAX_TTL = 7 * 24 * 3600  # a week: longer-lived keys should not need a lease
# Every replica refuses a grant beyond this many leases (applied alike everywhere);
# a member refuses grants beyond its own, lower, configured maximum first.
APPLY_MAX_LEASES = 1_000_000
DEFAULT_MAX_LEASES = 100_000
MAX_KEYS_PER_LEASE = 10_000
MAX_LEASE_ID = 2**63 - 1

# lease_keepalive is logged only when a follower forwards a keepalive through Raft
# (docs/architecture.md#leases); the leader renews without touching the log.
LEASE_OPS = ("lease_grant", "lease_revoke", "lease_keepalive")


class LeaseError(Exception):
    """A lease command that cannot be applied; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate_lease_id(value: Any, *, allow_zero: bool = False) -> int:
    """A lease id from a request: an integer in 1..2**63-1 (0 too with ``allow_zero``)."""
    if not isinstance(value, int) or isinstance(value, bool) or not (
            0 if allow_zero else 1) <= value <= MAX_LEASE_ID:
        raise LeaseError(_BAD_REQUEST, f"lease id must be an integer in 1..{MAX_LEASE_ID}")
    return value


def validate_ttl(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LeaseError(_BAD_REQUEST, "lease TTL must be a whole number of seconds")
    if not MIN_TTL <= value <= MAX_TTL:
        raise LeaseError(_BAD_REQUEST,
                         f"lease TTL must be {MIN_TTL}..{MAX_TTL} seconds, got {value}")
    return value


def check_lease_command(cmd: dict[str, Any]) -> dict[str, Any]:
    """Validate a lease write command; return its normalised fields (without the
    session fields, which the state machine checks for every write). The lease's id
    travels as ``lease_id`` (a request's ``id`` is the protocol's request id)."""
    op = cmd.get("op")
    if op == "lease_grant":
        return {"op": op, "ttl": validate_ttl(cmd.get("ttl")),
                "lease_id": validate_lease_id(cmd.get("lease_id", 0),
                                                          allow_zero=True)}
    if op == "lease_revoke":
        out = {"op": op, "lease_id": validate_lease_id(cmd.get("lease_id"))}
        if cmd.get("expired") is True:  # proposed by the leader's expiry clock
            out["expired"] = True
            renewals = cmd.get("renewals", 0)
            if not isinstance(renewals, int) or isinstance(renewals, bool) or renewals < 0:
                raise LeaseError(_BAD_REQUEST, "renewals must be a non-negative integer")
            out["renewals"] = renewals
        return out
    if op == "lease_keepalive":
        return {"op": op, "lease_id": validate_lease_id(cmd.get("lease_id"))}
    raise LeaseError(_BAD_REQUEST, f"unknown lease operation {op!r}")


class LeaseObserver(Protocol):
    """Who hears about lease changes as they are applied (the leader's expiry clock).
    Called synchronously inside apply; must not raise and must not change the table."""

    def on_grant(self, lease_id: int, ttl: int) -> None: ...

    def on_revoke(self, lease_id: int) -> None: ...

    def on_keepalive(self, lease_id: int, ttl: int) -> None: ...

    def on_restore(self) -> None: ...


@dataclass(slots=True)
class Lease:
    id: int
    ttl: int
    keys: set[bytes] = field(default_factory=set)
    renewals: int = 0  # keepalives that went through the log


class LeaseTable:
    """The leases of one replica. Deterministic: the same commands in the same order
    give the same table on every replica. ``observer`` is not replicated state."""

    def __init__(self, max_leases: int = APPLY_MAX_LEASES,
                 max_keys: int = MAX_KEYS_PER_LEASE) -> None:
        self.max_leases = max_leases
        self.max_keys = max_keys
        self._leases: dict[int, Lease] = {}
        self.next_id = 1
        self.observer: LeaseObserver | None = None

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def ids(self) -> list[int]:
        return sorted(self._leases)

    def grant(self, lease_id: int, ttl: int) -> Lease:
        """A new lease (``lease_id`` 0: the next free id). LeaseError if the table is
        full or the id is taken; nothing changes then."""
        validate_ttl(ttl)
        if len(self._leases) >= self.max_leases:
            raise LeaseError(TOO_MANY_LEASES,
                             f"too many leases: the cluster holds at most {self.max_leases}")
        if lease_id == 0:
            while self.next_id in self._leases:
                self.next_id += 1
            lease_id = self.next_id
        elif lease_id in self._leases:
            raise LeaseError(_BAD_REQUEST, f"lease {lease_id} already exists")
        validate_lease_id(lease_id)
        lease = Lease(lease_id, ttl)
        self._leases[lease_id] = lease
        self.next_id = max(self.next_id, lease_id + 1) if lease_id < MAX_LEASE_ID else 1
        if self.observer is not None:
            self.observer.on_grant(lease_id, ttl)
        return lease

    def revoke(self, lease_id: int, renewals: int | None = None) -> list[bytes]:
        """Remove the lease; return its keys (sorted), which the caller deletes in
        one revision. LeaseError(lease-not-found) if there is no such lease. An expiry
        (``renewals``: the count the leader saw when it decided) is refused
        (lease-renewed) if a logged keepalive was applied since."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseError(LEASE_NOT_FOUND, f"lease {lease_id} not found")
        if renewals is not None and renewals != lease.renewals:
            raise LeaseError(LEASE_RENEWED, f"lease {lease_id} was kept alive meanwhile")
        del self._leases[lease_id]
        if self.observer is not None:
            self.observer.on_revoke(lease_id)
        return sorted(lease.keys)

    def renew(self, lease_id: int) -> Lease:
        """A keepalive that went through the log (LeaseError if no such lease)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseError(LEASE_NOT_FOUND, f"lease {lease_id} not found")
        lease.renewals += 1
        if self.observer is not None:
            self.observer.on_keepalive(lease_id, lease.ttl)
        return lease

    def renewals(self, lease_id: int) -> int:
        lease = self._leases.get(lease_id)
        return 0 if lease is None else lease.renewals

    def check_attach(self, lease_id: int, key: bytes) -> None:
        """Could ``key`` be attached to ``lease_id``? LeaseError if not."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseError(LEASE_NOT_FOUND, f"lease {lease_id} not found")
        if key not in lease.keys and len(lease.keys) >= self.max_keys:
            raise LeaseError(LEASE_TOO_MANY_KEYS,
                             f"lease {lease_id} already has {self.max_keys} keys (the limit)")

    def attach(self, lease_id: int, key: bytes) -> None:
        """Attach ``key`` (call check_attach first)."""
        self._leases[lease_id].keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # -- snapshot --------------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """Plain data for the state machine's snapshot. Keys are not repeated here:
        each key's ``lease`` field says which lease holds it (see ``restore``)."""
        return {"next_id": self.next_id,
                "leases": [[lease.id, lease.ttl, lease.renewals]
                           for lease in self._leases.values()]}

    def restore(self, data: dict[str, Any] | None,
                attached: Iterable[tuple[bytes, int]] = ()) -> None:
        """Replace the table with a snapshot's (``data`` None: empty), then attach
        ``(key, lease id)`` pairs (the restored keys' lease fields)."""
        leases: dict[int, Lease] = {}
        next_id = 1
        if data:
            next_id = int(data.get("next_id", 1))
            for lease_id, ttl, *renewals in data.get("leases", []):
                leases[int(lease_id)] = Lease(int(lease_id), int(ttl), set(),
                                              int(renewals[0]) if renewals else 0)
        for key, lease_id in attached:
            lease = leases.get(lease_id)
            if lease is not None:
                lease.keys.add(key)
        self._leases, self.next_id = leases, next_id
        if self.observer is not None:
            self.observer.on_restore()
