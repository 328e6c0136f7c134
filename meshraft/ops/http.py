"""The metrics and health HTTP server of one member (``serve --metrics HOST:PORT``).

This module owns the HTTP side of operating a member, with aiohttp:

- ``GET /metrics``: the member's Prometheus metrics (``meshraft.ops.metrics``).
- ``GET /health``: etcd-compatible ``{"health": "true"}`` (200) when the member knows a
  leader and a linearizable read barrier (read index) completes within
  ``health_timeout``; else ``{"health": "false", "reason": "..."}`` (503). Probes that
  arrive while one barrier is in flight share its answer, so a probe flood costs Raft
  one read at a time.
- ``GET /livez``: the process's event loop answers and the member has not stopped
  serving after an internal error (fail-stop) or a failed disk (503 then: restart it).
- ``GET /readyz``: the member knows a leader and has applied everything up to the
  commit index it knew when asked (waits up to ``health_timeout`` for that).

Bad input: only GET (any other method: 405), no request body (the size bound is
``MAX_BODY`` bytes, header lines are bounded too), at most ``max_connections``
connections at once (beyond: 503 and the connection is closed at once), and the
answers never hold keys or values. It must never block the event loop nor let a probe
change the member's state. See docs/architecture.md#operations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any, cast

from aiohttp import web

from meshraft.ops.metrics import MemberMetrics

__all__ = ["DEFAULT_HEALTH_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "OpsServer"]

log = logging.getLogger("meshraft.ops.http")

DEFAULT_HEALTH_TIMEOUT = 2.0
DEFAULT_MAX_CONNECTIONS = 64
MAX_BODY = 1024  # bytes: none of the endpoints takes a body
MAX_LINE = 4096  # bytes of the request line
MAX_FIELD = 4096  # bytes of one header
PATHS = ("/metrics", "/health", "/livez", "/readyz")

_REFUSAL_BODY = b'{"health": "false", "reason": "too many connections"}'
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(_REFUSAL_BODY), _REFUSAL_BODY))


class _Refuse(asyncio.Protocol):
    """A connection over the bound: told so and closed, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed, not isinstance(asyncio.WriteTransport): uvloop's transports are
        # not subclasses of asyncio's, and serve runs on uvloop when it is installed.
        cast(asyncio.WriteTransport, transport).write(_REFUSAL)
        transport.close()


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


class OpsServer:
    """Serves /metrics, /health, /livez and /readyz for one member.

    ``node``: the Raft node (``leader_id``, ``read_barrier``, ``commit_index``,
    ``wait_applied``, ``fail_stopped``, ``status``); ``metrics``: its MemberMetrics.
    ``await start()`` binds (port 0: any free port; ``address`` then says which),
    ``await stop()`` closes every connection."""

    def __init__(self, node: Any, metrics: MemberMetrics | None, *, host: str = "127.0.0.1",
                 port: int = 0, health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.node = node
        self.metrics = metrics
        self.host, self.port = host, port
        self.health_timeout = health_timeout
        self.max_connections = max_connections
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None
        self._health: asyncio.Future | None = None  # the /health check in flight, shared

    @property
    def address(self) -> str:
        """``HOST:PORT`` the server listens on."""
        return f"{self.host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        for path, handler in (("/metrics", self._metrics), ("/health", self._health_h),
                              ("/livez", self._livez), ("/readyz", self._readyz)):
            app.router.add_route("*", path, handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     handler_args={"max_line_size": MAX_LINE,
                                                   "max_field_size": MAX_FIELD})
        await self._runner.setup()
        server = self._runner.server
        assert server is not None

        def factory() -> asyncio.Protocol:
            if len(server.connections) >= self.max_connections:
                self.refused += 1
                return _Refuse()
            return server()

        loop = asyncio.get_running_loop()
        try:
            if sock is not None:
                self._server = await loop.create_server(factory, sock=sock)
            else:
                self._server = await loop.create_server(factory, self.host, self.port,
                                                        reuse_address=True)
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        bound = self._server.sockets[0].getsockname()
        self.host, self.port = bound[0], bound[1]

    async def stop(self) -> None:
        server, runner = self._server, self._runner
        self._server = self._runner = None
        if server is not None:
            server.close()
        if runner is not None:
            await runner.shutdown()
            await runner.cleanup()
        if server is not None:
            await server.wait_closed()

    # -- handlers ----------------------------------------------------------------------
    @staticmethod
    def _only_get(request: web.Request) -> web.Response | None:
        if request.method != "GET":
            return web.Response(status=405, headers={"Allow": "GET"},
                                text=f"{request.path} answers GET only\n")
        if request.content_length or request.body_exists:
            return web.Response(status=400, text="no request body expected\n")
        return None

    async def _metrics(self, request: web.Request) -> web.Response:
        refused = self._only_get(request)
        if refused is not None:
            return refused
        if self.metrics is None:
            return web.Response(status=404, text="metrics are off\n")
        body, ctype = self.metrics.exposition()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        return resp

    def _failed(self) -> str | None:
        """Why the member stopped serving (fail-stop or a failed disk), or None."""
        failed = self.node.fail_stopped
        if failed is None:
            failed = (self.node.status().get("failed")
                      if self.node.leader_id is None else None)
        if failed is None and self.node.role == "removed":
            failed = "this member was removed from the cluster"
        return failed

    async def _livez(self, request: web.Request) -> web.Response:
        refused = self._only_get(request)
        if refused is not None:
            return refused
        failed = self._failed()
        if failed is not None:
            return _json(503, {"health": "false", "reason": f"member stopped serving: {failed}"})
        return _json(200, {"health": "true"})

    async def _readyz(self, request: web.Request) -> web.Response:
        refused = self._only_get(request)
        if refused is not None:
            return refused
        failed = self._failed()
        if failed is not None:
            return _json(503, {"health": "false", "reason": f"member stopped serving: {failed}"})
        if self.node.leader_id is None:
            return _json(503, {"health": "false", "reason": "no leader"})
        commit = self.node.commit_index
        try:
            await self.node.wait_applied(commit, timeout=self.health_timeout)
        except Exception as exc:
            return _json(503, {"health": "false",
                               "reason": f"not applied up to commit index {commit}: {exc}"})
        return _json(200, {"health": "true"})

    async def _health_h(self, request: web.Request) -> web.Response:
        refused = self._only_get(request)
        if refused is not None:
            return refused
        if self._health is None or self._health.done():
            self._health = asyncio.ensure_future(self._check_health())
        ok, reason = await asyncio.shield(self._health)
        if ok:
            return _json(200, {"health": "true"})
        return _json(503, {"health": "false", "reason": reason})

    async def _check_health(self) -> tuple[bool, str]:
        failed = self._failed()
        if failed is not None:
            return False, f"member stopped serving: {failed}"
        if self.node.leader_id is None:
            return False, "no leader"
        t0 = time.monotonic()
        try:
            await self.node.read_barrier(timeout=self.health_timeout)
        except Exception as exc:
            return False, f"linearizable read failed: {exc}"
        took = time.monotonic() - t0
        if took > 0.5:
            log.info("health check: the read barrier took %.3fs", took)
        return True, ""
