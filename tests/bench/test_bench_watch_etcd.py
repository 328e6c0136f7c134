"""The etcd side of the watch benchmark, without an etcd: the JSON gateway's
watch stream (chunked HTTP, one JSON object and a newline per chunk) split into
messages however the bytes arrive, events and cancels read from them, and etcd's
prefix range end."""

from __future__ import annotations

import base64
import json

import pytest
from watch_etcd import ChunkedLines, WatchStreamError, message_revisions, prefix_range_end


def chunk(obj: dict) -> bytes:
    body = json.dumps(obj).encode() + b"\n"
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


def event_msg(*revs: int) -> dict:
    return {"result": {"header": {"revision": str(max(revs))}, "events": [
        {"kv": {"key": base64.b64encode(b"p/k").decode(), "mod_revision": str(r),
                "create_revision": "2", "version": "1", "value": "dg=="}} for r in revs]}}


def test_stream_split_at_every_byte_gives_the_same_messages() -> None:
    msgs = [{"result": {"header": {"revision": "1"}, "created": True}},
            event_msg(5), event_msg(6, 7)]
    stream = b"".join(chunk(m) for m in msgs)
    for step in (1, 2, 7, len(stream)):
        p = ChunkedLines()
        got = []
        for i in range(0, len(stream), step):
            got += [json.loads(x) for x in p.feed(stream[i:i + step])]
        assert got == msgs, step
        assert not p.ended
    assert [message_revisions(m) for m in msgs] == [[], [5], [6, 7]]


def test_a_message_split_over_two_chunks_and_the_end_of_the_stream() -> None:
    body = json.dumps(event_msg(9)).encode() + b"\n"
    half = len(body) // 2
    raw = (f"{half:x}\r\n".encode() + body[:half] + b"\r\n"
           + f"{len(body) - half:x};ext=1\r\n".encode() + body[half:] + b"\r\n0\r\n\r\n")
    p = ChunkedLines()
    assert [message_revisions(json.loads(x)) for x in p.feed(raw)] == [[9]]
    assert p.ended


def test_bad_framing_and_cancels_are_errors() -> None:
    with pytest.raises(WatchStreamError, match="chunk size"):
        ChunkedLines().feed(b"zz\r\n")
    with pytest.raises(WatchStreamError, match="CRLF"):
        ChunkedLines().feed(b"2\r\n{}XX")
    with pytest.raises(WatchStreamError, match="compact_revision 40"):
        message_revisions({"result": {"canceled": True, "compact_revision": "40"}})
    with pytest.raises(WatchStreamError, match="etcd watch error"):
        message_revisions({"error": {"grpc_code": 14, "message": "unavailable"}})


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"bench-watch/") == b"bench-watch0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\x00"
