"""``meshraft endpoint health``: ask every member whether it is healthy.

This module owns the ``endpoint`` command group (registered in ``meshraft.cli``). It
finds each member's health URL through the client protocol: ``status`` reports
``metrics`` (the HOST:PORT a member started with ``serve --metrics`` serves
``/health`` on), and the command GETs ``http://HOST:PORT/health`` (etcd's JSON:
``{"health": "true"}``, else ``"false"`` with a reason). A member started without
``--metrics`` is checked the way etcdctl does it: a linearizable ``get`` of the key
``health`` through the client port (its absence is fine). ``--metrics-endpoints``
asks given HTTP addresses directly (what a load balancer would probe).

Exit codes (meshraft.cli's): 0 every endpoint is healthy, 2 usage error, 3 at least one
is unhealthy or unreachable. It only reads; it never changes a member.
"""

# ruff: noqa: ASYNC109  (a per-check timeout is the command's own --timeout)

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import click

__all__ = ["EndpointHealth", "check_client_endpoint", "check_health_url", "endpoint_group"]

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 2, 3
MAX_HEALTH_BODY = 4096  # bytes of a /health answer we read


@dataclass
class EndpointHealth:
    """One endpoint's answer, as ``--json`` prints it (etcdctl's fields, and ours)."""

    endpoint: str
    health: bool
    took: str
    error: str = ""
    health_url: str | None = None  # the URL asked; None when checked by a client read


def _took(t0: float) -> str:
    return f"{(time.monotonic() - t0) * 1000:.1f}ms"


async def check_health_url(session: Any, hostport: str, timeout: float,
                           endpoint: str | None = None) -> EndpointHealth:
    """GET http://HOSTPORT/health and judge its etcd-style JSON answer."""
    import aiohttp

    url = f"http://{hostport}/health"
    t0 = time.monotonic()
    name = endpoint or hostport
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.content.read(MAX_HEALTH_BODY)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return EndpointHealth(name, False, _took(t0), f"{url}: {exc or type(exc).__name__}",
                              url)
    try:
        body = json.loads(raw)
        healthy = body.get("health") == "true"
        reason = str(body.get("reason") or "")
    except (ValueError, AttributeError):
        return EndpointHealth(name, False, _took(t0), f"{url} answered {resp.status} with "
                              "something that is not health JSON", url)
    if healthy and resp.status == 200:
        return EndpointHealth(name, True, _took(t0), "", url)
    return EndpointHealth(name, False, _took(t0), reason or f"HTTP {resp.status}", url)


async def check_client_endpoint(session: Any, endpoint: str, timeout: float,
                                security: dict[str, Any]) -> EndpointHealth:
    """Find ``endpoint``'s health URL through ``status`` and ask it (or, with no
    metrics served, do a linearizable read through the client port)."""
    from meshraft.kv.client import AsyncClient, MeshraftError

    t0 = time.monotonic()
    try:
        async with AsyncClient([endpoint], timeout=timeout, retry_refused=False,
                               **security) as c:
            st = await c.status()
            metrics = st.get("metrics")
            if isinstance(metrics, str) and metrics:
                return await check_health_url(session, metrics,
                                              max(0.1, timeout - (time.monotonic() - t0)),
                                              endpoint)
            await c.get(b"health")  # linearizable: needs a leader and a quorum
    except MeshraftError as exc:
        return EndpointHealth(endpoint, False, _took(t0), exc.message)
    return EndpointHealth(endpoint, True, _took(t0))


async def _check_all(endpoints: list[str], urls: list[str], timeout: float,
                     security: dict[str, Any]) -> list[EndpointHealth]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        checks = [check_health_url(session, u, timeout) for u in urls]
        checks += [check_client_endpoint(session, e, timeout, security) for e in endpoints]
        return list(await asyncio.gather(*checks))


def _split(text: str, what: str) -> list[str]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(f"{item!r} is not HOST:PORT", param_hint=what)
        out.append(item)
    if not out:
        raise click.BadParameter("no endpoints given", param_hint=what)
    return out


@click.group(name="endpoint")
def endpoint_group() -> None:
    """Ask members about themselves (health)."""


@endpoint_group.command(name="health")
@click.option("--endpoints", metavar="HOST:PORT,...",
              help="Client addresses of members [env MESHRAFT_ENDPOINTS; default: the "
                   "cluster in ./meshraft-data, else 127.0.0.1:2379].")
@click.option("--metrics-endpoints", metavar="HOST:PORT,...",
              help="Ask these /health addresses (serve --metrics) directly instead.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds each endpoint may take to answer.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--cacert", envvar="MESHRAFT_CACERT", type=click.Path(dir_okay=False, exists=True),
              help="Use TLS and verify the server's certificate with this CA bundle.")
@click.option("--cert", envvar="MESHRAFT_CERT", type=click.Path(dir_okay=False, exists=True),
              help="Client certificate for mutual TLS (with --key).")
@click.option("--key", envvar="MESHRAFT_KEY", type=click.Path(dir_okay=False, exists=True),
              help="Private key of --cert.")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
              help="Send the client token in this file [env MESHRAFT_TOKEN holds the token].")
def endpoint_health(endpoints: str | None, metrics_endpoints: str | None, timeout: float,
                    as_json: bool, cacert: str | None, cert: str | None, key: str | None,
                    token_file: str | None) -> None:
    """Check every endpoint's health (exit 3 if any is unhealthy).

    Each member is asked through its client port where it serves /health (serve
    --metrics), and that is asked; a member without --metrics is checked with a
    linearizable read, as etcdctl does."""
    from meshraft.client_args import client_security_kwargs

    urls: list[str] = []
    eps: list[str] = []
    if metrics_endpoints:
        urls = _split(metrics_endpoints, "--metrics-endpoints")
    if endpoints or not metrics_endpoints:
        if not endpoints:
            from meshraft.cli import default_endpoints  # at call time: cli imports us

            endpoints = default_endpoints()
        eps = _split(endpoints, "--endpoints")
    try:
        security = client_security_kwargs(cacert, cert, key, token_file)
    except ValueError as exc:
        click.echo(f"meshraft: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    results = asyncio.run(_check_all(eps, urls, timeout, security))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in results], sort_keys=True))
    else:
        for r in results:
            if r.health:
                click.echo(f"{r.endpoint} is healthy: took = {r.took}")
            else:
                click.echo(f"{r.endpoint} is unhealthy: took = {r.took}, error: {r.error}",
                           err=True)
    sys.exit(EXIT_OK if all(r.health for r in results) else EXIT_UNAVAILABLE)
