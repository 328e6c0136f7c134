"""The load runner and the etcd driver's HTTP client, through their public interfaces:
the runner against in-process clients (its bookkeeping is the thing under test),
the HTTP client against a real asyncio HTTP server on a loopback port."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from etcd_driver import HttpConnection, HttpError, parse_response

from meshraft.bench import (
    BenchError,
    BenchUnavailable,
    LoadSpec,
    Progress,
    format_table,
    make_key,
    percentile,
    run_load,
)


class SleepyKV:
    """A dict behind an await, with an optional failure every ``fail_every`` calls."""

    def __init__(self, store: dict[bytes, bytes], fail_every: int = 0) -> None:
        self.store = store
        self.fail_every = fail_every
        self.calls = 0
        self.closed = False

    async def _tick(self) -> None:
        self.calls += 1
        await asyncio.sleep(0.001)
        if self.fail_every and self.calls % self.fail_every == 0:
            raise ConnectionError("injected")

    async def put(self, key: bytes, value: bytes) -> None:
        await self._tick()
        self.store[key] = value

    async def get(self, key: bytes, serializable: bool = False) -> bytes | None:
        await self._tick()
        return self.store.get(key)

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        await self._tick()
        if self.store.get(key) != expected:
            return False
        self.store[key] = new
        return True

    async def close(self) -> None:
        self.closed = True


def factory_for(store: dict, made: list, fail_every: int = 0):
    async def make(i: int) -> SleepyKV:
        c = SleepyKV(store, fail_every)
        made.append(c)
        return c
    return make


@pytest.mark.parametrize("ops", ["put", "get", "serializable-get", "mixed", "cas"])
async def test_every_op_runs_and_reports_sane_numbers(ops: str) -> None:
    store: dict[bytes, bytes] = {}
    made: list[SleepyKV] = []
    spec = LoadSpec(ops=ops, clients=4, duration=0.3, warmup=0.05, keyspace=50)
    r = await run_load(factory_for(store, made), spec, system="fake")
    assert r.ops > 0 and r.errors == 0, r.error_kinds
    assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert r.ops_per_s == pytest.approx(r.ops / 0.3)
    assert all(c.closed for c in made) and len(made) == 4
    assert all(len(k) == 16 for k in store)
    if ops in ("get", "serializable-get", "mixed"):
        assert len(store) >= 50  # preloaded so gets find values
    doc = json.loads(r.to_json())
    assert {"ops_per_s", "p50_ms", "p99_ms"} <= doc.keys()
    assert "fake" in format_table([r])


async def test_failures_are_counted_not_fatal() -> None:
    made: list[SleepyKV] = []
    spec = LoadSpec(ops="put", clients=2, duration=0.3, warmup=0)
    r = await run_load(factory_for({}, made, fail_every=3), spec)
    assert r.ops > 0 and r.errors > 0
    assert r.error_kinds == {"ConnectionError": r.errors}


async def test_max_ops_bounds_the_run() -> None:
    made: list[SleepyKV] = []
    spec = LoadSpec(ops="put", clients=3, duration=30, warmup=0, max_ops=20)
    r = await run_load(factory_for({}, made), spec)
    assert 1 <= r.ops <= 20 + 3
    assert sum(c.calls for c in made) <= 20 + 3


async def test_clients_that_cannot_connect_are_reported() -> None:
    async def refuse(i: int):
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(BenchUnavailable, match="could not connect 2 of 2"):
        await run_load(refuse, LoadSpec(clients=2, duration=0.1))


@pytest.mark.parametrize("bad", [
    {"ops": "scan"}, {"clients": 0}, {"duration": 0}, {"key_size": 2, "keyspace": 1000},
    {"value_size": 0}, {"max_ops": 0}, {"warmup": -1},
])
def test_bad_parameters_are_rejected(bad: dict) -> None:
    with pytest.raises(BenchError):
        LoadSpec(**bad).validate()


def test_keys_and_percentiles() -> None:
    assert make_key(7, 16) == b"k000000000000007"
    assert percentile([], 50) == 0.0
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([5], 99) == 5


def test_parse_response_shapes() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert parse_response(ok) == (200, {"content-length": "5"}, b"hello", len(ok))
    assert parse_response(ok[:-1]) is None
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Le") is None
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nNEXT")
    status, _, body, used = parse_response(chunked)
    assert (status, body, chunked[used:]) == (200, b"abcde", b"NEXT")
    assert parse_response(chunked[:-8]) is None
    for bad in (b"SMTP 200\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n\r\nbody without a length"):
        with pytest.raises(HttpError):
            parse_response(bad)


async def test_http_connection_keeps_alive_and_reconnects() -> None:
    """A real server: requests reuse one connection until the server closes it."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                reply = json.dumps({"echo": body.decode(), "conn": connections}).encode()
                close = b"close" in body
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(reply)).encode()
                             + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n"
                             + reply)
                await writer.drain()
                if close:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = HttpConnection("127.0.0.1", port, timeout=5)
    try:
        answers = [json.loads((await conn.post("/x", b"n%d" % i))[1]) for i in range(3)]
        assert [a["echo"] for a in answers] == ["n0", "n1", "n2"]
        assert {a["conn"] for a in answers} == {1}
        status, body = await conn.post("/x", b"close")
        assert status == 200 and json.loads(body)["conn"] == 1
        status, body = await conn.post("/x", b"again")
        assert json.loads(body) == {"echo": "again", "conn": 2}
    finally:
        await conn.close()
        server.close()
        await server.wait_closed()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_in_a_log() -> None:
    tty = _Tty()
    bar = Progress(10, "put", stream=tty)
    bar.update(5, 1234, 2468.0, "measure")
    bar.update(10, 2500, 2500.0, "measure")
    bar.done()
    out = tty.getvalue()
    # two redraws, and tqdm's last one when the bar closes
    assert out.startswith("\rput [") and out.count("\r") == 3 and out.endswith("\n")
    assert "1,234 ops" in out and "##############################]" in out

    log = io.StringIO()  # not a terminal: a line now and then, not a redraw
    bar = Progress(10, "get", stream=log)
    for t in (0.25, 0.5, 1, 2, 10):
        bar.update(t, 1, 1.0, "measure")
    assert "\r" not in log.getvalue() and 1 <= log.getvalue().count("\n") <= 3

    quiet = io.StringIO()
    bar = Progress(10, "x", stream=quiet, enabled=False)
    bar.update(10, 1, 1.0, "measure")
    bar.done()
    assert quiet.getvalue() == ""
