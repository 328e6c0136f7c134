"""The store's multi-version history: every revision's events and every key's versions.

This module owns the data the kv state machine keeps (the current key-values, the
versions of each key since the last compaction, the event history of each revision),
reads at a past revision, compaction, the listeners told about each revision, and
the history's part of a snapshot. Like the state machine that drives it, it is pure:
no IO, no clocks, no randomness, no logging; given the same writes every replica
holds the same history. It never decodes commands (``meshraft.kv.state_machine``
does) and never knows about watches or connections (``meshraft.kv.watch`` does,
through the listener interface).

Semantics are etcd's (see docs/architecture.md#history):

- A write is built as ``begin()``, any number of ``put``/``delete``, ``end()``; all
  changes between them share one revision, and ``end()`` bumps the store revision by
  one only if something changed. Each change is an ``Event``; a delete's event holds a
  tombstone ``KeyValue(key, b"", create_revision=0, mod_revision=<rev>, version=0)``.
- Each key keeps a list of its versions (tombstones included), oldest first; the
  event history holds, per revision, the very same ``KeyValue`` objects that revision
  wrote (no copies; one object, or a tuple when several). ``Event`` objects are made
  from them when asked for (``events_since``, listeners): the type is the version's
  (0: a tombstone, DELETE), ``prev_kv`` the key's version before it. Keeping the
  versions only, not events, is what keeps a put's history cheap (memory, and the
  garbage collector's work, per revision).
- ``compact(R)`` drops the events of every revision below R, and from each key's list
  every version below R except the newest one (unless that one is a tombstone), so a
  read at any revision >= R still sees what it saw before.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

# Error codes (re-exported by meshraft.kv.state_machine and meshraft.kv.protocol).
BAD_REQUEST = "bad-request"
COMPACTED = "compacted"
FUTURE_REVISION = "future-revision"

PUT = "PUT"
DELETE = "DELETE"

_MOD = attrgetter("mod_revision")


@dataclass(slots=True)
class KeyValue:
    """One version of a key. A tombstone (the key deleted) has version 0."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0  # the lease the key is attached to (0: none; meshraft.kv.lease)

    def to_wire(self) -> dict[str, Any]:
        out = {
            "key": self.key,
            "value": self.value,
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
            "version": self.version,
        }
        if self.lease:  # absent means none (clients tolerate its absence)
            out["lease"] = self.lease
        return out


@dataclass(frozen=True, slots=True)
class Event:
    """One change at one revision: ``type`` is "PUT" or "DELETE"; ``prev_kv`` is the
    key's version before the change (None if the key did not exist)."""

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None

    def to_wire(self, prev_kv: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "kv": self.kv.to_wire()}
        if prev_kv and self.prev_kv is not None:
            out["prev_kv"] = self.prev_kv.to_wire()
        return out


# Building an Event on the put path: a frozen dataclass's __init__ sets each field
# through object.__setattr__, which costs more than the rest of a put's history work;
# this sets the slots directly (same object, still frozen to everyone else).
_new_object = object.__new__
_set_type = Event.__dict__["type"].__set__
_set_kv = Event.__dict__["kv"].__set__
_set_prev = Event.__dict__["prev_kv"].__set__


def _event(type_: str, kv: KeyValue, prev_kv: KeyValue | None) -> Event:
    ev = _new_object(Event)
    _set_type(ev, type_)
    _set_kv(ev, kv)
    _set_prev(ev, prev_kv)
    return ev


class CommandError(Exception):
    """A command that is invalid on its face (size, type). ``code`` is a protocol code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Compacted(CommandError):
    """The revision asked for is below the compaction point: that history is gone."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(COMPACTED, f"required revision has been compacted "
                                    f"(compacted at revision {compact_revision})")
        self.compact_revision = compact_revision


class FutureRevision(CommandError):
    """The revision asked for is above the store's current revision."""

    def __init__(self, current_revision: int, asked: int | None = None) -> None:
        what = "required revision" if asked is None else f"revision {asked}"
        super().__init__(FUTURE_REVISION, f"{what} is a future revision "
                                          f"(the current revision is {current_revision})")
        self.current_revision = current_revision


class Listener(Protocol):
    """Told about the history as it changes; called synchronously inside apply, so it
    must be quick and must not raise (an exception is caught and only counted)."""

    def on_revision(self, revision: int, events: tuple[Event, ...]) -> None: ...

    def on_restore(self, revision: int) -> None: ...

    def on_compact(self, compact_revision: int) -> None: ...


def check_revision(revision: Any) -> int | None:
    """A request's ``revision`` argument: None/0 = current, else a positive int."""
    if revision is None:
        return None
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise CommandError(BAD_REQUEST, "revision must be a non-negative integer")
    return revision or None


