"""Transactions: validation, compare evaluation and execution of a ``txn`` command.

This module owns what a transaction means (etcd's semantics, see
docs/architecture.md#transactions): compares on any number of keys, then one list of
operations or the other, all writes at one revision. It is pure and deterministic:
given the same command and the same store it gives the same answer and the same
writes on every replica. It never touches the store itself (the state machine
applies the writes it returns as one write batch), never does IO, and never raises
anything but ``TxnError`` on a bad command.

Wire form (a map, as decoded from msgpack)::

    {"op": "txn",
     "compare": [{"key": bin, "target": "value"|"version"|"create"|"mod"|"lease",
                  "result": "="|"!="|">"|"<", "value": bin (value) | int (others)}, ...],
     "success": [op, ...], "failure": [op, ...]}

    op: {"op": "put", "key": bin, "value": bin, "lease"?: int}
        {"op": "delete", "key": bin, "prefix"?: bool}
        {"op": "get", "key": bin}
        {"op": "list", "prefix": bin, "limit"?: int}

Answer: ``{"succeeded": bool, "revision": R, "responses": [...]}``, one response per
op of the branch that ran, in order: put ``{"op": "put", "revision", "create_revision",
"version"}``, delete ``{"op": "delete", "deleted": n}``, get ``{"op": "get", "kv":
kv-or-nil}``, list ``{"op": "list", "kvs": [...], "more": bool}``. ``R`` is the
store's revision after the transaction (the writes' revision; unchanged if nothing
was written).

Semantics, as etcd's:

- All compares must hold for ``success`` to run, else ``failure`` runs.
- A compare on an absent key: a value compare is false; the others compare 0
  (version, create and mod revision, lease of an absent key are 0), so
  ``version = 0`` means "absent".
- Ops run in order; a get or list after a put or delete in the same transaction sees
  it (with the transaction's revision as mod_revision).
- A branch may not write one key twice (two puts, or a put and a delete covering it):
  "duplicate key". Deletes may overlap each other.
- At most ``max_ops`` compares, and at most ``max_ops`` ops per branch (etcd's
  ``--max-txn-ops``, 128 by default). The state machine checks the ceiling
  ``APPLY_MAX_TXN_OPS`` (the same on every replica); a member checks its own,
  configurable ``max_ops`` before proposing.
- What a transaction's reads return is bounded (``MAX_READ_BYTES``): the answer is
  kept for exactly-once retries, so a transaction reading more is refused whole, with
  nothing written. Read large values with plain get/list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Protocol error codes (the same strings as meshraft.kv.protocol's).
BAD_REQUEST = "bad-request"
TOO_LARGE = "too-large"
LEASE_NOT_FOUND = "lease-not-found"  # meshraft.kv.lease's code

TXN_OP = "txn"
TARGETS = ("value", "version", "create", "mod", "lease")
RESULTS = ("=", "!=", ">", "<")
OPS = ("put", "delete", "get", "list")
WRITE_OPS = ("put", "delete")

# etcd's default --max-txn-ops.
DEFAULT_MAX_TXN_OPS = 128
# The most any member may be configured to accept, and what apply checks (every
# replica must decide alike, whatever its own settings).
APPLY_MAX_TXN_OPS = 1024
# Bytes of keys and values (plus a fixed cost per item) a transaction's reads may return.
MAX_READ_BYTES = 4 * 1024 * 1024
ITEM_OVERHEAD = 64
# Keys one list op in a transaction returns at most (and by default).
MAX_LIST = 10_000
MAX_INT = 2**63


class TxnError(Exception):
    """A transaction that cannot run. ``code`` is a protocol error code; nothing was
    written."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SizeLimits(Protocol):
    """What validation needs of ``state_machine.Limits``."""

    max_key: int
    max_value: int


class Store(Protocol):
    """The reads a transaction needs: the store's current state (before the txn)."""

    def get(self, key: bytes) -> Any: ...

    def list(self, prefix: bytes = b"", limit: int | None = None) -> list[Any]: ...


# -- validation --------------------------------------------------------------------------


# Where an item sits, e.g. ("compare", 0) -> "compare 1": formatted only for an error
# message (validation runs twice per transaction, on the request and on apply).
Where = tuple[str, int]


def _at(where: Where) -> str:
    return f"{where[0]} {where[1] + 1}"


