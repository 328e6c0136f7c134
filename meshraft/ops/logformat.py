"""Log records as text or JSON lines, every one naming the member.

This module owns the format of a member's log (``serve --log-format text|json``): a
filter on the handler stamps every record — whatever logger wrote it: mesh, raft, kv,
aiohttp, asyncio — with the member id (``member``) and, once the node runs, its Raft
term (``term``). ``text`` is the classic line (time, level, [member], logger, message);
``json`` is one object per line with ``time`` (UTC, ISO 8601), ``level``, ``member``,
``term`` (when known), ``logger``, ``message``, the fields a caller passed with
``extra={...}``, and ``exception`` (the traceback) when there is one, so a log shipper
can index them. It must never raise from a log call: a field that JSON cannot carry is
written as its ``repr``. See docs/architecture.md#operations.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["FORMATS", "JsonFormatter", "MemberFilter", "configure", "set_term_source"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(member)s] %(name)s: %(message)s"

# The attributes every LogRecord has; anything else on a record came from extra={...}.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "member", "term", "taskName"}


class MemberFilter(logging.Filter):
    """Stamps ``member`` and ``term`` on every record (a handler filter: it sees the
    records of every logger, propagated ones included)."""

    def __init__(self, member: str, term: Callable[[], int | None] | None = None) -> None:
        super().__init__()
        self.member = member
        self.term = term

    def filter(self, record: logging.LogRecord) -> bool:
        record.member = self.member
        term = None
        if self.term is not None:
            try:
                term = self.term()
            except Exception:  # the node is starting or stopped: no term to tell
                term = None
        record.term = term
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "member": getattr(record, "member", None),
        }
        term = getattr(record, "term", None)
        if term is not None:
            out["term"] = term
        out["logger"] = record.name
        out["message"] = record.getMessage()
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=repr, ensure_ascii=False)


_filter: MemberFilter | None = None


def set_term_source(term: Callable[[], int | None] | None) -> None:
    """Where records find the member's current term (the CLI gives the running node's)."""
    if _filter is not None:
        _filter.term = term


def configure(level: str, member: str, fmt: str = "text",
              stream: TextIO | None = None) -> logging.Handler:
    """Send every log record of this process to ``stream`` (stderr) in ``fmt``, stamped
    with ``member``; replaces the root logger's handlers. Returns the handler."""
    global _filter
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (one of {', '.join(FORMATS)})")
    handler = logging.StreamHandler(stream or sys.stderr)
    _filter = MemberFilter(member)
    handler.addFilter(_filter)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
