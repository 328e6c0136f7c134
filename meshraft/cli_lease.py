"""``meshraft lease grant|keepalive|revoke|ttl|list``.

This module owns those commands: their arguments, output and exit codes, in
``meshraft.cli``'s style (0 ok; 1 "lease not found"; 2 usage or input error: a TTL
out of range, too many leases; 3 unavailable). Leases themselves are the
cluster's (``meshraft.kv.lease``, ``meshraft.kv.lease_manager``); the commands
only call the client (``AsyncClient.lease_*``). It is imported by
``meshraft.cli``, which registers the group, and borrows cli's client options
and error handling; it never prints a traceback for a user error.
See docs/architecture.md#leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from types import ModuleType
from typing import Any

import click

__all__ = ["build_group"]

# meshraft.cli, given to build_group (cli imports this module, so this module cannot
# import cli at its top: `python -m meshraft.cli` would load it twice).
cli: Any = None


def build_group(cli_module: ModuleType) -> click.Group:
    """The ``lease`` group, built with ``cli_module``'s client options and exit codes."""
    global cli
    cli = cli_module
    group = click.Group(name="lease", help="Leases: keys that live only while a client "
                        "keeps their lease alive (a lease lives at least TTL seconds after "
                        "its last acknowledged keepalive).")
    lease_id = click.argument("lease_id", metavar="ID", type=click.IntRange(1, 2**63 - 1))
    group.add_command(click.command(name="grant")(click.argument(
        "ttl", metavar="TTL", type=int)(cli.client_options(grant))))
    group.add_command(click.command(name="keepalive")(lease_id(click.option(
        "--once", is_flag=True, help="Renew once and exit (default: every TTL/3 seconds "
        "until interrupted).")(cli.client_options(keepalive)))))
    group.add_command(click.command(name="revoke")(lease_id(cli.client_options(revoke))))
    group.add_command(click.command(name="ttl")(lease_id(click.option(
        "--keys", "with_keys", is_flag=True, help="Also list the lease's keys (at most "
        "1000).")(cli.client_options(ttl)))))
    group.add_command(click.command(name="list")(cli.client_options(list_leases)))
    return group


def _not_found(as_json: bool, lease_id: int, message: str) -> int:
    if as_json:
        cli.emit(True, {"id": lease_id, "found": False}, None)
    click.echo(f"meshraft: {message}", err=True)
    return cli.EXIT_NO


def grant(ttl: int, endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Grant a lease of TTL seconds; print its id (attach keys with put --lease ID)."""
    from meshraft.kv.lease import MAX_TTL, MIN_TTL

    if not MIN_TTL <= ttl <= MAX_TTL:
        cli.fail(f"TTL must be {MIN_TTL}..{MAX_TTL} seconds, got {ttl}", cli.EXIT_USAGE)

    async def op(c: Any) -> int:
        g = await c.lease_grant(ttl)
        cli.emit(as_json, {"id": g.id, "ttl": g.ttl}, str(g.id))
        return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)


def keepalive(lease_id: int, once: bool, endpoints: str | None, timeout: float,
              as_json: bool) -> None:
    """Keep lease ID alive until interrupted (or once with --once); exit 0 on Ctrl-C or
    SIGTERM (the lease then lapses after its TTL), 1 once the lease is gone."""
    from meshraft.kv.errors import LeaseNotFound, Unavailable

    async def op(c: Any) -> int:
        stop = asyncio.Event()
        if not once:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                ttl = await c.lease_keepalive(lease_id)
            except LeaseNotFound as exc:
                return _not_found(as_json, lease_id, exc.message)
            except Unavailable as exc:
                if once:
                    raise
                click.echo(f"meshraft: keepalive failed, retrying: {exc.message}", err=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
                continue
            cli.emit(as_json, {"id": lease_id, "ttl": ttl},
                     f"lease {lease_id} kept alive, TTL {ttl}s")
            if once:
                return cli.EXIT_OK
            # A third of the TTL: two more tries before the lease could lapse.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, ttl / 3 - (time.monotonic() - sent))):
                    await stop.wait()
        return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)


def revoke(lease_id: int, endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Revoke lease ID: its keys are deleted in one revision."""
    from meshraft.kv.errors import LeaseNotFound

    async def op(c: Any) -> int:
        try:
            r = await c.lease_revoke(lease_id)
        except LeaseNotFound as exc:
            return _not_found(as_json, lease_id, exc.message)
        cli.emit(as_json, {"id": lease_id, "deleted": r.deleted, "revision": r.revision},
                 f"lease {lease_id} revoked ({r.deleted} key(s) deleted)")
        return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)


def ttl(lease_id: int, with_keys: bool, endpoints: str | None, timeout: float,
        as_json: bool) -> None:
    """Print lease ID's remaining and granted TTL (on the leader's clock)."""
    from meshraft.kv.errors import LeaseNotFound

    async def op(c: Any) -> int:
        try:
            t = await c.lease_ttl(lease_id, keys=with_keys)
        except LeaseNotFound as exc:
            return _not_found(as_json, lease_id, exc.message)
        obj: dict[str, Any] = {"id": t.id, "ttl": t.ttl, "granted_ttl": t.granted_ttl,
                               "remaining": t.remaining, "key_count": t.key_count}
        text = f"lease {t.id}: {t.ttl}s left of {t.granted_ttl}s, {t.key_count} key(s)"
        if t.keys is not None:
            obj["keys"] = [cli.show_key(k) for k in t.keys]
            text += "".join(f"\n{cli.show_key(k)}" for k in t.keys)
        cli.emit(as_json, obj, text)
        return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)


def list_leases(endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Print the id of every live lease."""

    async def op(c: Any) -> int:
        ids = await c.leases()
        cli.emit(as_json, {"leases": ids}, "\n".join(str(i) for i in ids) if ids else None)
        return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)