def _key(v: Any, limits: SizeLimits, where: Where, what: str = ": key",
         empty: bool = False) -> bytes:
    if type(v) is bytes and (v or empty) and len(v) <= limits.max_key:
        return v  # the common case, first
    if not isinstance(v, bytes | bytearray):
        raise TxnError(BAD_REQUEST, f"{_at(where)}{what} must be bytes")
    if not v and not empty:
        raise TxnError(BAD_REQUEST, f"{_at(where)}{what} must not be empty")
    if len(v) > limits.max_key:
        raise TxnError(TOO_LARGE, f"{_at(where)}{what} is {len(v)} bytes, the limit is "
                                  f"{limits.max_key} bytes")
    return bytes(v)


def _value(v: Any, limits: SizeLimits, where: Where, what: str) -> bytes:
    if type(v) is bytes and len(v) <= limits.max_value:
        return v
    if not isinstance(v, bytes | bytearray):
        raise TxnError(BAD_REQUEST, f"{_at(where)}: {what} must be bytes")
    if len(v) > limits.max_value:
        raise TxnError(TOO_LARGE, f"{_at(where)}: value is {len(v)} bytes, the limit "
                                  f"is {limits.max_value} bytes")
    return bytes(v)


def _int(v: Any, where: Where, what: str) -> int:
    if type(v) is not int or not 0 <= v < MAX_INT:
        raise TxnError(BAD_REQUEST, f"{_at(where)}: {what} must be a non-negative integer")
    return v


def _compare(c: Any, limits: SizeLimits, where: Where) -> dict[str, Any]:
    if type(c) is not dict:
        raise TxnError(BAD_REQUEST, f"{_at(where)} must be a map")
    target, result = c.get("target"), c.get("result")
    if target not in TARGETS:
        raise TxnError(BAD_REQUEST, f"{_at(where)}: target must be one of "
                                    f"{', '.join(TARGETS)}, got {str(target)[:32]!r}")
    if result not in RESULTS:
        raise TxnError(BAD_REQUEST, f"{_at(where)}: result must be one of "
                                    f"{' '.join(RESULTS)}, got {str(result)[:32]!r}")
    key = _key(c.get("key"), limits, where)
    if target == "value":
        value: Any = _value(c.get("value"), limits, where, "a value compare's value")
    else:
        value = _int(c.get("value"), where, f"a {target} compare's value")
    return {"key": key, "target": target, "result": result, "value": value}


def _op(o: Any, limits: SizeLimits, where: Where) -> dict[str, Any]:
    if type(o) is not dict:
        raise TxnError(BAD_REQUEST, f"{_at(where)} must be a map")
    kind = o.get("op")
    if kind == "put":
        out: dict[str, Any] = {"op": kind, "key": _key(o.get("key"), limits, where),
                               "value": _value(o.get("value"), limits, where, "value")}
        lease = o.get("lease", 0)
        if lease:
            out["lease"] = _int(lease, where, "lease")
        elif lease != 0 or type(lease) is not int:
            raise TxnError(BAD_REQUEST, f"{_at(where)}: lease must be a non-negative integer")
        return out
    if kind == "get":
        return {"op": kind, "key": _key(o.get("key"), limits, where)}
    if kind == "delete":
        out = {"op": kind, "key": _key(o.get("key"), limits, where)}
        prefix = o.get("prefix", False)
        if type(prefix) is not bool:
            raise TxnError(BAD_REQUEST, f"{_at(where)}: prefix must be true or false")
        if prefix:
            out["prefix"] = True
        return out
    if kind == "list":
        out = {"op": kind, "prefix": _key(o.get("prefix", b""), limits, where, ": prefix",
                                          empty=True)}
        limit = o.get("limit")
        if limit is not None:
            if type(limit) is not int or limit <= 0:
                raise TxnError(BAD_REQUEST, f"{_at(where)}: limit must be a positive integer")
            out["limit"] = min(limit, MAX_LIST)
        return out
    raise TxnError(BAD_REQUEST, f"{_at(where)}: op must be one of {', '.join(OPS)}, "
                                f"got {str(kind)[:32]!r}")


def _check_duplicates(ops: list[dict[str, Any]], branch: str) -> None:
    """etcd's rule: puts on distinct keys, none inside a delete of the same branch."""
    puts = [o["key"] for o in ops if o["op"] == "put"]
    if len(set(puts)) == len(puts) and not any(o["op"] == "delete" for o in ops):
        return  # the common case: puts on distinct keys, no delete
    deleted = {o["key"] for o in ops if o["op"] == "delete" and not o.get("prefix")}
    prefixes = [o["key"] for o in ops if o["op"] == "delete" and o.get("prefix")]
    seen: set[bytes] = set()
    for k in puts:
        if k in seen or k in deleted or any(k.startswith(p) for p in prefixes):
            raise TxnError(BAD_REQUEST, f"duplicate key: the {branch} branch writes key "
                                        f"{k[:64]!r} twice")
        seen.add(k)


