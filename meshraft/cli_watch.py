"""``meshraft watch KEY [--prefix] [--rev R] [--prev-kv] [--json]``: print every change.

This module owns that command: its options, the output (etcdctl's: the event type,
then the key and the value on lines of their own, the previous key and value first
with ``--prev-kv``; ``--json``: one object per line) and its exit codes: 0 when
interrupted (Ctrl-C or SIGTERM: the normal end), 1 when the history it needs was
compacted ("compacted at R"), 2 bad input, 3 when no member would serve the watch.
The watch itself (resume on another member, no loss, no duplicate) is
``meshraft.kv.watch_client``'s; this module only prints what it yields. It borrows
``meshraft.cli``'s client options and error handling (see docs/architecture.md#watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from types import ModuleType
from typing import Any

import click

__all__ = ["build_command", "event_json", "event_text"]


def _show(data: bytes) -> dict[str, Any]:
    try:
        return {"value": data.decode("utf-8")}
    except UnicodeDecodeError:
        import base64

        return {"value": None, "value_base64": base64.b64encode(data).decode()}


def _kv_json(kv: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"key": kv.key.decode("utf-8", errors="backslashreplace"),
                           **_show(kv.value), "create_revision": kv.create_revision,
                           "mod_revision": kv.mod_revision, "version": kv.version}
    if getattr(kv, "lease", 0):
        out["lease"] = kv.lease
    return out


def event_json(ev: Any, prev_kv: bool) -> str:
    """One event as one JSON line."""
    obj = {"type": ev.type, **_kv_json(ev)}
    if prev_kv:
        obj["prev_kv"] = _kv_json(ev.prev_kv) if ev.prev_kv is not None else None
    return json.dumps(obj, sort_keys=True)


def event_text(ev: Any, prev_kv: bool) -> bytes:
    """One event as etcdctl prints it: type, [previous key, value,] key, value."""
    lines = [ev.type.encode()]
    if prev_kv and ev.prev_kv is not None:
        lines += [ev.prev_kv.key, ev.prev_kv.value]
    lines += [ev.key, ev.value]
    return b"\n".join(lines) + b"\n"


def build_command(cli: ModuleType) -> click.Command:
    """The ``watch`` command, with ``cli``'s (meshraft.cli) client options and exits."""

    @click.command()
    @click.argument("key")
    @click.option("--prefix", is_flag=True, help="Watch every key that starts with KEY.")
    @click.option("--rev", type=click.IntRange(min=0), default=0,
                  help="Start at this revision (inclusive) [default: from now]; exit 1 if "
                       "it was compacted.")
    @click.option("--prev-kv", is_flag=True, help="Also print each key's previous value.")
    @cli.client_options
    def watch(key: str, prefix: bool, rev: int, prev_kv: bool, endpoints: str | None,
              timeout: float, as_json: bool) -> None:
        """Print every PUT and DELETE on KEY (or under it, with --prefix) until
        interrupted. The watch moves to another member by itself if its member fails,
        without losing or repeating an event."""
        k = cli.arg_bytes(key, "KEY")
        if not k and not prefix:
            cli.fail("KEY must not be empty (give --prefix to watch every key)",
                     cli.EXIT_USAGE)

        async def op(c: Any) -> int:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            w = c.watch(k, prefix=prefix, start_revision=rev or None, prev_kv=prev_kv)
            out = sys.stdout.buffer

            async def follow() -> None:
                async for ev in w:
                    if as_json:
                        out.write(event_json(ev, prev_kv).encode() + b"\n")
                    else:
                        out.write(event_text(ev, prev_kv))
                    out.flush()

            task = asyncio.ensure_future(follow())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.cancel(), 1.0)
                return cli.EXIT_OK
            try:
                task.result()
            except BrokenPipeError:  # `meshraft watch ... | head`
                with contextlib.suppress(OSError):
                    sys.stdout = None  # type: ignore[assignment]
                return cli.EXIT_OK
            return cli.EXIT_OK

        cli.run_client(endpoints, timeout, op)

    return watch
