"""The ``meshraft`` command: serve a member, run a local cluster, and talk to one.

This module owns the commands: argument parsing, output formatting and exit
codes. The wiring of a member (mesh router or UDP socket, Raft node, kv server)
is ``meshraft.member``'s; ``serve`` turns its flags into a ``MemberConfig`` and
runs it. It never reaches into raft, mesh or kv internals, and it never prints a
traceback for a user error: errors are one line on stderr.

Why this module is over 600 lines: it is the one place every command, flag and
exit code is declared (click decorators and help texts are most of it); each
command is short and its logic lives in the layer it drives.

Exit codes: 0 ok, 1 the operation's own "no" (key absent, cas mismatch, revision
compacted), 2 usage or input error (also: unauthorized, TLS misconfigured, future
revision), 3 unavailable or outcome unknown.

Client-port security flags: ``serve --client-cert/--client-key`` (TLS),
``--trusted-ca`` (also require client certificates: mutual TLS),
``--client-token-file``; client commands take ``--cacert``, ``--cert``,
``--key`` (like etcdctl) and ``--token-file`` (or ``MESHRAFT_TOKEN``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from meshraft import __version__
from meshraft.kv.compactor import DEFAULT_RETENTION
from meshraft.kv.state_machine import (
    APPLY_MAX_KEY,
    APPLY_MAX_VALUE,
    DEFAULT_MAX_KEY,
    DEFAULT_MAX_VALUE,
)
from meshraft.kv.txn import APPLY_MAX_TXN_OPS, DEFAULT_MAX_TXN_OPS
from meshraft.localcluster import ClusterNotReady, LocalCluster, MemberAddr, plan_members

if TYPE_CHECKING:
    from meshraft.member import MemberConfig

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

DEFAULT_ENDPOINT = "127.0.0.1:2379"
DEFAULT_DATA_DIR = "meshraft-data"
CLUSTER_FILE = "cluster.json"
# With no --client, a member serves clients on its peer port + this offset.
CLIENT_PORT_OFFSET = 1000

log = logging.getLogger("meshraft.cli")


class _Main(click.Group):
    """The command group, with usage errors as one line on stderr (exit 2)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            names, ctx = [], exc.ctx
            while ctx is not None and ctx.parent is not None:
                names.append(ctx.info_name or "")
                ctx = ctx.parent
            cmd = " ".join(["meshraft", *reversed(names)])
            fail(f"{exc.format_message()} (see '{cmd} --help')", EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", EXIT_UNAVAILABLE)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshraft")
def main() -> None:
    """meshraft: a linearizable, replicated key-value store.

    \b
    Start a local cluster:   meshraft cluster --nodes 3
    Then, in another shell:  meshraft put greeting hello
                             meshraft get greeting
    """


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"meshraft {__version__}")


