"""etcd 3.4's side of the watch benchmark: a :class:`meshraft.bench_watch.WatchDriver`
over etcd's JSON gateway.

- Writes: ``POST /v3/kv/put`` through :class:`etcd_driver.HttpConnection` (the
  revision comes from the response header).
- Watches: ``POST /v3/watch`` with ``{"create_request": {"key", "range_end",
  "start_revision"}}`` (base64 keys; ``range_end`` is the prefix with its last byte
  plus one, etcd's prefix convention). The gateway answers with one chunked HTTP
  response that never ends: each chunk one JSON object and a newline,
  ``{"result": {"header": {...}, "created": true}}`` first, then
  ``{"result": {"header": {"revision": "R"}, "events": [{"kv": {..., "mod_revision":
  "R"}}, ...]}}`` per batch of events (int64s as strings; a PUT event has no
  ``"type"``, a DELETE has ``"type": "DELETE"``).
- One HTTP connection per watcher (an HTTP/1.1 stream holds its connection), as the
  meshraft side uses one client connection per watcher.

Why a raw asyncio stream and not aiohttp: this is measuring equipment on the same
two cores as the servers, and at hundreds of thousands of deliveries per second
what the client spends per event is taken from the system under test (see
``etcd_driver``'s docstring: aiohttp cost ~5x this repository's own client per
request). The stream protocol here does no more than a client must: undo the
chunked framing, split lines, ``json.loads`` each message (as any etcd client
decodes each response) and hand each event's ``mod_revision`` on.

It never touches an etcd it did not start (the cluster comes from
``etcd_driver.EtcdCluster``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Sequence

from etcd_driver import EtcdError, HttpConnection

log = logging.getLogger("bench.watch.etcd")

MAX_PENDING = 16 << 20  # bytes of a not yet complete message/chunk: a protocol error past it


class WatchStreamError(Exception):
    """The watch stream broke: HTTP error, bad framing, a cancel from etcd."""


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with ``prefix``"."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\x00"  # every key


class ChunkedLines:
    """Undo HTTP/1.1 chunked framing of an endless body and split it into lines.
    ``feed`` returns the complete lines so far (without the newline)."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.body = bytearray()
        self.need = -1  # bytes left in the current chunk (+2 for its CRLF); -1: read a size
        self.ended = False

    def feed(self, data: bytes) -> list[bytes]:
        raw = self.raw
        raw += data
        pos = 0
        while True:
            if self.need < 0:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    if len(raw) - pos > 1024:
                        raise WatchStreamError("bad chunk header")
                    break
                text = bytes(raw[pos:end]).split(b";", 1)[0].strip()
                try:
                    size = int(text, 16)
                except ValueError:
                    raise WatchStreamError(f"bad chunk size {text[:20]!r}") from None
                if size > MAX_PENDING:
                    raise WatchStreamError("chunk too large")
                pos = end + 2
                if size == 0:
                    self.ended = True
                    break
                self.need = size + 2
            else:
                take = min(self.need, len(raw) - pos)
                if take <= 0:
                    break
                self.body += raw[pos:pos + take]
                self.need -= take
                pos += take
                if self.need == 0:
                    if self.body[-2:] != b"\r\n":
                        raise WatchStreamError("chunk not followed by CRLF")
                    del self.body[-2:]
                    self.need = -1
        del raw[:pos]
        if len(self.body) > MAX_PENDING:
            raise WatchStreamError("message too large")
        if b"\n" not in self.body:
            return []
        *lines, rest = bytes(self.body).split(b"\n")
        self.body = bytearray(rest)
        return [line for line in lines if line.strip()]


def message_revisions(msg: dict) -> list[int]:
    """The mod_revision of every event in one gateway watch message; raises
    :class:`WatchStreamError` for an error or a cancel."""
    if "error" in msg:
        raise WatchStreamError(f"etcd watch error: {msg['error']}")
    res = msg.get("result", {})
    if res.get("canceled"):
        raise WatchStreamError(f"watch canceled: {res.get('cancel_reason', '')} "
                               f"(compact_revision {res.get('compact_revision', '0')})")
    return [int(ev["kv"]["mod_revision"]) for ev in res.get("events", ())]


class _WatchProtocol(asyncio.Protocol):
    """One watch stream on its own connection."""

    def __init__(self, watcher: int, on_event: Callable[[int, int], None]) -> None:
        self.watcher = watcher
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.in_body = False
        self.lines = ChunkedLines()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.created = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            if not self.in_body:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.head) > 64 * 1024:
                        raise WatchStreamError("response headers too large")
                    return
                head = bytes(self.head[:end]).decode("latin-1")
                status = head.split(" ", 2)[1] if " " in head else "?"
                if status != "200":
                    raise WatchStreamError(f"HTTP {status}: {bytes(self.head[end + 4:])[:200]!r}")
                if "transfer-encoding: chunked" not in head.lower():
                    raise WatchStreamError("watch response is not chunked")
                data = bytes(self.head[end + 4:])
                self.head.clear()
                self.in_body = True
            on_event, w = self.on_event, self.watcher
            for line in self.lines.feed(data):
                msg = json.loads(line)
                if not self.created.done() and msg.get("result", {}).get("created"):
                    self.created.set_result(None)
                for rev in message_revisions(msg):
                    on_event(w, rev)
            if self.lines.ended:
                raise WatchStreamError("watch stream ended")
        except (WatchStreamError, ValueError, KeyError, TypeError) as exc:
            self._fail(exc if isinstance(exc, WatchStreamError)
                       else WatchStreamError(f"bad watch message: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(WatchStreamError(f"connection lost: {exc!r}" if exc
                                    else "connection closed"))

    def _fail(self, exc: Exception) -> None:
        for f in (self.created, self.done):
            if not f.done():
                f.set_exception(exc)
                f.exception()  # marks it retrieved: whoever awaits it still gets it
        if self.transport is not None:
            self.transport.close()


class EtcdWatchDriver:
    """The watch benchmark's etcd driver; watcher/writer ``i`` talks to member
    ``i % n``."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], timeout: float) -> None:
        self.eps = list(endpoints)
        self.timeout = timeout
        self.writers: dict[int, HttpConnection] = {}

    async def put(self, writer: int, key: bytes, value: bytes) -> int:
        conn = self.writers.get(writer)
        if conn is None:
            host, port = self.eps[writer % len(self.eps)]
            conn = self.writers[writer] = HttpConnection(host, port, self.timeout)
        body = json.dumps({"key": base64.b64encode(key).decode(),
                           "value": base64.b64encode(value).decode()}).encode()
        status, resp = await conn.post("/v3/kv/put", body)
        if status != 200:
            raise EtcdError(f"put: HTTP {status}: {resp[:200]!r}")
        return int(json.loads(resp)["header"]["revision"])

    async def watch(self, watcher: int, prefix: bytes, start_revision: int,
                    on_event: Callable[[int, int], None]) -> None:
        host, port = self.eps[watcher % len(self.eps)]
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            transport, proto = await loop.create_connection(
                lambda: _WatchProtocol(watcher, on_event), host, port)
        try:
            body = json.dumps({"create_request": {
                "key": base64.b64encode(prefix).decode(),
                "range_end": base64.b64encode(prefix_range_end(prefix)).decode(),
                "start_revision": str(start_revision)}}).encode()
            transport.write(b"POST /v3/watch HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
                            + b"\r\nContent-Type: application/json\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(proto.created)
            await proto.done
        finally:
            transport.close()

    async def close(self) -> None:
        for c in self.writers.values():
            await c.close()
        self.writers.clear()


ETCD_DRIVER = "watch_etcd:EtcdWatchDriver"
