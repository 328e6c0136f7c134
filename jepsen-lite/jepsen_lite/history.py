"""History: the JSON-lines event format (docs/architecture.md#jepsen-lite), its
validation, and the writer.

This module owns reading, validating and writing histories, and pairing client
events into operations. It knows nothing of models or of how a history is checked,
and it never guesses: an event that breaks the format is an error naming its line.

Format, one JSON object per line::

    {"index":12,"time":1834500012,"process":3,"type":"invoke","f":"cas","key":"r","value":[1,4]}

``index`` strictly increases in file order and is the authoritative order; ``time``
is optional monotonic nanoseconds; only integer processes are clients, everything
else (e.g. ``"nemesis"``) is carried along but never paired or checked.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TYPES = ("invoke", "ok", "fail", "info")
_MISSING = object()


class HistoryError(ValueError):
    """A history that breaks the format. ``line`` is 1-based (None when unknown)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass(slots=True)
class Op:
    """One client operation: an invoke paired with its completion (if any).

    ``status`` is "ok", "fail" or "info"; an invoke that never completed is "info"
    with ``complete_index`` None. ``value`` is the invoke's argument, ``output`` the
    ok completion's value (None otherwise).
    """

    id: int
    process: int
    f: str
    key: Any
    value: Any
    status: str
    output: Any = None
    invoke_index: int = 0
    complete_index: int | None = None
    invoke_time: int | None = None
    complete_time: int | None = None
    invoke_line: int | None = None
    complete_line: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "process": self.process, "f": self.f, "key": self.key,
            "value": self.value, "status": self.status, "output": self.output,
            "invoke_index": self.invoke_index, "complete_index": self.complete_index,
            "invoke_time": self.invoke_time, "complete_time": self.complete_time,
            "error": self.error,
        }


def _is_int(x: Any) -> bool:
    return type(x) is int or (isinstance(x, int) and not isinstance(x, bool))


def _is_number(x: Any) -> bool:
    return type(x) is int or type(x) is float or (
        isinstance(x, (int, float)) and not isinstance(x, bool))


def validate_event(ev: Any, line: int | None = None) -> None:
    """Check one event's shape (not its relation to other events)."""
    if type(ev) is dict and type(ev.get("index")) is int and ev.get("type") in TYPES:
        t = ev.get("time")
        p = ev.get("process", _MISSING)
        if (t is None or type(t) is int) and type(p) is int and type(ev.get("f")) is str:
            key = ev.get("key")
            err = ev.get("error")
            if (key is None or type(key) is str or type(key) is int) and (
                    err is None or type(err) is str):
                return  # the common, well-formed client event
        elif (t is None or type(t) is int) and p is not _MISSING and type(p) is not int \
                and not isinstance(p, int):
            return  # a well-formed non-client event (nemesis)
    if not isinstance(ev, dict):
        raise HistoryError(f"an event must be a JSON object, got {type(ev).__name__}", line)
    if "index" not in ev:
        raise HistoryError("missing field 'index'", line)
    if not _is_int(ev["index"]):
        raise HistoryError(f"'index' must be an integer, got {ev['index']!r}", line)
    t = ev.get("time")
    if t is not None and not _is_number(t):
        raise HistoryError(f"'time' must be a number of nanoseconds, got {t!r}", line)
    if "process" not in ev:
        raise HistoryError("missing field 'process'", line)
    typ = ev.get("type", _MISSING)
    if typ not in TYPES:
        raise HistoryError(f"'type' must be one of {', '.join(TYPES)}; got {typ!r}"
                           if typ is not _MISSING else "missing field 'type'", line)
    if _is_int(ev["process"]):
        f = ev.get("f", _MISSING)
        if f is _MISSING:
            raise HistoryError("missing field 'f'", line)
        if not isinstance(f, str):
            raise HistoryError(f"'f' must be a string, got {f!r}", line)
        key = ev.get("key")
        if key is not None and not isinstance(key, (str, int, float)):
            raise HistoryError(f"'key' must be a string or number, got {key!r}", line)
        err = ev.get("error")
        if err is not None and not isinstance(err, str):
            raise HistoryError(f"'error' must be a string, got {err!r}", line)