class History:
    """The current data plus its versions and events since the compaction point."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.listener_errors = 0
        self.reset()

    def reset(self) -> None:
        """Back to an empty store (listeners stay)."""
        self.revision = 0
        self.compact_revision = 0
        self.data: dict[bytes, KeyValue] = {}
        self.versions: dict[bytes, list[KeyValue]] = {}
        # events[i] holds what revision first + i wrote (a KeyValue, or a tuple of them);
        # every revision in [first, revision] is there (first = compact_revision, or 1
        # when never compacted).
        self.events: deque[KeyValue | tuple[KeyValue, ...]] = deque()
        self.first = 1
        self._pending: list[KeyValue] | None = None
        self._prevs: list[KeyValue | None] = []

    # -- writes --------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the changes of one revision."""
        self._pending = []
        self._prevs = []

    def put(self, key: bytes, value: bytes, lease: int = 0) -> KeyValue:
        assert self._pending is not None, "put outside begin()/end()"
        current = self.data.get(key)
        rev = self.revision + 1
        if current is None:
            kv = KeyValue(key, value, rev, rev, 1, lease)
        else:  # reuse the key's bytes: one object per key, however many versions
            kv = KeyValue(current.key, value, current.create_revision, rev, current.version + 1,
                          lease)
        self.data[kv.key] = kv
        versions = self.versions.get(kv.key)
        if versions is None:
            self.versions[kv.key] = [kv]
        else:
            versions.append(kv)
        self._pending.append(kv)
        self._prevs.append(current)
        return kv

    def delete(self, key: bytes) -> KeyValue | None:
        """Delete ``key``; its previous version, or None (and no change) if absent."""
        assert self._pending is not None, "delete outside begin()/end()"
        current = self.data.pop(key, None)
        if current is None:
            return None
        tomb = KeyValue(current.key, b"", 0, self.revision + 1, 0)
        self.versions[current.key].append(tomb)
        self._pending.append(tomb)
        self._prevs.append(current)
        return current

    def end(self) -> int:
        """Finish the revision: bump it if anything changed and tell the listeners.
        Returns the new revision, or 0 if nothing changed (no revision)."""
        pending, self._pending = self._pending, None
        if not pending:
            return 0
        self.revision += 1
        self.events.append(pending[0] if len(pending) == 1 else tuple(pending))
        if self.listeners:  # (the put path: no events made, no loop, when nobody listens)
            events = tuple(_event(PUT if kv.version else DELETE, kv, prev)
                           for kv, prev in zip(pending, self._prevs, strict=True))
            for listener in tuple(self.listeners):
                try:
                    listener.on_revision(self.revision, events)
                except Exception:
                    self.listener_errors += 1
        return self.revision

    # -- reads ---------------------------------------------------------------------------

    def check_read(self, revision: int) -> None:
        if revision > self.revision:
            raise FutureRevision(self.revision, revision)
        if revision < self.compact_revision:
            raise Compacted(self.compact_revision)

    def get(self, key: bytes, revision: int | None = None) -> KeyValue | None:
        if revision is None or revision == self.revision:
            if revision is not None:
                self.check_read(revision)
            return self.data.get(key)
        self.check_read(revision)
        return self._at(self.versions.get(key), revision)

    def list(self, prefix: bytes = b"", limit: int | None = None,
             revision: int | None = None) -> list[KeyValue]:
        if revision is None or revision == self.revision:
            if revision is not None:
                self.check_read(revision)
            keys = sorted(k for k in self.data if k.startswith(prefix))
            if limit is not None:
                keys = keys[:limit]
            return [self.data[k] for k in keys]
        self.check_read(revision)
        out: list[KeyValue] = []
        for k in sorted(k for k in self.versions if k.startswith(prefix)):
            if limit is not None and len(out) >= limit:
                break
            kv = self._at(self.versions[k], revision)
            if kv is not None:
                out.append(kv)
        return out

    @staticmethod
    def _at(versions: list[KeyValue] | None, revision: int) -> KeyValue | None:
        if not versions:
            return None
        i = bisect_right(versions, revision, key=_MOD)
        if i == 0:
            return None
        kv = versions[i - 1]
        return None if kv.version == 0 else kv

    def events_since(self, start_revision: int,
                     max_events: int) -> list[tuple[int, tuple[Event, ...]]]:
        """Whole revisions >= ``start_revision`` in order, stopping once ``max_events``
        events are collected (at least one revision if there is any)."""
        if start_revision < self.compact_revision:
            raise Compacted(self.compact_revision)
        if start_revision < self.first and self.first > max(self.compact_revision, 1):
            # Only after restoring a snapshot without history: those events are unknown.
            raise Compacted(self.first)
        start = max(start_revision, self.first)
        out: list[tuple[int, tuple[Event, ...]]] = []
        count = 0
        i = start - self.first
        n = len(self.events)
        while i < n:
            entry = self.events[i]
            kvs = (entry,) if isinstance(entry, KeyValue) else entry
            if out and count + len(kvs) > max_events:
                break
            out.append((self.first + i, tuple(self._event_of(kv) for kv in kvs)))
            count += len(kvs)
            i += 1
            if count >= max_events:
                break
        return out

    def _event_of(self, kv: KeyValue) -> Event:
        """The event that wrote version ``kv`` (still in history): its previous version
        is the one before it in the key's list (kept by compaction, see ``compact``)."""
        versions = self.versions[kv.key]
        i = bisect_right(versions, kv.mod_revision, key=_MOD) - 1
        while versions[i] is not kv:  # several versions of a key at one revision
            i -= 1
        prev = versions[i - 1] if i > 0 else None
        if prev is not None and prev.version == 0:
            prev = None
        return _event(PUT if kv.version else DELETE, kv, prev)

    def version_count(self) -> int:
        """Versions held (tombstones included), for status and tests."""
        return sum(len(v) for v in self.versions.values())

    # -- compaction ----------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Drop history below ``revision``. Raises FutureRevision / Compacted."""
        if revision > self.revision:
            raise FutureRevision(self.revision, revision)
        if revision <= self.compact_revision:
            raise Compacted(self.compact_revision)
        touched: set[bytes] = set()
        while self.events and self.first < revision:
            entry = self.events.popleft()
            if isinstance(entry, KeyValue):
                touched.add(entry.key)
            else:
                touched.update(kv.key for kv in entry)
            self.first += 1
        self.first = max(self.first, revision)
        for key in touched:
            versions = self.versions[key]
            i = bisect_right(versions, revision - 1, key=_MOD)  # versions[:i] are below
            if i > 0 and versions[i - 1].version != 0:
                i -= 1  # keep the newest version below the compaction point
            if i:
                del versions[:i]
            if not versions:
                del self.versions[key]
        self.compact_revision = revision
        for listener in tuple(self.listeners):
            try:
                listener.on_compact(revision)
            except Exception:
                self.listener_errors += 1

    # -- snapshot ------------------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """The history's part of a version-2 snapshot: ``kv`` (current data, as in
        version 1), ``compact_revision``, ``first`` (the oldest revision with events),
        ``old`` (each key's earlier versions, sorted by key), ``order`` (the key order of
        the events of revisions with several events)."""
        old = []
        for key in sorted(self.versions):
            versions = self.versions[key]
            if self.data.get(key) is versions[-1]:
                versions = versions[:-1]
            if versions:
                # (a leased version carries its lease as a fifth field)
                old.append([key, [[kv.value, kv.create_revision, kv.mod_revision, kv.version]
                                  + ([kv.lease] if kv.lease else []) for kv in versions]])
        order = [[self.first + i, [kv.key for kv in entry]]
                 for i, entry in enumerate(self.events) if isinstance(entry, tuple)]
        return {
            "revision": self.revision,
            "kv": [[kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version]
                   + ([kv.lease] if kv.lease else []) for kv in self.data.values()],
            "compact_revision": self.compact_revision,
            "first": self.first,
            "old": old,
            "order": order,
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Load ``snapshot_state``'s output (or a version-1 snapshot: current data only,
        then the compaction point is the snapshot's revision), then tell the listeners."""
        revision = int(state["revision"])
        listeners, errors = self.listeners, self.listener_errors
        self.reset()
        self.listeners, self.listener_errors = listeners, errors
        for key, value, create, mod, version, *lease in state["kv"]:
            key = bytes(key)
            kv = KeyValue(key, bytes(value), create, mod, version, int(lease[0]) if lease else 0)
            self.data[key] = kv
        self.revision = revision
        if "compact_revision" not in state:  # no history: a version-1 snapshot
            self.compact_revision = revision
            self.first = revision + 1
            for kv in self.data.values():
                self.versions[kv.key] = [kv]
        else:
            self.compact_revision = int(state["compact_revision"])
            self.first = int(state["first"])
            self._rebuild(state.get("old", []), state.get("order", []))
        for listener in tuple(self.listeners):
            try:
                listener.on_restore(revision)
            except Exception:
                self.listener_errors += 1

    def _rebuild(self, old: list[Any], order: list[Any]) -> None:
        for key, versions in old:
            key = bytes(key)
            current = self.data.get(key)
            if current is not None:
                key = current.key
            self.versions[key] = [KeyValue(key, bytes(v), c, m, n, int(rest[0]) if rest else 0)
                                  for v, c, m, n, *rest in versions]
        for key, kv in self.data.items():
            self.versions.setdefault(key, []).append(kv)
        by_rev: dict[int, list[KeyValue]] = {}
        for versions in self.versions.values():
            for kv in versions:
                if kv.mod_revision >= self.first:
                    by_rev.setdefault(kv.mod_revision, []).append(kv)
        orders = {int(rev): [bytes(k) for k in keys] for rev, keys in order}
        for rev in range(self.first, self.revision + 1):
            kvs = by_rev.get(rev, [])
            keys = orders.get(rev)
            if keys is not None:
                rank = {k: i for i, k in enumerate(keys)}
                kvs.sort(key=lambda kv: rank.get(kv.key, len(rank)))
            self.events.append(kvs[0] if len(kvs) == 1 else tuple(kvs))  # () if none