def check_txn(cmd: Any, limits: SizeLimits, max_ops: int = DEFAULT_MAX_TXN_OPS
              ) -> dict[str, Any]:
    """Validate a txn command; return it normalised (``op``, ``compare``, ``success``,
    ``failure`` only: the caller adds the session fields). Raises TxnError."""
    if not isinstance(cmd, dict):
        raise TxnError(BAD_REQUEST, "command must be a map")
    if cmd.get("op") != TXN_OP:
        raise TxnError(BAD_REQUEST, "not a txn command")
    out: dict[str, Any] = {"op": TXN_OP}
    for name, where in (("compare", "compare"), ("success", "success op"),
                        ("failure", "failure op")):
        v = cmd.get(name)
        if v is None:
            v = []
        elif type(v) is not list and not isinstance(v, list | tuple):
            raise TxnError(BAD_REQUEST, f"{name} must be a list")
        if len(v) > max_ops:
            raise TxnError(TOO_LARGE, f"too many operations in the transaction: {len(v)} "
                                      f"in {name}, the limit is {max_ops}")
        if name == "compare":
            out[name] = [_compare(c, limits, (where, i)) for i, c in enumerate(v)]
        else:
            ops = [_op(o, limits, (where, i)) for i, o in enumerate(v)]
            if len(ops) > 1:
                _check_duplicates(ops, name)
            out[name] = ops
    return out


# -- evaluation --------------------------------------------------------------------------


def _field(kv: Any, target: str) -> Any:
    if target == "value":
        return kv.value
    if target == "version":
        return kv.version
    if target == "create":
        return kv.create_revision
    if target == "mod":
        return kv.mod_revision
    return getattr(kv, "lease", 0)  # KeyValue has no lease before leases exist


def compare_holds(c: dict[str, Any], kv: Any) -> bool:
    """One (validated) compare against the key's current KeyValue (None if absent)."""
    target = c["target"]
    if kv is None:
        if target == "value":
            return False  # etcd: a value compare on an absent key always fails
        actual: Any = 0
    else:
        actual = _field(kv, target)
    want = c["value"]
    r = c["result"]
    if r == "=":
        return bool(actual == want)
    if r == "!=":
        return bool(actual != want)
    if r == ">":
        return bool(actual > want)
    return bool(actual < want)


def _wire(kv: Any) -> dict[str, Any]:
    return kv if isinstance(kv, dict) else kv.to_wire()


def _item_size(kv: dict[str, Any]) -> int:
    return len(kv["key"]) + len(kv["value"]) + ITEM_OVERHEAD


@dataclass(slots=True)
class TxnOutcome:
    """What a transaction did: its answer, and the writes for the state machine to
    apply as one write batch, in order (``("put", key, value, lease)`` or
    ``("delete", key)``; only writes that change something). ``changed`` tells
    whether the revision is bumped (iff ``writes``)."""

    answer: dict[str, Any]
    writes: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.writes)


class _View:
    """The store as the transaction's ops see it: the store plus its own writes."""

    def __init__(self, store: Store, revision: int) -> None:
        self.store = store
        self.rev = revision + 1  # the revision the writes will have
        self.own: dict[bytes, dict[str, Any] | None] = {}  # key -> wire kv, None = deleted

    def get(self, key: bytes) -> dict[str, Any] | None:
        if key in self.own:
            return self.own[key]
        kv = self.store.get(key)
        return None if kv is None else _wire(kv)

    def list(self, prefix: bytes, limit: int) -> tuple[list[dict[str, Any]], bool]:
        mine = {k: v for k, v in self.own.items() if k.startswith(prefix)}
        gone = sum(1 for v in mine.values() if v is None)
        # The first `limit` keys of the merged view come from at most limit + gone
        # stored keys (plus own puts); one more tells whether there is more.
        stored = self.store.list(prefix, limit + gone + 1)
        merged = {kv.key: kv for kv in stored}
        for k, v in mine.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        keys = sorted(merged)
        more = len(keys) > limit or len(stored) > limit + gone
        return [_wire(merged[k]) for k in keys[:limit]], more

    def put(self, key: bytes, value: bytes, lease: int) -> dict[str, Any]:
        if key in self.own:  # (never for a put: a branch writes a key once; kept general)
            mine = self.own[key]
            create, version = ((mine["create_revision"], mine["version"]) if mine
                               else (self.rev, 0))
        else:
            cur = self.store.get(key)
            create, version = ((cur.create_revision, cur.version) if cur is not None
                               else (self.rev, 0))
        kv: dict[str, Any] = {"key": key, "value": value, "create_revision": create,
                              "mod_revision": self.rev, "version": version + 1}
        if lease:
            kv["lease"] = lease
        self.own[key] = kv
        return kv

    def delete(self, key: bytes) -> bool:
        exists = (self.own[key] is not None if key in self.own
                  else self.store.get(key) is not None)
        if exists:
            self.own[key] = None
        return exists