# -- helpers ------------------------------------------------------------------------------------


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"meshraft: {message}", err=True)
    sys.exit(code)


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{what} {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_peers(text: str) -> dict[str, tuple[str, int]]:
    peers: dict[str, tuple[str, int]] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        pid, sep, addr = item.partition("=")
        pid = pid.strip()
        if not sep or not pid:
            raise click.BadParameter(f"peer {item!r} is not ID=HOST:PORT", param_hint="--peers")
        if pid in peers:
            raise click.BadParameter(f"peer id {pid!r} given twice", param_hint="--peers")
        peers[pid] = parse_hostport(addr, f"peer {pid}'s address")
    if not peers:
        raise click.BadParameter("no peers given", param_hint="--peers")
    return peers


def arg_bytes(text: str, what: str) -> bytes:
    """A command-line argument as UTF-8 bytes; non-UTF-8 input is a usage error."""
    try:
        return text.encode("utf-8")  # undecodable argv bytes arrive as lone surrogates
    except UnicodeEncodeError:
        fail(f"{what} is not valid UTF-8", EXIT_USAGE)


def show_bytes(data: bytes) -> dict[str, Any]:
    try:
        return {"value": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value": None, "value_base64": base64.b64encode(data).decode()}


def show_key(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def default_endpoints() -> str:
    """MESHRAFT_ENDPOINTS, else the endpoints of a `meshraft cluster` run from this
    directory, else 127.0.0.1:2379."""
    env = os.environ.get("MESHRAFT_ENDPOINTS")
    if env:
        return env
    cluster = Path(DEFAULT_DATA_DIR) / CLUSTER_FILE
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        members = json.loads(cluster.read_text())["members"]
        return ",".join(m["client"] for m in members)
    return DEFAULT_ENDPOINT


def _stash(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a security option in ctx.meta (commands need not take it as an argument)."""
    ctx.meta[f"meshraft.{param.name}"] = value
    return value


def client_options(f: Callable) -> Callable:
    file_type = click.Path(dir_okay=False, exists=True)
    for name, env, help_ in [  # dests are prefixed: `put KEY` has an argument named key
        ("--token-file", None, "Send the client token in this file with every request "
                               "[env MESHRAFT_TOKEN holds the token itself]."),
        ("--key", "MESHRAFT_KEY", "Private key of --cert."),
        ("--cert", "MESHRAFT_CERT", "Client certificate for mutual TLS (with --key)."),
        ("--cacert", "MESHRAFT_CACERT",
         "Use TLS and verify the server's certificate with this CA bundle."),
    ]:
        f = click.option(name, "tls_" + name[2:].replace("-", "_"), envvar=env, type=file_type,
                         expose_value=False,
                         callback=_stash, is_eager=False, help=help_)(f)
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)
    f = click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                     help="Seconds the operation may take, retries included.")(f)
    f = click.option("--endpoints", metavar="HOST:PORT,...",
                     help="Client addresses of members [env MESHRAFT_ENDPOINTS; default: the "
                          "cluster in ./meshraft-data, else 127.0.0.1:2379].")(f)
    return f


def run_client(endpoints: str | None, timeout: float,
               op: Callable[[Any], Coroutine[Any, Any, int]], first_only: bool = False) -> None:
    """Run one client operation and exit with the code it (or its error) maps to."""
    from meshraft.kv import client as kc

    text = endpoints or default_endpoints()
    try:
        eps = kc.parse_endpoints(text)
    except ValueError as exc:
        fail(f"--endpoints: {exc}", EXIT_USAGE)
    if first_only:
        eps = eps[:1]
    security = client_security()

    async def go() -> int:
        # Asking one given member: if nothing listens there, say so now.
        async with kc.AsyncClient(eps, timeout=timeout, retry_refused=not first_only,
                                  **security) as c:
            return await op(c)

    try:
        code = asyncio.run(go())
    except kc.OutcomeUnknown as exc:
        fail(f"outcome unknown: {exc.message}", EXIT_UNAVAILABLE)
    except kc.Compacted as exc:  # the history asked for is gone: a "no", like not-found
        fail(exc.message, EXIT_NO)
    except kc.BadRequest as exc:
        fail(exc.message, EXIT_USAGE)
    except kc.Unauthorized as exc:
        fail(exc.message if exc.message.startswith("unauthorized") else
             f"unauthorized: {exc.message}", EXIT_USAGE)
    except kc.TLSFailure as exc:
        fail(exc.message, EXIT_USAGE)
    except kc.Unavailable as exc:
        fail(exc.message, EXIT_UNAVAILABLE)
    except kc.MeshraftError as exc:
        fail(exc.message, EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_UNAVAILABLE)
    sys.exit(code)


def client_security() -> dict[str, Any]:
    """The AsyncClient arguments from --cacert/--cert/--key/--token-file/MESHRAFT_TOKEN."""
    from meshraft.client_args import client_security_kwargs

    meta = click.get_current_context().meta
    cacert, cert, key, token_file = (meta.get(f"meshraft.tls_{n}")
                                     for n in ("cacert", "cert", "key", "token_file"))
    try:
        return client_security_kwargs(cacert, cert, key, token_file)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def emit(as_json: bool, obj: dict[str, Any], text: str | None) -> None:
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    elif text is not None:
        click.echo(text)


# -- client commands ----------------------------------------------------------------------------


@main.command()
@click.argument("key")
@click.argument("value", required=False)
@click.option("--lease", "lease_id", type=click.IntRange(0, 2**63 - 1), default=0,
              help="Attach KEY to this lease (`meshraft lease grant`): it is deleted when "
                   "the lease is revoked or expires. Exit 1 if there is no such lease.")
@client_options
def put(key: str, value: str | None, lease_id: int, endpoints: str | None, timeout: float,
        as_json: bool) -> None:
    """Set KEY to VALUE (read from stdin if VALUE is omitted)."""
    k = arg_bytes(key, "KEY")
    if value is None:
        if sys.stdin is None or sys.stdin.isatty():
            fail("missing VALUE (give it as an argument or on stdin)", EXIT_USAGE)
        v = sys.stdin.buffer.read()
    else:
        v = arg_bytes(value, "VALUE")

    async def op(c) -> int:
        from meshraft.kv.errors import LeaseNotFound

        try:
            r = await c.put(k, v, lease=lease_id)
        except LeaseNotFound as exc:
            click.echo(f"meshraft: {exc.message}", err=True)
            return EXIT_NO
        emit(as_json, {"key": show_key(k), "revision": r.revision,
                       "create_revision": r.create_revision, "version": r.version},
             f"OK (revision {r.revision})")
        return EXIT_OK

    run_client(endpoints, timeout, op)


REV_HELP = ("Read the store as it was at this revision [default: now]; exit 1 if it was "
            "compacted, 2 if it is in the future.")


@main.command()
@click.argument("key")
@click.option("--serializable", is_flag=True,
              help="Read this member's local copy (faster, possibly stale).")
@click.option("--rev", type=click.IntRange(min=0), default=0, help=REV_HELP)
@client_options
def get(key: str, serializable: bool, rev: int, endpoints: str | None, timeout: float,
        as_json: bool) -> None:
    """Print KEY's value (exit 1 if it is absent)."""
    k = arg_bytes(key, "KEY")

    async def op(c) -> int:
        kv = await c.get(k, serializable=serializable, revision=rev or None)
        if kv is None:
            if as_json:
                emit(True, {"key": show_key(k), "found": False}, None)
            click.echo(f"meshraft: key not found: {show_key(k)}", err=True)
            return EXIT_NO
        if as_json:
            emit(True, {"key": show_key(k), "found": True, **show_bytes(kv.value),
                        "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
                        "version": kv.version}, None)
        else:
            sys.stdout.buffer.write(kv.value + b"\n")
            sys.stdout.flush()
        return EXIT_OK

    run_client(endpoints, timeout, op)


@main.command()
@click.argument("key")
@client_options
def delete(key: str, endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Delete KEY; prints how many keys were deleted (0 or 1)."""
    k = arg_bytes(key, "KEY")

    async def op(c) -> int:
        r = await c.delete(k)
        emit(as_json, {"key": show_key(k), "deleted": r.deleted, "revision": r.revision},
             str(r.deleted))
        return EXIT_OK

    run_client(endpoints, timeout, op)


@main.command()
@click.argument("key")
@click.argument("values", nargs=-1, metavar="EXPECTED NEW")
@click.option("--absent", is_flag=True,
              help="Set only if KEY does not exist (then give NEW only).")
@client_options
def cas(key: str, values: tuple[str, ...], absent: bool, endpoints: str | None,
        timeout: float, as_json: bool) -> None:
    """Set KEY to NEW only if its value is EXPECTED (exit 1 if it is not)."""
    k = arg_bytes(key, "KEY")
    if absent:
        if len(values) != 1:
            fail("with --absent, give KEY NEW", EXIT_USAGE)
        expected, new = None, arg_bytes(values[0], "NEW")
    else:
        if len(values) != 2:
            fail("give KEY EXPECTED NEW (or --absent KEY NEW)", EXIT_USAGE)
        expected, new = arg_bytes(values[0], "EXPECTED"), arg_bytes(values[1], "NEW")

    async def op(c) -> int:
        r = await c.cas(k, expected, new)
        if r.succeeded:
            emit(as_json, {"key": show_key(k), "succeeded": True, "revision": r.revision},
                 f"OK (revision {r.revision})")
            return EXIT_OK
        if as_json:
            emit(True, {"key": show_key(k), "succeeded": False, "revision": r.revision,
                        "mod_revision": r.mod_revision}, None)
        what = "exists" if expected is None else (
            "is absent" if r.mod_revision == 0 else "has another value")
        click.echo(f"meshraft: cas mismatch: {show_key(k)} {what}", err=True)
        return EXIT_NO

    run_client(endpoints, timeout, op)


@main.command(name="list")
@click.argument("prefix", default="")
@click.option("--serializable", is_flag=True, help="Read this member's local copy.")
@click.option("--keys-only", is_flag=True, help="Print keys, not values.")
@click.option("--rev", type=click.IntRange(min=0), default=0, help=REV_HELP)
@client_options
def list_(prefix: str, serializable: bool, keys_only: bool, rev: int, endpoints: str | None,
          timeout: float, as_json: bool) -> None:
    """List keys starting with PREFIX (all keys if omitted), sorted."""
    pre = arg_bytes(prefix, "PREFIX")

    async def op(c) -> int:
        kvs = await c.list(pre, serializable=serializable, revision=rev or None)
        if as_json:
            emit(True, {"count": len(kvs), "kvs": [
                {"key": show_key(kv.key), **show_bytes(kv.value),
                 "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
                 "version": kv.version} for kv in kvs]}, None)
            return EXIT_OK
        out = sys.stdout.buffer
        for kv in kvs:
            out.write(kv.key if keys_only else kv.key + b"\t" + kv.value)
            out.write(b"\n")
        out.flush()
        return EXIT_OK

    run_client(endpoints, timeout, op)


@main.command()
@click.argument("revision", type=click.IntRange(min=0))
@client_options
def compact(revision: int, endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Drop the history before REVISION on every member (through the log).

    Reads and watches at REVISION and later still work; earlier ones get
    "compacted". Exit 1 if REVISION is at or below the compaction point already,
    2 if it is above the current revision."""

    async def op(c) -> int:
        r = await c.compact(revision)
        emit(as_json, {"revision": r.revision, "compact_revision": r.compact_revision},
             f"compacted at revision {r.compact_revision} (current revision {r.revision})")
        return EXIT_OK

    run_client(endpoints, timeout, op)


def normalise_status(st: dict[str, Any]) -> dict[str, Any]:
    """The fields `status --json` promises (docs/architecture.md, "status"), whatever else
    the node adds."""
    out = dict(st)
    out.setdefault("id", st.get("node_id"))
    for k in ("role", "term", "leader", "commit_index", "applied_index"):
        out.setdefault(k, None)
    if out["role"] == "pre-candidate":  # the documented roles: leader, follower, candidate, learner
        out["role"], out["raft_role"] = "candidate", "pre-candidate"
    mesh = out.get("mesh")
    if not isinstance(mesh, dict):
        mesh = {}
    mesh.setdefault("peers", [])
    mesh.setdefault("routes", {})
    out["mesh"] = mesh
    return out


def format_status(st: dict[str, Any]) -> str:
    lines = [
        f"id:             {st['id']}",
        f"role:           {st['role']}",
    ]
    if st.get("failed"):  # fail-stop (a bug) or a failed disk: it serves no more
        lines.append(f"FAILED:         {st['failed']}")
    lines += [
        f"term:           {st['term']}",
        f"leader:         {st['leader'] if st['leader'] is not None else '(none)'}",
        *([f"transfer:       leadership moving to {st['lead_transferee']}"]
          if st.get("lead_transferee") else []),
        f"commit index:   {st['commit_index']}",
        f"applied index:  {st['applied_index']}",
    ]
    kv = st.get("kv") or {}
    if kv:
        lines.append(f"kv revision:    {kv.get('revision')} ({kv.get('keys')} keys)")
    progress = st.get("progress") or {}
    if progress:
        def match(v: Any) -> Any:
            return v.get("match", v) if isinstance(v, dict) else v
        lines.append("match index:    " + ", ".join(
            f"{p}={match(v)}" for p, v in sorted(progress.items())))
    mesh = st["mesh"]
    if st.get("transport"):
        lines.append(f"transport:      {st['transport']}")
    peers = mesh.get("peers") or []
    names = [p.get("name", str(p)) if isinstance(p, dict) else str(p) for p in peers]
    lines.append("mesh peers:     " + (", ".join(names) or "(none)"))
    routes = mesh.get("routes") or {}
    lines.append("mesh routes:    " + (", ".join(
        f"{dst} via {hop}" for dst, hop in sorted(routes.items())) or "(none)"))
    if st.get("last_error") and st.get("last_error") != st.get("failed"):
        lines.append(f"last error:     {st['last_error']}")
    return "\n".join(lines)


@main.command()
@client_options
def status(endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Show one member's role, term, leader, indexes, and mesh peers and routes.

    It asks the first of --endpoints only, and fails at once (exit 3) if nothing
    listens there."""

    async def op(c) -> int:
        st = normalise_status(await c.status())
        if as_json:
            click.echo(json.dumps(st, sort_keys=True, default=str))
        else:
            click.echo(format_status(st))
        return EXIT_OK

    run_client(endpoints, timeout, op, first_only=True)


# -- member -------------------------------------------------------------------------------------


@main.group()
def member() -> None:
    """List and change the cluster's members (one change at a time)."""


@member.command(name="list")
@client_options
def member_list(endpoints: str | None, timeout: float, as_json: bool) -> None:
    """List voters and learners: id, peer address, role and match index (how far the
    leader knows its log matches; shown when the leader answers, else '-')."""

    async def op(c) -> int:
        from meshraft.kv.client import AsyncClient, MeshraftError

        m = await c.members()
        if m.get("role") != "leader" and len(c.endpoints) > 1:
            # Only the leader knows match indexes: ask the other endpoints for it.
            for ep in c.endpoints:
                try:
                    async with AsyncClient([ep], timeout=min(timeout, 2.0), ssl=c.ssl,
                                           token=c.token) as one:
                        other = await one.members()
                except MeshraftError:
                    continue
                if other.get("role") == "leader":
                    m = other
                    break
        match = m.get("match") or {}
        rows = [{"id": i, "role": "voter", "address": m["addresses"].get(i)}
                for i in m["voters"]]
        rows += [{"id": i, "role": "learner", "address": m["addresses"].get(i)}
                 for i in m["learners"]]
        for r in rows:
            r["leader"] = r["id"] == m.get("leader")
            r["match"] = match.get(r["id"])
            if isinstance(r["address"], list):
                r["address"] = ":".join(str(x) for x in r["address"])
        if as_json:
            emit(True, {"members": rows, "leader": m.get("leader"),
                        "last_index": m.get("last_index"), "answered_by": m.get("answered_by"),
                        "removed_ids": sorted(m.get("removed_ids") or {}),
                        "lead_transferee": m.get("lead_transferee")}, None)
        else:
            click.echo("ID\tROLE\tADDRESS\tMATCH")
            for r in rows:
                mark = "\tleader" if r["leader"] else ""
                shown = "-" if r["match"] is None else r["match"]
                click.echo(f"{r['id']}\t{r['role']}\t{r['address'] or '-'}\t{shown}{mark}")
            if m.get("lead_transferee"):
                click.echo(f"(leadership transfer to {m['lead_transferee']} in progress)")
            if not match:
                click.echo(f"(match indexes are known to the leader; member "
                           f"{m.get('answered_by')} answered)")
        return EXIT_OK

    run_client(endpoints, timeout, op)


@member.command(name="add")
@click.argument("member_id", metavar="ID")
@click.argument("address", metavar="ADDR")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner (promote later).")
@client_options
def member_add(member_id: str, address: str, learner: bool, endpoints: str | None,
               timeout: float, as_json: bool) -> None:
    """Add member ID whose peer address is ADDR (HOST:PORT); then start it with --join."""
    parse_hostport(address, "ADDR")

    async def op(c) -> int:
        await c.add_member(member_id, address, learner=learner)
        emit(as_json, {"id": member_id, "address": address, "learner": learner},
             f"added {'learner' if learner else 'voter'} {member_id} ({address})")
        return EXIT_OK

    run_client(endpoints, timeout, op)


@member.command(name="promote")
@click.argument("member_id", metavar="ID")
@client_options
def member_promote(member_id: str, endpoints: str | None, timeout: float,
                   as_json: bool) -> None:
    """Make learner ID a voter."""

    async def op(c) -> int:
        await c.promote_member(member_id)
        emit(as_json, {"id": member_id, "promoted": True}, f"promoted {member_id}")
        return EXIT_OK

    run_client(endpoints, timeout, op)


@member.command(name="remove")
@click.argument("member_id", metavar="ID")
@client_options
def member_remove(member_id: str, endpoints: str | None, timeout: float,
                  as_json: bool) -> None:
    """Remove member ID from the cluster."""

    async def op(c) -> int:
        await c.remove_member(member_id)
        emit(as_json, {"id": member_id, "removed": True}, f"removed {member_id}")
        return EXIT_OK

    run_client(endpoints, timeout, op)


# -- serve --------------------------------------------------------------------------------------


def setup_logging(level: str, node_id: str, fmt: str = "text") -> None:
    """Every record on stderr names the member, as text or JSON lines (meshraft.ops)."""
    from meshraft.ops.logformat import configure

    configure(level, node_id, fmt)


@main.command()
@click.option("--id", "node_id", required=True, help="This member's id (also its mesh name).")
@click.option("--peers", "peers_text", required=True, metavar="ID=HOST:PORT,...",
              help="The initial members and their mesh (peer) addresses, this one included.")
@click.option("--listen", metavar="HOST:PORT",
              help="Peer address to listen on [default: this id's entry in --peers].")
@click.option("--client", "client_addr", metavar="HOST:PORT",
              help=f"Client address [default: 127.0.0.1 and the peer port + "
                   f"{CLIENT_PORT_OFFSET}].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help=f"Where this member keeps its log and snapshots [default: "
                   f"./{DEFAULT_DATA_DIR}/node-ID].")
@click.option("--transport", type=click.Choice(["mesh", "udp"]), default="mesh",
              show_default=True, help="What Raft's datagrams travel over.")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Authenticate and encrypt the mesh with the password in this file.")
@click.option("--join", is_flag=True,
              help="Join a running cluster (added with `member add`) instead of bootstrapping.")
@click.option("--snapshot-entries", type=click.IntRange(min=10), default=None,
              help="Snapshot the state after this many log entries [default: 10000].")
@click.option("--client-cert", type=click.Path(dir_okay=False, exists=True),
              help="Serve clients over TLS with this certificate (PEM; with --client-key).")
@click.option("--client-key", type=click.Path(dir_okay=False, exists=True),
              help="Private key of --client-cert (PEM).")
@click.option("--trusted-ca", type=click.Path(dir_okay=False, exists=True),
              help="Require client certificates signed by this CA (mutual TLS; needs "
                   "--client-cert).")
@click.option("--client-token-file", type=click.Path(dir_okay=False, exists=True),
              help="Every client request must carry the token in this file (clients: "
                   "--token-file or MESHRAFT_TOKEN).")
@click.option("--max-key-bytes", type=click.IntRange(1, APPLY_MAX_KEY),
              default=DEFAULT_MAX_KEY, show_default=True,
              help="Largest key this member accepts from clients.")
@click.option("--max-value-bytes", type=click.IntRange(0, APPLY_MAX_VALUE),
              default=DEFAULT_MAX_VALUE, show_default=True,
              help="Largest value this member accepts from clients.")
@click.option("--max-txn-ops", type=click.IntRange(1, APPLY_MAX_TXN_OPS),
              default=DEFAULT_MAX_TXN_OPS, show_default=True,
              help="Most compares, and most ops per branch, of one transaction this "
                   "member accepts from clients (etcd's --max-txn-ops).")
@click.option("--auto-compact-retention", type=click.IntRange(min=0),
              default=DEFAULT_RETENTION, show_default=True, metavar="N",
              help="The leader compacts history to about the last N revisions (checked "
                   "every second); 0: never (history grows until `meshraft compact`).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: one object per line (time, level, member, term, logger, message, "
                   "fields).")
@click.option("--metrics", "metrics_addr", metavar="HOST:PORT",
              help="Serve Prometheus /metrics and /health, /livez, /readyz over HTTP here "
                   "(port 0: any free port; `meshraft status` shows it).")
@click.option("--max-leases", type=click.IntRange(1, 1_000_000), default=100_000,
              show_default=True, metavar="N",
              help="Refuse a lease grant through this member once N leases exist.")
@click.option("--max-watches-per-connection", type=click.IntRange(1, 1_000_000),
              default=1024, show_default=True, metavar="N",
              help="Refuse a client connection's watch beyond its N-th.")
@click.option("--watch-buffer-events", type=click.IntRange(1, 1_000_000), default=1000,
              show_default=True, metavar="N",
              help="Events one watch may have waiting for a client that reads too slowly; "
                   "beyond, the watch is cancelled with slow-watcher (the client resumes).")
@click.option("--watch-progress-interval", type=click.FloatRange(0.05, 3600),
              default=5.0, show_default=True, metavar="SECONDS",
              help="How often an idle watch is told the member's revision.")
@click.option("--loop", "loop_name", type=click.Choice(["auto", "asyncio", "uvloop"]),
              default="auto", show_default=True,
              help="Event loop. uvloop (pip install 'meshraft[fast]') spends less CPU per "
                   "message and wake-up, which shortens every write; auto uses it when "
                   "it is installed.")
def serve(node_id: str, peers_text: str, listen: str | None, client_addr: str | None,
          data_dir: Path | None, transport: str, password_file: Path | None, join: bool,
          snapshot_entries: int | None, client_cert: str | None, client_key: str | None,
          trusted_ca: str | None, client_token_file: str | None, max_key_bytes: int,
          max_value_bytes: int, log_level: str, log_format: str,
          metrics_addr: str | None, auto_compact_retention: int, max_leases: int,
          max_txn_ops: int, max_watches_per_connection: int, watch_buffer_events: int,
          watch_progress_interval: float, loop_name: str) -> None:
    """Run one member until SIGTERM or SIGINT.

    Clients are served on 127.0.0.1 unless --client says otherwise; listening
    elsewhere without --client-token-file (or the mesh without --password-file)
    is logged as a WARNING. The size limits are checked where a request comes in,
    so members may differ (apply accepts up to 64 KiB keys and 32 MiB values)."""
    peers = parse_peers(peers_text)
    if node_id not in peers and not listen:
        raise click.BadParameter(f"--peers has no entry for this id {node_id!r}; add it or "
                                 "give --listen", param_hint="--peers")
    listen_addr = parse_hostport(listen, "--listen") if listen else peers[node_id]
    if client_addr:
        client = parse_hostport(client_addr, "--client")
    else:
        port = listen_addr[1] + CLIENT_PORT_OFFSET
        if not 0 < port < 65536:
            raise click.BadParameter("give --client (the default port would be out of range)")
        client = ("127.0.0.1", port)
    password: bytes | None = None
    if password_file is not None:
        from meshraft.mesh.crypto import read_password_file

        try:
            password = read_password_file(str(password_file))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--password-file") from None
    client_tls, client_token = _client_security(client_cert, client_key, trusted_ca,
                                                client_token_file)
    data_dir = data_dir or Path(DEFAULT_DATA_DIR) / f"node-{node_id}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create --data-dir {data_dir}: {exc}", EXIT_USAGE)
    metrics = parse_hostport(metrics_addr, "--metrics") if metrics_addr else None
    setup_logging(log_level, node_id, log_format)
    from meshraft.kv.watch import WatchLimits
    from meshraft.member import MemberConfig, StartupError

    config = MemberConfig(
        node_id=node_id, peers=peers, listen=listen_addr, client=client, data_dir=data_dir,
        transport=transport, password=password, join=join, snapshot_entries=snapshot_entries,
        client_tls=client_tls, client_token=client_token,
        limits=(max_key_bytes, max_value_bytes, max_txn_ops), metrics=metrics,
        auto_compact_retention=auto_compact_retention, max_leases=max_leases,
        watch=WatchLimits(max_watches_per_connection=max_watches_per_connection,
                          buffer_events=watch_buffer_events,
                          progress_interval=watch_progress_interval))
    run = event_loop_runner(loop_name)
    try:
        run(run_member(config))
    except KeyboardInterrupt:
        pass
    except StartupError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)


def _client_security(cert: str | None, key: str | None, trusted_ca: str | None,
                     token_file: str | None) -> tuple[Any, bytes | None]:
    """serve's TLS context and token for the client port (usage errors exit 2)."""
    from meshraft.kv.tls import read_token_file, server_context

    ctx = None
    if (cert is None) != (key is None):
        raise click.BadParameter("--client-cert and --client-key go together",
                                 param_hint="--client-cert")
    if trusted_ca is not None and cert is None:
        raise click.BadParameter("mutual TLS needs the server's own --client-cert and "
                                 "--client-key", param_hint="--trusted-ca")
    if cert is not None:
        try:
            ctx = server_context(cert, key, trusted_ca)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise click.BadParameter(f"cannot load the TLS files: {exc}",
                                     param_hint="--client-cert") from None
    token = None
    if token_file is not None:
        try:
            token = read_token_file(token_file)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--client-token-file") from None
    return ctx, token


def event_loop_runner(name: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """``asyncio.run`` or ``uvloop.run`` for ``serve --loop NAME`` (auto: uvloop when
    it is installed). Exits with a usage error if uvloop is asked for and missing."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                fail("--loop uvloop: uvloop is not installed (pip install 'meshraft[fast]')",
                     EXIT_USAGE)
        else:
            return uvloop.run
    return asyncio.run


async def run_member(config: MemberConfig) -> None:
    """Run one member until SIGTERM or SIGINT (the wiring is meshraft.member's)."""
    from meshraft.member import Member

    loop = asyncio.get_running_loop()
    log.info("event loop: %s", type(loop).__module__.split(".")[0])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from meshraft.ops.logformat import set_term_source

    async with Member(config) as m:
        node = m.node
        set_term_source(lambda: node.term)
        click.echo(f"meshraft node {config.node_id}: clients on {m.client_endpoint}, "
                   f"peers on {config.listen[0]}:{config.listen[1]} ({config.transport}), "
                   f"data in {config.data_dir}", err=False)
        sys.stdout.flush()
        await stop.wait()
        log.info("stopping")
    log.info("stopped")


# -- cluster ------------------------------------------------------------------------------------


def plan_cluster(data_dir: Path, nodes: int, base_port: int | None,
                 transport: str) -> dict[str, Any]:
    """The cluster's members and ports: as saved in the data dir, or new ones (then saved)."""
    path = data_dir / CLUSTER_FILE
    if path.exists():
        try:
            plan = json.loads(path.read_text())
            members = plan["members"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"{path} is unreadable ({exc}); move it away to start a new cluster", EXIT_USAGE)
        if len(members) != nodes:
            fail(f"{data_dir} holds a {len(members)}-node cluster; run with --nodes "
                 f"{len(members)} or use another --data-dir", EXIT_USAGE)
        if base_port is not None and plan.get("base_port") not in (None, base_port):
            fail(f"{data_dir} holds a cluster on base port {plan.get('base_port')}; "
                 "drop --base-port or use another --data-dir", EXIT_USAGE)
        if plan.get("transport", "mesh") != transport:
            fail(f"{data_dir} holds a cluster using --transport {plan.get('transport')}",
                 EXIT_USAGE)
        return plan
    members = []
    # without --base-port: ports from the OS, all distinct (meshraft.localcluster)
    free = [] if base_port is not None else [
        int(port) for m in plan_members(nodes) for port in (m.peer.rsplit(":", 1)[1],
                                                          m.client.rsplit(":", 1)[1])]
    for i in range(1, nodes + 1):
        if base_port is not None:
            peer_port, client_port = base_port + 2 * (i - 1), base_port + 2 * (i - 1) + 1
            if client_port > 65535:
                fail("--base-port is too high for that many nodes", EXIT_USAGE)
        else:
            peer_port, client_port = free[2 * (i - 1)], free[2 * (i - 1) + 1]
        members.append({"id": str(i), "peer": f"127.0.0.1:{peer_port}",
                        "client": f"127.0.0.1:{client_port}"})
    plan = {"nodes": nodes, "base_port": base_port, "transport": transport, "members": members}
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=2) + "\n")
    os.replace(tmp, path)
    return plan


@main.command()
@click.option("--nodes", type=click.IntRange(1, 15), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1024, 65000),
              help="Peer port of node 1; node i uses BASE+2(i-1) (peer) and BASE+2(i-1)+1 "
                   "(client). Default: free ports, kept in the data dir for the next run.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(DEFAULT_DATA_DIR), show_default=True)
@click.option("--transport", type=click.Choice(["mesh", "udp"]), default="mesh",
              show_default=True)
def cluster(nodes: int, base_port: int | None, data_dir: Path, transport: str) -> None:
    """Run a local cluster in the foreground; Ctrl-C stops every member.

    Run it again with the same --data-dir and it resumes with the same data."""
    plan = plan_cluster(data_dir, nodes, base_port, transport)
    members = [MemberAddr(m["id"], m["peer"], m["client"]) for m in plan["members"]]
    endpoints = ",".join(m.client for m in members)
    # No session of their own: a Ctrl-C at the terminal reaches the members too. They
    # get SIGTERM if this process dies without stopping them (PR_SET_PDEATHSIG).
    local = LocalCluster(members, data_dir, transport=transport, new_session=False,
                         pdeathsig=signal.SIGTERM)
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    click.echo(f"meshraft cluster: {nodes} node{'s' if nodes > 1 else ''} "
               f"({transport}), data in {data_dir}")
    try:
        for m in members:
            local.start(m.id)
            click.echo(f"  node {m.id}: client {m.client}  peer {m.peer}  "
                       f"log {local.log_path(m.id)}")
        click.echo(f"endpoints: {endpoints}")
        try:
            ready = asyncio.run(local.wait_ready(30.0, fail_on_exit=False,
                                                 stopping=lambda: stopping,
                                                 status_timeout=0.5, poll=0.2))
        except ClusterNotReady:
            ready = None
        if ready is not None:
            click.echo(f"cluster ready: leader is node {ready}")
        else:
            click.echo("no leader yet; see the member logs", err=True)
        here = "" if data_dir.resolve() == Path(DEFAULT_DATA_DIR).resolve() else (
            f" --endpoints {endpoints}")
        click.echo(f"try:  meshraft put greeting hello{here} && meshraft get greeting{here}")
        click.echo(f"from elsewhere:  export MESHRAFT_ENDPOINTS={endpoints}")
        click.echo("Ctrl-C stops the cluster.")
        sys.stdout.flush()
        reported: set[str] = set()
        while not stopping:
            time.sleep(0.2)
            for m in local.exited():
                if m not in reported:
                    reported.add(m)
                    click.echo(f"node {m} exited with code {local.procs[m].returncode}; see "
                               f"{local.log_path(m)}", err=True)
            if len(reported) == len(members):
                fail("every member exited", EXIT_UNAVAILABLE)
    finally:
        click.echo("stopping the cluster ...")
        local.stop(10.0, on_kill=lambda p: click.echo(
            f"node {p.name.removeprefix('node')} did not stop in time; killing it", err=True))
        click.echo("stopped.")


# `meshraft bench`: the load generator and report live in meshraft.bench.
from meshraft.bench import bench_command  # noqa: E402

main.add_command(bench_command, "bench")
# `meshraft snapshot save|restore|status`, `meshraft move-leader`: meshraft.cli_maint.
from meshraft.cli_maint import build_commands  # noqa: E402

for _name, _command in build_commands(sys.modules[__name__]).items():
    main.add_command(_command, _name)
# `meshraft endpoint health`: meshraft.cli_ops.
from meshraft.cli_ops import endpoint_group  # noqa: E402

main.add_command(endpoint_group, "endpoint")
# `meshraft lease grant|keepalive|revoke|ttl|list`: meshraft.cli_lease.
from meshraft.cli_lease import build_group as build_lease_group  # noqa: E402

main.add_command(build_lease_group(sys.modules[__name__]), "lease")
# `meshraft txn`: meshraft.cli_txn.
from meshraft.cli_txn import build_command as build_txn_command  # noqa: E402

main.add_command(build_txn_command(sys.modules[__name__]), "txn")
# `meshraft watch`: meshraft.cli_watch.
from meshraft.cli_watch import build_command as build_watch_command  # noqa: E402

main.add_command(build_watch_command(sys.modules[__name__]), "watch")
# `meshraft lock NAME -- CMD`, `meshraft elect NAME VALUE|--listen`: meshraft.cli_recipes.
from meshraft.cli_recipes import build_commands as build_recipe_commands  # noqa: E402

for _name, _command in build_recipe_commands(sys.modules[__name__]).items():
    main.add_command(_command, _name)


if __name__ == "__main__":
    main()
