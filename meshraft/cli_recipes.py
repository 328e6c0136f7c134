"""``meshraft lock NAME -- CMD ARGS...`` and ``meshraft elect NAME VALUE|--listen``.

This module owns those two commands: their arguments, output and exit codes, in
``meshraft.cli``'s style. The recipes themselves are ``meshraft.recipes``; this
module only drives them and the command it runs. It is imported by
``meshraft.cli``, which registers the commands, and borrows cli's client options
and error handling.

- ``lock``: waits for the lock, then runs CMD (in its own session, so that a
  terminal's Ctrl-C reaches it only through this command) with
  ``MESHRAFT_LOCK_TOKEN`` (the fencing token) and ``MESHRAFT_LOCK_KEY`` in its
  environment; releases the lock when CMD ends and exits with CMD's code (128+N
  when a signal N ended it). SIGINT/SIGTERM are passed on to CMD, and the lock is
  released once it ended; before the lock is held they give up the place in the
  queue (exit 130/143). If this command dies (even SIGKILL), CMD gets SIGTERM
  (Linux). If the session expires while CMD runs, CMD gets SIGTERM
  (it no longer holds the lock) and the command exits 1.
- ``elect NAME VALUE``: campaigns, prints one line when it leads, leads until
  SIGINT/SIGTERM (then resigns, exit 0) or until its session expires (exit 1).
- ``elect NAME --listen``: prints each new leader's value, until interrupted.
See docs/architecture.md#recipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from types import ModuleType
from typing import Any

import click

__all__ = ["build_commands"]

cli: Any = None  # meshraft.cli, given to build_commands (see meshraft.cli_lease for why)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def build_commands(cli_module: ModuleType) -> dict[str, click.Command]:
    global cli
    cli = cli_module
    ttl = click.option("--ttl", type=click.IntRange(1, 3600), default=60, show_default=True,
                       help="Seconds of the session's lease: how long the lock (leadership) "
                            "outlives this process if it dies without releasing it.")
    lock_cmd = click.command(
        name="lock", context_settings={"ignore_unknown_options": True})(
        click.argument("name")(click.argument(
            "command", nargs=-1, required=True, type=click.UNPROCESSED)(
            ttl(cli.client_options(lock)))))
    elect_cmd = click.command(name="elect")(
        click.argument("name")(click.argument("value", required=False)(click.option(
            "--listen", is_flag=True, help="Print each new leader's value instead of "
            "campaigning.")(ttl(cli.client_options(elect))))))
    return {"lock": lock_cmd, "elect": elect_cmd}


def _stop_event() -> tuple[asyncio.Event, list[int]]:
    """An event set by SIGINT/SIGTERM, and the signals received (in order)."""
    stop = asyncio.Event()
    got: list[int] = []
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        def on(sig: int = sig) -> None:
            got.append(sig)
            stop.set()
        loop.add_signal_handler(sig, on)
    return stop, got


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t


def lock(name: str, command: tuple[str, ...], ttl: int, endpoints: str | None,
         timeout: float, as_json: bool) -> None:
    """Run COMMAND while holding lock NAME (write: meshraft lock NAME -- CMD ARGS...);
    exits with COMMAND's code. COMMAND sees the fencing token in MESHRAFT_LOCK_TOKEN."""
    from meshraft.localcluster import die_with_parent
    from meshraft.recipes import Lock, Session

    async def op(c: Any) -> int:
        stop, got = _stop_event()
        async with Session(c, ttl) as s:
            lk = Lock(s, name)
            acquiring = asyncio.ensure_future(lk.acquire())
            await _first(asyncio.shield(acquiring), stop.wait())
            if not acquiring.done():
                acquiring.cancel()
                with contextlib.suppress(BaseException):
                    await acquiring
                click.echo("meshraft: interrupted before the lock was acquired", err=True)
                return 128 + got[0]
            token = acquiring.result()
            cli.emit(as_json, {"name": name, "token": token, "key": lk.key.decode()},
                     None)
            click.echo(f"meshraft: lock {name} acquired, token {token}", err=True)
            env = {**os.environ, "MESHRAFT_LOCK_TOKEN": str(token),
                   "MESHRAFT_LOCK_KEY": lk.key.decode("utf-8", "replace")}
            try:
                # Its own session (signals reach it once, through us); SIGTERM if this
                # process dies without releasing (it then no longer holds the lock).
                proc = await asyncio.create_subprocess_exec(
                    *command, env=env, start_new_session=True,
                    preexec_fn=die_with_parent(signal.SIGTERM))
            except OSError as exc:
                await lk.release()
                cli.fail(f"cannot run {command[0]}: {exc.strerror}", 127)
            lost = False
            forwarded = 0
            done = asyncio.ensure_future(proc.wait())
            while not done.done():
                stop.clear()
                await _first(asyncio.shield(done), stop.wait(), s.expired.wait())
                for sig in got[forwarded:]:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
                forwarded = len(got)
                if s.expired.is_set() and not lost and not done.done():
                    lost = True
                    click.echo(f"meshraft: the session expired ({s.reason}); the lock is "
                               f"lost, stopping {command[0]}", err=True)
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
            rc = done.result()
            await lk.release()
            if lost:
                return cli.EXIT_NO
            return rc if rc >= 0 else 128 - rc

    cli.run_client(endpoints, timeout, op)


def elect(name: str, value: str | None, listen: bool, ttl: int, endpoints: str | None,
          timeout: float, as_json: bool) -> None:
    """Campaign in election NAME with VALUE and print when leading (until interrupted,
    then resign); with --listen, print each new leader."""
    from meshraft.recipes import Election, Session

    if listen == (value is not None):
        cli.fail("give either VALUE (to campaign) or --listen", cli.EXIT_USAGE)

    async def op(c: Any) -> int:
        stop, got = _stop_event()
        async with Session(c, ttl) as s:
            e = Election(s, name)
            if listen:
                async def show() -> None:
                    async for ld in e.observe():
                        cli.emit(as_json, {"name": name, "value": ld.value.decode(
                            "utf-8", "replace"), "revision": ld.create_revision,
                            "key": ld.key.decode("utf-8", "replace")},
                            ld.value.decode("utf-8", "replace"))
                        sys.stdout.flush()

                task = asyncio.ensure_future(show())
                await _first(asyncio.shield(task), stop.wait())
                if task.done():
                    task.result()
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                return cli.EXIT_OK
            campaigning = asyncio.ensure_future(e.campaign(value or ""))
            await _first(asyncio.shield(campaigning), stop.wait())
            if not campaigning.done():
                campaigning.cancel()
                with contextlib.suppress(BaseException):
                    await campaigning
                return cli.EXIT_OK
            rev = campaigning.result()
            cli.emit(as_json, {"name": name, "value": value, "revision": rev, "leader": True},
                     f"leading {name} as {value} (revision {rev})")
            sys.stdout.flush()
            await _first(stop.wait(), s.expired.wait())
            if s.expired.is_set() and not got:
                click.echo(f"meshraft: the session expired ({s.reason}); no longer leader",
                           err=True)
                return cli.EXIT_NO
            await e.resign()
            return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)
