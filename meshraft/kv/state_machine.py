"""The key-value state machine that Raft replicates.

This module owns the store's data (keys, values, revisions), the exactly-once
session table, and the encoding of write commands and snapshots. It is pure:
``apply`` is a deterministic function of the state and the entry, with no IO,
no clocks, no randomness and no logging of secrets. It must never raise on a
bad entry (a hostile or corrupt command becomes an error result, because an
exception here would stop the node), and it never reads from the network.

Why this module is over 600 lines: it is the one place where every replicated
command (put, delete, cas, txn, compact, the lease commands, fragments) is
validated, decoded, deduplicated and applied, and where the snapshot is assembled;
each part's own logic lives in its module (history in ``mvcc``, transactions in
``txn``, the lease table in ``lease``).

Revisions work like etcd's: one global counter, bumped by every write that
changes something; each key remembers the revision that created it
(``create_revision``), the one that last changed it (``mod_revision``) and how
many times it was written since it was created (``version``). A write's
answer carries the store revision after it, usable as a fencing token.

History: the versions of each key since the last compaction, the events of each
revision, reads at a past revision and compaction live in ``meshraft.kv.mvcc``
(this module drives them and re-exports its types). ``compact`` is a replicated
command like ``put``; it does not bump the revision.

Leases: the lease table (``meshraft.kv.lease``) is part of this state; a put may
attach its key to a lease (``KeyValue.lease``), ``lease_revoke`` deletes the
lease's keys in one revision. Expiry is never decided here: the leader commits
it as a revoke (docs/architecture.md#leases).

Transactions: ``txn`` commands are decided by ``meshraft.kv.txn`` (pure: compares,
then one branch's ops over a view of the store) and applied here as one write batch,
so all of a transaction's writes share one revision; ``cas`` is such a transaction
(docs/architecture.md#transactions).

Large commands: a Raft entry must fit one datagram, so the server splits a
command larger than that into ``frag`` commands (one entry each, proposed in
order, all with one random fragment key). The state machine stages the pieces
and applies the whole command when the last one arrives; a piece out of order
(say, a late duplicate of an older attempt) fails that attempt, never
applies a partial command. Staging is bounded and part of the snapshot.

Exactly once: a write may carry a client id, a sequence number and an
acknowledgement floor (the client's lowest sequence number still waiting for
an answer). The table remembers the answers of a client's writes at or above
its floor, so a retried write returns the first answer instead of applying
twice, and a write below the floor (a stale duplicate) is refused. Sessions are
evicted least-recently-used beyond ``max_sessions``; that order is part of the
replicated state, so every replica evicts the same ones.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack

from meshraft.kv.lease import (
    LEASE_OPS,
    LeaseError,
    LeaseTable,
    check_lease_command,
    validate_lease_id,
)
from meshraft.kv.mvcc import (
    COMPACTED,
    DELETE,
    FUTURE_REVISION,
    PUT,
    CommandError,
    Compacted,
    Event,
    FutureRevision,
    History,
    KeyValue,
    Listener,
    check_revision,
)
from meshraft.kv.txn import (
    APPLY_MAX_TXN_OPS,
    DEFAULT_MAX_TXN_OPS,
    MAX_READ_BYTES,
    TXN_OP,
    TxnError,
    cas_answer,
    cas_txn,
    check_txn,
)
from meshraft.kv.txn import execute as execute_txn

__all__ = [
    "BAD_REQUEST", "CAS_MISMATCH", "COMPACTED", "DELETE", "FUTURE_REVISION", "NOT_FOUND", "PUT",
    "STALE", "TOO_LARGE", "CommandError", "Compacted", "Event", "FutureRevision", "KVStateMachine",
    "KeyValue", "Limits", "Listener", "check_revision", "check_write", "decode_command",
    "encode_command", "fragment_command",
]

# Error codes shared with the client protocol (meshraft.kv.protocol re-exports them).
NOT_FOUND = "not-found"
CAS_MISMATCH = "cas-mismatch"
BAD_REQUEST = "bad-request"
TOO_LARGE = "too-large"
STALE = "stale"

DEFAULT_MAX_KEY = 1024
DEFAULT_MAX_VALUE = 1024 * 1024
DEFAULT_MAX_SESSIONS = 10_000
# Answers kept per client: at least what one client id may have in flight at once.
DEFAULT_MAX_ANSWERS = 128
# 2: with history (versions, compaction point); version 1 snapshots still restore.
SNAPSHOT_VERSION = 2
READABLE_SNAPSHOT_VERSIONS = (1, 2)

WRITE_OPS = ("put", "delete", "cas", "compact", TXN_OP, *LEASE_OPS)
FRAG_OP = "frag"
# A Raft entry must fit one datagram, a command may not (a 1 MiB value): the server
# splits a large command into fragments of at most this many bytes, one entry each.
DEFAULT_FRAGMENT_BYTES = 32 * 1024
MAX_FRAGMENTS = 4096
# Partly received commands kept at once (oldest dropped first), and their total bytes.
MAX_STAGED = 64
MAX_STAGED_BYTES = 64 * 1024 * 1024
INCOMPLETE = "incomplete"


# The largest key and value any member applies. Applying must not depend on a member's
# own settings (replicas with different limits would diverge), so the configurable
# Limits are checked where a request comes in, and apply checks only these.
APPLY_MAX_KEY = 64 * 1024
APPLY_MAX_VALUE = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The largest key and value a member accepts from clients (``serve
    --max-key-bytes/--max-value-bytes``); at most APPLY_MAX_KEY / APPLY_MAX_VALUE.
    ``max_txn_ops`` (``serve --max-txn-ops``): compares, and ops per branch, of one
    transaction; at most APPLY_MAX_TXN_OPS (meshraft.kv.txn)."""

    max_key: int = DEFAULT_MAX_KEY
    max_value: int = DEFAULT_MAX_VALUE
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS

    def __post_init__(self) -> None:
        if not 1 <= self.max_key <= APPLY_MAX_KEY:
            raise ValueError(f"max key size must be 1..{APPLY_MAX_KEY} bytes, "
                             f"got {self.max_key}")
        if not 0 <= self.max_value <= APPLY_MAX_VALUE:
            raise ValueError(f"max value size must be 0..{APPLY_MAX_VALUE} bytes, "
                             f"got {self.max_value}")
        if not 1 <= self.max_txn_ops <= APPLY_MAX_TXN_OPS:
            raise ValueError(f"max operations per transaction must be "
                             f"1..{APPLY_MAX_TXN_OPS}, got {self.max_txn_ops}")