def execute(cmd: dict[str, Any], store: Store, revision: int, *,
            check_lease: Callable[[int, bytes], None] | None = None,
            max_read_bytes: int | None = MAX_READ_BYTES) -> TxnOutcome:
    """Run a validated txn command against ``store`` (at ``revision``); return its
    answer and its writes, without changing anything. Raises TxnError (nothing is to
    be written then). ``check_lease(lease, key)``: raises (an error of the caller's
    own type) if ``key`` may not be attached to ``lease``; called for every put with a
    lease in the branch that runs, before anything else (None: no lease exists).
    ``max_read_bytes``: the bound on what the reads return (None: unbounded, for
    callers that keep no reads in their answer)."""
    succeeded = all(compare_holds(c, store.get(c["key"])) for c in cmd["compare"])
    ops: Sequence[dict[str, Any]] = cmd["success" if succeeded else "failure"]
    for o in ops:
        lease = o.get("lease")  # only puts have one, and only when not 0
        if lease:
            if check_lease is None:
                raise TxnError(LEASE_NOT_FOUND, f"lease {lease} not found")
            check_lease(lease, o["key"])
    view = _View(store, revision)
    writes: list[tuple[Any, ...]] = []
    responses: list[dict[str, Any]] = []
    read_bytes = 0
    for o in ops:
        kind = o["op"]
        if kind == "put":
            lease = o.get("lease", 0)
            kv = view.put(o["key"], o["value"], lease)
            writes.append(("put", o["key"], o["value"], lease))
            responses.append({"op": "put", "revision": view.rev,
                              "create_revision": kv["create_revision"],
                              "version": kv["version"]})
        elif kind == "delete":
            if o.get("prefix"):
                keys = [kv["key"] for kv in view.list(o["key"], MAX_INT)[0]]
            else:
                keys = [o["key"]]
            n = 0
            for k in keys:
                if view.delete(k):
                    writes.append(("delete", k))
                    n += 1
            responses.append({"op": "delete", "deleted": n})
        elif kind == "get":
            got = view.get(o["key"])
            read_bytes += _item_size(got) if got else ITEM_OVERHEAD
            responses.append({"op": "get", "kv": got})
        else:
            kvs, more = view.list(o["prefix"], o.get("limit", MAX_LIST))
            read_bytes += ITEM_OVERHEAD + sum(_item_size(kv) for kv in kvs)
            responses.append({"op": "list", "kvs": kvs, "more": more})
        if read_bytes and max_read_bytes is not None and read_bytes > max_read_bytes:
            raise TxnError(TOO_LARGE, f"the reads of this transaction return more than "
                                      f"{max_read_bytes} bytes; nothing was written (read "
                                      "large values with get or list outside a transaction)")
    new_revision = view.rev if writes else revision
    return TxnOutcome({"succeeded": succeeded, "revision": new_revision,
                       "responses": responses}, writes)


# -- cas, as a transaction ---------------------------------------------------------------


def cas_txn(key: bytes, expected: bytes | None, value: bytes) -> dict[str, Any]:
    """The transaction a ``cas`` is: put ``value`` if the key holds ``expected`` (None:
    if the key is absent), else read the key (for the mismatch's mod_revision)."""
    cmp = ({"key": key, "target": "version", "result": "=", "value": 0} if expected is None
           else {"key": key, "target": "value", "result": "=", "value": expected})
    return {"op": TXN_OP, "compare": [cmp],
            "success": [{"op": "put", "key": key, "value": value}],
            "failure": [{"op": "get", "key": key}]}


def cas_answer(answer: dict[str, Any], revision: int) -> dict[str, Any]:
    """A ``cas`` command's answer from its transaction's outcome (the cas protocol:
    success ``{revision, create_revision, version, succeeded}``, mismatch the error
    ``cas-mismatch`` with ``revision`` and the key's ``mod_revision``). Small: never
    the value, since answers are kept for retries. ``answer``: the txn's answer."""
    a = answer
    if a["succeeded"]:
        put = a["responses"][0]
        return {"revision": put["revision"], "create_revision": put["create_revision"],
                "version": put["version"], "succeeded": True}
    kv = a["responses"][0]["kv"]
    return {"error": "cas-mismatch", "message": "the current value is not the expected one",
            "revision": revision, "mod_revision": kv["mod_revision"] if kv else 0}


