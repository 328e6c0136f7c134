"""Fuzzing client requests against a real `meshraft serve` process: random frames
(request-shaped maps with random ops and argument types, random msgpack, raw
bytes with good or bad framing). Every reply is a protocol reply with a known
error code, the server keeps serving, and the store changes only when a write
was answered ok."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secfixtures import start_member

from meshraft.kv import protocol as p

ints = st.integers(-(1 << 63), (1 << 64) - 1)
scalars = (st.none() | st.booleans() | ints | st.floats() | st.text(max_size=16)
           | st.binary(max_size=40))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=5)
                      | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=16)
keys = st.sampled_from([b"k", b"", b"\x00", b"k" * 5000]) | st.binary(max_size=16) | values
ops = st.sampled_from(["put", "get", "delete", "cas", "list", "status", "ping", "PUT", ""]) | (
    st.text(max_size=8).filter(lambda o: not o.startswith("member"))) | scalars
ARGS = ["key", "value", "expected", "prefix", "after", "limit", "serializable", "timeout",
        "cid", "seq", "ack", "token"]
requests = st.builds(
    lambda rid, op, args, extra: {**({} if rid is ... else {"id": rid}),
                                  **({} if op is ... else {"op": op}), **args, **extra},
    st.just(...) | ints | scalars, st.just(...) | ops,
    st.dictionaries(st.sampled_from(ARGS), keys | values | st.floats(0.01, 1.0), max_size=6),
    st.dictionaries(st.text(max_size=5), values, max_size=2))
# Mostly well-typed requests, so the fuzz also gets past the checks and writes.
plausible = st.builds(
    lambda rid, op, key, value, expected, ser, extra: {
        "id": rid, "op": op, "key": key, "value": value, "expected": expected,
        "serializable": ser, "timeout": 2.0, **extra},
    st.integers(0, 1 << 32), st.sampled_from(["put", "get", "delete", "cas", "list", "ping"]),
    st.binary(min_size=1, max_size=8) | keys, st.binary(max_size=16) | scalars,
    st.none() | st.binary(max_size=4), st.booleans() | scalars,
    st.dictionaries(st.sampled_from(["cid", "seq", "ack", "prefix", "limit"]),
                    st.integers(0, 5) | st.text(min_size=1, max_size=4) | scalars, max_size=3))
requests = plausible | requests
# member_add/remove would really change the membership (they are valid admin ops)
requests = requests.filter(lambda r: not (isinstance(r.get("op"), str)
                                          and r["op"].startswith("member")))
bodies = (requests.map(lambda r: msgpack.packb(r, use_bin_type=True))
          | values.map(lambda v: msgpack.packb(v, use_bin_type=True)) | st.binary(max_size=100))
streams = st.one_of(
    st.lists(bodies, min_size=1, max_size=4).map(
        lambda bs: b"".join(struct.pack(">I", len(b)) + b for b in bs)),
    st.binary(max_size=64),  # raw: the first 4 bytes are a length, whatever they say
    st.tuples(bodies, st.integers(1, 8)).map(  # a frame cut short
        lambda t: struct.pack(">I", len(t[0]) + t[1]) + t[0]),
)
WRITES = ("put", "delete", "cas")


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    from conftest import ProcessManager, wait_until

    pm = ProcessManager(tmp_path_factory.mktemp("fuzz-client"))
    try:
        m = start_member(pm)

        def has_leader() -> bool:
            (r,) = asyncio.run(exchange(m.endpoint, p.encode_frame({"id": 1, "op": "status"})))
            return r["ok"] and r["result"].get("leader") is not None

        wait_until(has_leader, 30, what="the member to lead itself")
        yield m
    finally:
        pm.stop_all()


async def exchange(endpoint: str, data: bytes) -> list[dict]:
    """Send ``data``, end our side, and collect every reply frame until the server closes."""
    host, port = endpoint.rsplit(":", 1)
    r, w = await asyncio.open_connection(host, int(port))
    replies = []
    try:
        w.write(data)
        w.write_eof()
        async with asyncio.timeout(15):
            while True:
                try:
                    payload = await p.read_frame(r, 1 << 24)
                except asyncio.IncompleteReadError:
                    break
                replies.append(p.decode_body(payload, 1 << 24, max_items=1 << 16))
    except ConnectionError:
        pass
    finally:
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()
    return replies


async def revision(endpoint: str) -> int:
    (reply,) = await exchange(endpoint, p.encode_frame({"id": 1, "op": "status"}))
    assert reply["ok"], reply
    return reply["result"]["kv"]["revision"]


def test_fuzzed_requests(member):
    loop = asyncio.new_event_loop()
    seen: Counter[str] = Counter()
    try:
        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
        @given(streams)
        def one(data: bytes) -> None:
            async def go() -> None:
                before = await revision(member.endpoint)
                replies = await exchange(member.endpoint, data)
                after = await revision(member.endpoint)
                for rep in replies:
                    assert isinstance(rep.get("ok"), bool), rep
                    seen["ok" if rep["ok"] else rep["error"]] += 1
                    if not rep["ok"]:
                        assert rep.get("error") in p.ERROR_CODES, rep
                        assert isinstance(rep.get("message"), str) and rep["message"], rep
                ok_writes = [rep for rep in replies if rep["ok"] and "revision" in rep["result"]
                             and rep["result"]["revision"] > before]
                if after != before:
                    assert ok_writes, f"revision {before} -> {after} without an ok write"
                assert member.proc.alive(), member.proc.log()[-2000:]

            loop.run_until_complete(go())

        one()
        print("replies:", dict(seen))
        assert seen[p.BAD_REQUEST] and seen["ok"]  # the fuzz reached both sides
        # Still serving properly after the storm.
        rev = loop.run_until_complete(revision(member.endpoint))
        (put,) = loop.run_until_complete(exchange(member.endpoint, p.encode_frame(
            {"id": 9, "op": "put", "key": b"after-fuzz", "value": b"fine"})))
        assert put["ok"] and put["result"]["revision"] == rev + 1
        (got,) = loop.run_until_complete(exchange(member.endpoint, p.encode_frame(
            {"id": 10, "op": "get", "key": b"after-fuzz"})))
        assert got["ok"] and got["result"]["kv"]["value"] == b"fine"
        assert "Traceback" not in member.proc.log()
    finally:
        loop.close()