APPLY_LIMITS = Limits(APPLY_MAX_KEY, APPLY_MAX_VALUE, APPLY_MAX_TXN_OPS)


@dataclass(slots=True)
class _Session:
    floor: int = 0
    answers: dict[int, Any] | None = None


def error_result(code: str, message: str) -> dict[str, Any]:
    return {"error": code, "message": message}


def validate_key(key: Any, limits: Limits) -> bytes:
    if not isinstance(key, bytes | bytearray):
        raise CommandError(BAD_REQUEST, "key must be bytes")
    if len(key) == 0:
        raise CommandError(BAD_REQUEST, "key must not be empty")
    if len(key) > limits.max_key:
        raise CommandError(
            TOO_LARGE, f"key is {len(key)} bytes, the limit is {limits.max_key} bytes"
        )
    return bytes(key)


def validate_value(value: Any, limits: Limits, what: str = "value") -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise CommandError(BAD_REQUEST, f"{what} must be bytes")
    if len(value) > limits.max_value:
        raise CommandError(
            TOO_LARGE, f"{what} is {len(value)} bytes, the limit is {limits.max_value} bytes"
        )
    return bytes(value)


def validate_prefix(prefix: Any, limits: Limits) -> bytes:
    if not isinstance(prefix, bytes | bytearray):
        raise CommandError(BAD_REQUEST, "prefix must be bytes")
    if len(prefix) > limits.max_key:
        raise CommandError(
            TOO_LARGE, f"prefix is {len(prefix)} bytes, the limit is {limits.max_key}"
        )
    return bytes(prefix)