def validate_events(events: Iterable[dict[str, Any]],
                    lines: list[int] | None = None) -> list[dict[str, Any]]:
    """Validate every event and the ordering rules; return the events as a list.

    Rules: each event's shape; ``index`` strictly increasing; ``time`` (where given)
    never going backwards. Pairing rules are checked by :func:`pair_operations`.
    """
    evs = list(events)
    last_index: int | None = None
    last_time: float | None = None
    for i, ev in enumerate(evs):
        line = lines[i] if lines is not None else i + 1
        validate_event(ev, line)
        idx = ev["index"]
        if last_index is not None and idx <= last_index:
            raise HistoryError(
                f"'index' must strictly increase: {idx} follows {last_index}", line)
        last_index = idx
        t = ev.get("time")
        if t is not None:
            if last_time is not None and t < last_time:
                raise HistoryError(f"'time' went backwards: {t} after {last_time}", line)
            last_time = t
    return evs


def parse_lines(lines: Iterable[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """Parse JSON lines (blank lines skipped) into events and their 1-based line numbers."""
    raw = list(lines)
    numbers = [n for n, line in enumerate(raw, 1) if line.strip()]
    # Fast path: one json.loads over the whole file; per line only to name a bad line.
    try:
        events = json.loads("[" + ",".join(raw[n - 1] for n in numbers) + "]")
        if len(events) == len(numbers):
            return events, numbers
    except ValueError:
        pass
    events = []
    for n in numbers:
        try:
            events.append(json.loads(raw[n - 1]))
        except ValueError as e:
            raise HistoryError(f"not valid JSON ({e})", n) from None
    return events, numbers


def read_lines(source: str | os.PathLike[str] | IO[str]) -> tuple[list[dict[str, Any]],
                                                                   list[int]]:
    """Parse (but do not validate) a JSONL history from a path or an open text file."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, encoding="utf-8") as fh:
                return parse_lines(fh)
        except UnicodeDecodeError as e:
            raise HistoryError(f"{os.fspath(source)}: not UTF-8 text ({e.reason})") from None
    return parse_lines(source)


def read_history(source: str | os.PathLike[str] | IO[str]) -> list[dict[str, Any]]:
    """Read and validate a JSONL history from a path or an open text file.

    Raises HistoryError (with the line) for a bad event, OSError for an unreadable file.
    Events are returned exactly as written; :func:`read_history_with_lines` adds lines.
    """
    return read_history_with_lines(source)[0]


def read_history_with_lines(
        source: str | os.PathLike[str] | IO[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """Read, validate and pair-check a history; the events and their line numbers."""
    events, lines = read_lines(source)
    validate_events(events, lines)
    pair_operations(events, lines)  # pairing errors surface here, with their lines
    return events, lines


def loads_history(text: str) -> list[dict[str, Any]]:
    """Parse and validate a history held in a string."""
    return read_history(io.StringIO(text))


def pair_operations(events: list[dict[str, Any]],
                    lines: list[int] | None = None) -> list[Op]:
    """Pair each client's invoke with its completion, in history order.

    Returns every client operation (ok, fail and info; an invoke never completed is
    info) ordered by invoke. Non-integer processes are skipped. Errors: a completion
    with no open invoke, an invoke while the process still has one open, and a
    completion whose f, key or repeated argument differ from its invoke.
    """
    ops: list[Op] = []
    open_ops: dict[int, Op] = {}
    for i, ev in enumerate(events):
        proc = ev.get("process")
        if type(proc) is not int and not _is_int(proc):
            continue
        line = lines[i] if lines is not None else i + 1
        typ = ev["type"]
        f = ev["f"]
        key = ev.get("key")
        if typ == "invoke":
            prev = open_ops.get(proc)
            if prev is not None:
                raise HistoryError(
                    f"process {proc} invokes {f} while its {prev.f} invoked on line "
                    f"{prev.invoke_line} has not completed", line)
            op = Op(id=len(ops), process=proc, f=f, key=key, value=ev.get("value"),
                    status="info", invoke_index=ev["index"], invoke_time=ev.get("time"),
                    invoke_line=line)
            ops.append(op)
            open_ops[proc] = op
            continue
        op = open_ops.pop(proc, None)
        if op is None:
            raise HistoryError(f"process {proc} completes {f} ({typ}) with no open invoke", line)
        if f != op.f:
            raise HistoryError(
                f"process {proc} completes {f!r} but invoked {op.f!r} on line {op.invoke_line}",
                line)
        if key != op.key:
            raise HistoryError(
                f"process {proc} completes key {key!r} but invoked key {op.key!r} on line "
                f"{op.invoke_line}", line)
        if typ in ("fail", "info") and "value" in ev and ev["value"] != op.value:
            raise HistoryError(
                f"a {typ} must repeat the invoke's value {op.value!r}, got {ev['value']!r}",
                line)
        op.status = typ
        op.complete_index = ev["index"]
        op.complete_time = ev.get("time")
        op.complete_line = line
        op.error = ev.get("error")
        if typ == "ok":
            op.output = ev.get("value")
    return ops


class HistoryWriter:
    """Appends events to a JSONL history, one flushed line per event.

    Indices start at ``start_index`` and increase by one; times are the clock's
    nanoseconds, forced never to go backwards. Thread-safe, so client threads and
    the nemesis may share one writer. Use as a context manager or call close().
    """

    def __init__(self, target: str | os.PathLike[str] | IO[str], *,
                 clock: Callable[[], int] = time.monotonic_ns, start_index: int = 0,
                 fsync: bool = False) -> None:
        if isinstance(target, (str, os.PathLike)):
            self._fh: IO[str] = open(target, "a", encoding="utf-8")
            self._owns = True
        else:
            self._fh = target
            self._owns = False
        self._clock = clock
        self._next = start_index
        self._last_time = -1
        self._fsync = fsync
        self._lock = threading.Lock()
        self.events_written = 0

    def append(self, process: int | str, type: str, f: str, value: Any = None, *,
               key: Any = _MISSING, error: str | None = None,
               **extra: Any) -> dict[str, Any]:
        """Write one event and return it (with its index and time)."""
        if type not in TYPES:
            raise ValueError(f"type must be one of {TYPES}, got {type!r}")
        with self._lock:
            t = int(self._clock())
            if t < self._last_time:
                t = self._last_time
            self._last_time = t
            ev: dict[str, Any] = {"index": self._next, "time": t, "process": process,
                                  "type": type, "f": f}
            if key is not _MISSING:
                ev["key"] = key
            ev["value"] = value
            if error is not None:
                ev["error"] = error
            ev.update(extra)
            line = json.dumps(ev, separators=(",", ":"), default=_json_default)
            self._fh.write(line + "\n")
            self._fh.flush()
            if self._fsync:
                os.fsync(self._fh.fileno())
            self._next += 1
            self.events_written += 1
            return ev

    def invoke(self, process: int, f: str, value: Any = None, *, key: Any = _MISSING,
               **extra: Any) -> dict[str, Any]:
        return self.append(process, "invoke", f, value, key=key, **extra)

    def ok(self, process: int, f: str, value: Any = None, *, key: Any = _MISSING,
           **extra: Any) -> dict[str, Any]:
        return self.append(process, "ok", f, value, key=key, **extra)

    def fail(self, process: int, f: str, value: Any = None, *, key: Any = _MISSING,
             error: str | None = None, **extra: Any) -> dict[str, Any]:
        return self.append(process, "fail", f, value, key=key, error=error, **extra)

    def info(self, process: int | str, f: str, value: Any = None, *, key: Any = _MISSING,
             error: str | None = None, **extra: Any) -> dict[str, Any]:
        return self.append(process, "info", f, value, key=key, error=error, **extra)

    def close(self) -> None:
        with self._lock:
            if self._owns and not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_history(path: str | os.PathLike[str], events: Iterable[dict[str, Any]]) -> None:
    """Write events as JSONL exactly as given (used by tests and tools)."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev, separators=(",", ":"), default=_json_default) + "\n")