# -- building transactions (clients) -----------------------------------------------------


def _b(x: bytes | str, what: str) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, bytearray | memoryview):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    raise TypeError(f"{what} must be bytes or str, not {type(x).__name__}")


class Compare:
    """A compare for ``client.txn(compare=[...])``, built etcd3-style::

        Compare.value("k") == "x"        Compare.version("k") == 0   # absent
        Compare.mod("k") < 42            Compare.create("lock") == token
        Compare.lease("k") != 0

    or plainly ``Compare("k", "value", "=", b"x")`` (its operand is ``.expected``).
    ``to_wire()`` gives the protocol map.
    """

    def __init__(self, key: bytes | str, target: str, result: str, value: Any) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}")
        if result not in RESULTS:
            raise ValueError(f"result must be one of {' '.join(RESULTS)}")
        self.key = _b(key, "key")
        self.target = target
        self.result = result
        # (not .value: that is the constructor Compare.value(key))
        self.expected = _b(value, "value") if target == "value" else int(value)

    @staticmethod
    def value(key: bytes | str) -> _Target:
        return _Target(key, "value")

    @staticmethod
    def version(key: bytes | str) -> _Target:
        return _Target(key, "version")

    @staticmethod
    def create(key: bytes | str) -> _Target:
        return _Target(key, "create")

    @staticmethod
    def mod(key: bytes | str) -> _Target:
        return _Target(key, "mod")

    @staticmethod
    def lease(key: bytes | str) -> _Target:
        return _Target(key, "lease")

    def to_wire(self) -> dict[str, Any]:
        return {"key": self.key, "target": self.target, "result": self.result,
                "value": self.expected}

    def __repr__(self) -> str:
        return f"Compare({self.key!r}, {self.target!r}, {self.result!r}, {self.expected!r})"


class _Target:
    """``Compare.value(key)`` and friends: a comparison operator makes the Compare."""

    __slots__ = ("key", "target")

    def __init__(self, key: bytes | str, target: str) -> None:
        self.key, self.target = key, target

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare(self.key, self.target, "=", other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare(self.key, self.target, "!=", other)

    def __gt__(self, other: object) -> Compare:
        return Compare(self.key, self.target, ">", other)

    def __lt__(self, other: object) -> Compare:
        return Compare(self.key, self.target, "<", other)

    __hash__ = None  # type: ignore[assignment]


class Op:
    """An operation for a transaction's ``success``/``failure`` lists::

        Op.put("k", "v")   Op.put("k", "v", lease=0x1f)   Op.delete("k")
        Op.delete("dir/", prefix=True)   Op.get("k")   Op.list("dir/", limit=10)
    """

    __slots__ = ("wire",)

    def __init__(self, wire: dict[str, Any]) -> None:
        self.wire = wire

    @classmethod
    def put(cls, key: bytes | str, value: bytes | str, *, lease: int = 0) -> Op:
        w: dict[str, Any] = {"op": "put", "key": _b(key, "key"), "value": _b(value, "value")}
        if lease:
            w["lease"] = int(lease)
        return cls(w)

    @classmethod
    def delete(cls, key: bytes | str, *, prefix: bool = False) -> Op:
        w: dict[str, Any] = {"op": "delete", "key": _b(key, "key")}
        if prefix:
            w["prefix"] = True
        return cls(w)

    @classmethod
    def get(cls, key: bytes | str) -> Op:
        return cls({"op": "get", "key": _b(key, "key")})

    @classmethod
    def list(cls, prefix: bytes | str = b"", *, limit: int | None = None) -> Op:
        w: dict[str, Any] = {"op": "list", "prefix": _b(prefix, "prefix")}
        if limit is not None:
            w["limit"] = int(limit)
        return cls(w)

    def to_wire(self) -> dict[str, Any]:
        return self.wire

    def __repr__(self) -> str:
        return f"Op({self.wire!r})"


def to_wire_list(items: Sequence[Any], what: str) -> list[dict[str, Any]]:
    """Compares or Ops (or their wire maps) as the protocol's list."""
    out = []
    for x in items:
        if isinstance(x, Compare | Op):
            out.append(x.to_wire())
        elif isinstance(x, dict):
            out.append(x)
        else:
            raise TypeError(f"{what} items must be {'Compare' if what == 'compare' else 'Op'}"
                            f" objects, not {type(x).__name__}")
    return out