def _check_session_fields(cmd: dict[str, Any]) -> None:
    cid = cmd.get("cid")
    if cid is None:
        return
    if not isinstance(cid, str | bytes) or len(cid) > 64:
        raise CommandError(BAD_REQUEST, "client id must be a string of at most 64 characters")
    for name in ("seq", "ack"):
        v = cmd.get(name, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 2**63:
            raise CommandError(BAD_REQUEST, f"{name} must be a non-negative integer")
    if "seq" not in cmd:
        raise CommandError(BAD_REQUEST, "a client id needs a sequence number")


def check_write(cmd: Any, limits: Limits) -> dict[str, Any]:
    """Validate a write command (a dict as decoded from msgpack); return it normalised.

    Raises CommandError. Used by the server before proposing (so a bad command
    never reaches the log) and by ``apply`` (so a bad entry cannot hurt).
    """
    if not isinstance(cmd, dict):
        raise CommandError(BAD_REQUEST, "command must be a map")
    op = cmd.get("op")
    if op not in WRITE_OPS:
        raise CommandError(BAD_REQUEST, f"unknown write operation {op!r}")
    if op in LEASE_OPS:
        try:
            out: dict[str, Any] = check_lease_command(cmd)
        except LeaseError as exc:
            raise CommandError(exc.code, exc.message) from None
    elif op == TXN_OP:
        try:
            out = check_txn(cmd, limits, limits.max_txn_ops)
        except TxnError as exc:
            raise CommandError(exc.code, exc.message) from None
    elif op == "compact":
        revision = cmd.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool) or not (
                0 <= revision < 2**63):
            raise CommandError(BAD_REQUEST, "compact needs a non-negative integer revision")
        out = {"op": op, "revision": revision}
    else:
        out = {"op": op, "key": validate_key(cmd.get("key"), limits)}
    if op == "put":
        out["value"] = validate_value(cmd.get("value"), limits)
        if cmd.get("lease"):  # 0 or absent: no lease
            try:
                out["lease"] = validate_lease_id(cmd["lease"])
            except LeaseError as exc:
                raise CommandError(exc.code, exc.message) from None
    elif op == "cas":
        expected = cmd.get("expected")
        out["expected"] = None if expected is None else validate_value(
            expected, limits, "expected value")
        out["value"] = validate_value(cmd.get("value"), limits, "new value")
    _check_session_fields(cmd)
    if cmd.get("cid") is not None:
        out["cid"] = cmd["cid"]
        out["seq"] = cmd["seq"]
        out["ack"] = cmd.get("ack", 0)
    return out


def check_fragment(cmd: dict[str, Any]) -> dict[str, Any]:
    fk, i, n, data = cmd.get("fk"), cmd.get("i"), cmd.get("n"), cmd.get("data")
    if not isinstance(fk, str) or not 0 < len(fk) <= 64:
        raise CommandError(BAD_REQUEST, "fragment key must be a short string")
    if not (isinstance(n, int) and isinstance(i, int)) or isinstance(n, bool) or isinstance(
            i, bool) or not 1 < n <= MAX_FRAGMENTS or not 0 <= i < n:
        raise CommandError(BAD_REQUEST, "bad fragment numbering")
    if not isinstance(data, bytes) or len(data) > 2 * DEFAULT_FRAGMENT_BYTES:
        raise CommandError(BAD_REQUEST, "bad fragment data")
    return {"op": FRAG_OP, "fk": fk, "i": i, "n": n, "data": data}


def fragment_command(data: bytes, key: str, size: int = DEFAULT_FRAGMENT_BYTES) -> list[bytes]:
    """An encoded command too large for one entry, as ``frag`` entries to propose in order."""
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    if len(pieces) > MAX_FRAGMENTS:
        raise CommandError(TOO_LARGE, "command too large")
    return [encode_command({"op": FRAG_OP, "fk": key, "i": i, "n": len(pieces), "data": d})
            for i, d in enumerate(pieces)]


def encode_command(cmd: dict[str, Any]) -> bytes:
    """The bytes a write command travels as through the Raft log."""
    return msgpack.packb(cmd, use_bin_type=True)


def _unpack_limits(limits: Limits, total: int) -> dict[str, int]:
    return {
        "max_bin_len": max(limits.max_value, limits.max_key) + 1,
        "max_str_len": 1024,
        "max_array_len": total,
        "max_map_len": total,
        "max_ext_len": 0,
    }


def decode_command(data: bytes, limits: Limits, allow_fragment: bool = True) -> dict[str, Any]:
    try:
        cmd = msgpack.unpackb(data, raw=False, strict_map_key=True, **{
            **_unpack_limits(limits, 64), "max_array_len": max(64, limits.max_txn_ops)})
    except Exception as exc:  # msgpack raises several types for hostile bytes
        raise CommandError(BAD_REQUEST, f"undecodable command: {exc.__class__.__name__}") from None
    if allow_fragment and isinstance(cmd, dict) and cmd.get("op") == FRAG_OP:
        return check_fragment(cmd)
    return check_write(cmd, limits)


class KVStateMachine:
    """The replicated store. Implements the node's StateMachine protocol."""

    def __init__(
        self,
        limits: Limits | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_answers: int = DEFAULT_MAX_ANSWERS,
    ) -> None:
        self.limits = limits or Limits()
        self.max_sessions = max_sessions
        self.max_answers = max_answers
        self._history = History()
        # Leases (meshraft.kv.lease): each key's lease is its KeyValue.lease.
        self.leases = LeaseTable()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        # fragment key -> [pieces received, count expected, bytes so far]
        self._staged: OrderedDict[str, list[Any]] = OrderedDict()

    @property
    def revision(self) -> int:
        """The store's current revision (bumped by every write that changes something)."""
        return self._history.revision

    @property
    def compact_revision(self) -> int:
        """The compaction point: reads below it are impossible (0: never compacted)."""
        return self._history.compact_revision

    # -- history listeners (watch) -----------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener.on_revision/on_restore/on_compact`` from now on (synchronously,
        inside apply: it must be quick and must not raise; exceptions are only counted
        in ``listener_errors``)."""
        self._history.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._history.listeners:
            self._history.listeners.remove(listener)

    @property
    def listener_errors(self) -> int:
        return self._history.listener_errors

    def events_since(self, start_revision: int,
                     max_events: int) -> list[tuple[int, tuple[Event, ...]]]:
        """The events of the revisions >= ``start_revision``, whole revisions in order,
        stopping once ``max_events`` is reached (at least one revision if there is any).
        Raises ``Compacted`` if that history is gone."""
        return self._history.events_since(start_revision, max_events)

    # -- the StateMachine protocol ----------------------------------------------------------

    def apply(self, entry: Any) -> Any:
        """Apply one committed entry; return the answer for its proposer.

        Entries with no data (the leader's no-op) and non-normal entries are
        ignored and answer None.
        """
        if getattr(entry, "type", 0) not in (0, None):
            return None
        data = getattr(entry, "data", b"")
        if not data:
            return None
        return self.apply_command(data)

    def apply_command(self, data: bytes, allow_fragment: bool = True) -> dict[str, Any]:
        try:
            # The ceiling, not self.limits: every replica must decide alike.
            cmd = decode_command(data, APPLY_LIMITS, allow_fragment)
        except CommandError as exc:
            return error_result(exc.code, exc.message)
        if cmd["op"] == FRAG_OP:
            return self._fragment(cmd)
        cid = cmd.get("cid")
        if cid is None:
            return self._execute(cmd)
        key = cid if isinstance(cid, str) else cid.hex()
        session = self._sessions.pop(key, None)
        if session is None:
            session = _Session(0, {})
        self._sessions[key] = session  # most recently used goes last
        answers = session.answers if session.answers is not None else {}
        session.answers = answers
        seq = cmd["seq"]
        if seq < session.floor:
            return error_result(STALE, f"request {seq} of this client was already answered")
        if seq in answers:
            return answers[seq]
        result = self._execute(cmd)
        answers[seq] = result
        new_floor = max(session.floor, min(cmd["ack"], seq))
        if len(answers) > self.max_answers:
            new_floor = max(new_floor, sorted(answers)[len(answers) - self.max_answers])
        if new_floor != session.floor:
            session.floor = new_floor
            for s in [s for s in answers if s < new_floor]:
                del answers[s]
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return result

    def _fragment(self, cmd: dict[str, Any]) -> dict[str, Any]:
        fk, i, n, data = cmd["fk"], cmd["i"], cmd["n"], cmd["data"]
        if i == 0:
            self._staged.pop(fk, None)
            self._staged[fk] = [[data], n, len(data)]
        else:
            st = self._staged.get(fk)
            if st is None or st[1] != n or len(st[0]) != i:
                self._staged.pop(fk, None)
                return error_result(INCOMPLETE, "a fragment of the command was lost; retry")
            st[0].append(data)
            st[2] += len(data)
        st = self._staged[fk]
        if i < n - 1:
            while len(self._staged) > MAX_STAGED or (
                    sum(v[2] for v in self._staged.values()) > MAX_STAGED_BYTES
                    and len(self._staged) > 1):
                self._staged.popitem(last=False)
            return {"fragment": i}
        del self._staged[fk]
        return self.apply_command(b"".join(st[0]), allow_fragment=False)

    def snapshot(self) -> bytes:
        state = {
            "v": SNAPSHOT_VERSION,
            **self._history.snapshot_state(),
            "sessions": [
                [cid, s.floor, sorted((s.answers or {}).items())]
                for cid, s in self._sessions.items()
            ],
            "staged": [[fk, st[0], st[1]] for fk, st in self._staged.items()],
            "leases": self.leases.to_snapshot(),
        }
        return msgpack.packb(state, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        if not data:
            self._sessions = OrderedDict()
            self._staged = OrderedDict()
            self._history.restore_state({"revision": 0, "kv": [], "compact_revision": 0,
                                         "first": 1})
            self.leases.restore(None)
            return
        # A snapshot can hold many keys: arrays are bounded by the snapshot's own size
        # (one byte per item at least); maps are small (the state, per-write answers).
        state = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_bin_len=APPLY_MAX_VALUE + 1,
            max_str_len=1024 * 1024,
            max_array_len=len(data),
            max_map_len=64,
            max_ext_len=0,
        )
        if not isinstance(state, dict) or state.get("v") not in READABLE_SNAPSHOT_VERSIONS:
            raise ValueError("not a meshraft kv snapshot (or an unknown version)")
        if state["v"] == 1:
            state.pop("compact_revision", None)  # version 1 has no history
        sessions: OrderedDict[str, _Session] = OrderedDict()
        for cid, floor, answers in state["sessions"]:
            sessions[cid] = _Session(floor, {int(s): a for s, a in answers})
        staged: OrderedDict[str, list[Any]] = OrderedDict()
        for fk, pieces, n in state.get("staged", []):
            pieces = [bytes(x) for x in pieces]
            staged[fk] = [pieces, n, sum(len(x) for x in pieces)]
        self._sessions, self._staged = sessions, staged
        self._history.restore_state(state)
        self.leases.restore(state.get("leases"), ((kv.key, kv.lease)
                                                  for kv in self._history.data.values()
                                                  if kv.lease))

    # -- reads (local; the server puts a read barrier in front for linearizability) ----------

    def get(self, key: bytes, revision: int | None = None) -> KeyValue | None:
        """``key`` now, or as it was right after ``revision`` was applied. Raises
        ``Compacted`` below the compaction point, ``FutureRevision`` above the current."""
        return self._history.get(key, revision)

    def list(self, prefix: bytes = b"", limit: int | None = None,
             revision: int | None = None) -> list[KeyValue]:
        """The keys with ``prefix``, sorted, now or at ``revision`` (as ``get``)."""
        return self._history.list(prefix, limit, revision)

    def __len__(self) -> int:
        return len(self._history.data)

    @property
    def version_count(self) -> int:
        """Versions of keys held in history (tombstones included)."""
        return self._history.version_count()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # -- writes ------------------------------------------------------------------------------

    def _execute(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        h = self._history
        if op == "compact":
            try:
                h.compact(cmd["revision"])
            except Compacted as exc:
                return {**error_result(exc.code, exc.message),
                        "compact_revision": exc.compact_revision, "revision": h.revision}
            except FutureRevision as exc:
                return {**error_result(exc.code, exc.message), "revision": h.revision}
            return {"revision": h.revision, "compact_revision": h.compact_revision}
        if op in LEASE_OPS:
            return self._lease(cmd)
        if op == TXN_OP:
            return self._txn(cmd)
        key = cmd["key"]
        if op == "put":
            lease = cmd.get("lease", 0)
            if lease:
                try:
                    self.leases.check_attach(lease, key)
                except LeaseError as exc:  # nothing changed
                    return {**error_result(exc.code, exc.message), "revision": h.revision}
            return self._put(key, cmd["value"], lease)
        if op == "delete":
            if key not in h.data:
                return {"revision": h.revision, "deleted": 0}
            h.begin()
            prev = h.delete(key)
            h.end()
            if prev is not None and prev.lease:
                self.leases.detach(prev.lease, key)
            return {"revision": h.revision, "deleted": 1}
        # cas: a transaction (meshraft.kv.txn.cas_txn) with the cas answer; its read of
        # the key is not kept (the answer holds only the mod_revision).
        out = self._txn(cas_txn(key, cmd["expected"], cmd["value"]), max_read_bytes=None)
        return out if "error" in out else cas_answer(out, h.revision)

    def _txn(self, cmd: dict[str, Any], max_read_bytes: int | None = MAX_READ_BYTES
             ) -> dict[str, Any]:
        """A transaction (meshraft.kv.txn): decided there, its writes applied here as
        one revision. An error (a put's lease is gone, reads too large) writes nothing."""
        h = self._history
        try:
            out = execute_txn(cmd, h, h.revision, check_lease=self.leases.check_attach,
                              max_read_bytes=max_read_bytes)
        except (TxnError, LeaseError) as exc:
            return {**error_result(exc.code, exc.message), "revision": h.revision}
        if out.writes:
            h.begin()
            for w in out.writes:
                if w[0] == "put":
                    _, key, value, lease = w
                    current = h.data.get(key)
                    if current is not None and current.lease and current.lease != lease:
                        self.leases.detach(current.lease, key)
                    if lease:
                        self.leases.attach(lease, key)
                    h.put(key, value, lease)
                else:
                    prev = h.delete(w[1])
                    if prev is not None and prev.lease:
                        self.leases.detach(prev.lease, w[1])
            h.end()
        return out.answer

    def _lease(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """lease_grant / lease_revoke. A revoke (or expiry, which the leader commits
        as a revoke) deletes the lease's keys in one revision."""
        h = self._history
        try:
            if cmd["op"] == "lease_grant":
                lease = self.leases.grant(cmd["lease_id"], cmd["ttl"])
                return {"id": lease.id, "ttl": lease.ttl, "revision": h.revision}
            if cmd["op"] == "lease_keepalive":
                lease = self.leases.renew(cmd["lease_id"])
                return {"id": lease.id, "ttl": lease.ttl, "revision": h.revision}
            keys = self.leases.revoke(cmd["lease_id"], cmd.get("renewals"))
        except LeaseError as exc:
            return {**error_result(exc.code, exc.message), "revision": h.revision}
        if keys:
            h.begin()
            for key in keys:
                h.delete(key)
            h.end()
        return {"revision": h.revision, "deleted": len(keys)}

    def _put(self, key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
        h = self._history
        current = h.data.get(key)
        if current is not None and current.lease and current.lease != lease:
            self.leases.detach(current.lease, key)
        if lease:
            self.leases.attach(lease, key)
        h.begin()
        kv = h.put(key, value, lease)
        h.end()
        return {
            "revision": h.revision,
            "create_revision": kv.create_revision,
            "version": kv.version,
        }
