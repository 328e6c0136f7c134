"""``meshraft snapshot save|restore|status`` and ``meshraft move-leader``.

This module owns those commands: their flags, output and exit codes (in
``meshraft.cli``'s style: 0 ok, 2 usage or input error — a damaged backup, a
non-empty data dir, an unknown or lagging member —, 3 unavailable). The backup
file format and restoring it are ``meshraft.kv.backup``'s; the download and the
leader move are the client's (``AsyncClient.snapshot``/``move_leader``). It is
imported by ``meshraft.cli`` (which registers the commands) and borrows its
client options and error handling; it never prints a traceback for a user error.
See docs/architecture.md#backups-and-leader-moves.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click

__all__ = ["build_commands"]

# meshraft.cli, given to build_commands (cli imports this module, so this module
# cannot import cli at its top: `python -m meshraft.cli` would load it twice).
cli: Any = None


def build_commands(cli_module: ModuleType) -> dict[str, click.Command]:
    """The commands, by name, built with ``cli_module``'s client options, exit codes and
    error handling (meshraft.cli registers them with ``main.add_command``)."""
    global cli
    cli = cli_module
    group = click.Group(name="snapshot", help="Back up a running cluster to a file, "
                        "inspect a backup, restore a new cluster.")
    file_arg = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    group.add_command(click.command(name="save")(file_arg(cli.client_options(save))))
    group.add_command(click.command(name="status")(file_arg(click.option(
        "--json", "as_json", is_flag=True, help="Machine-readable output.")(status))))
    group.add_command(click.command(name="restore")(file_arg(_restore_options(restore))))
    move = click.command(name="move-leader")(click.argument("member_id", metavar="ID")(
        cli.client_options(move_leader)))
    return {"snapshot": group, "move-leader": move}


def _restore_options(f: Any) -> Any:
    for option in reversed([
        click.option("--data-dir", required=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="The new member's data dir (must not exist, or be empty)."),
        click.option("--id", "node_id", required=True, help="The new member's id."),
        click.option("--peers", "peers_text", required=True, metavar="ID=HOST:PORT,...",
                     help="Every member of the NEW cluster (the same list for each member)."),
        click.option("--cluster-token", default="", metavar="TEXT",
                     help="Mixed into the new cluster's id: restore two clusters from one "
                          "backup on the same addresses with different tokens."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]):
        f = option(f)
    return f


def save(file: Path, endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Stream a consistent snapshot (the state at one revision, history and sessions
    included) from a running member into FILE, with checksums. The member keeps
    serving. FILE appears only once complete and verified (a temp file is renamed).

    Prints the revision and the size."""
    from tqdm import tqdm

    from meshraft.kv.backup import BackupWriter, BadBackup, new_info

    async def op(c: Any) -> int:
        bar: Any = None
        with BackupWriter(file) as writer:
            def sink(info: dict[str, Any], chunk: bytes) -> None:
                nonlocal bar
                if writer.info is None:
                    writer.begin(new_info(
                        revision=info["revision"], keys=info["keys"], data_size=info["size"],
                        data_sha256=info["checksum"],
                        compact_revision=info.get("compact_revision", 0),
                        member=str(info.get("node") or "")))
                    bar = tqdm(total=info["size"], unit="B", unit_scale=True,
                               desc=f"snapshot at revision {info['revision']}",
                               file=sys.stderr, disable=not sys.stderr.isatty())
                writer.write(chunk)
                bar.update(len(chunk))

            try:
                info = await c.snapshot(sink, timeout=timeout)
                if writer.info is None:  # an empty snapshot: nothing was sunk
                    sink(info, b"")
                done = writer.commit()
            except BadBackup as exc:
                cli.fail(f"snapshot save failed, {file} not written: {exc}",
                         cli.EXIT_UNAVAILABLE)
            except OSError as exc:
                cli.fail(f"cannot write {file}: {exc.strerror or exc}", cli.EXIT_USAGE)
            finally:
                if bar is not None:
                    bar.close()
        cli.emit(as_json, {"file": str(file), **done.to_json()},
             f"saved snapshot at revision {done.revision} ({done.keys} "
             f"key{'' if done.keys == 1 else 's'}) from member "
             f"{done.member} to {file}: {done.file_size} bytes, sha256 {done.data_sha256}")
        return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)


def status(file: Path, as_json: bool) -> None:
    """Verify a backup file and print its revision, key count, size and checksum
    (exit 2 if it is damaged or not a backup)."""
    from meshraft.kv.backup import BadBackup, read_backup_info

    try:
        info = read_backup_info(file)
    except BadBackup as exc:
        cli.fail(str(exc), cli.EXIT_USAGE)
    if as_json:
        click.echo(json.dumps({"file": str(file), **info.to_json()}, sort_keys=True))
        return
    click.echo("\n".join([
        f"file:              {file}",
        f"revision:          {info.revision}",
        f"keys:              {info.keys}",
        f"compact revision:  {info.compact_revision}",
        f"size:              {info.file_size} bytes ({info.data_size} bytes of data)",
        f"sha256 (data):     {info.data_sha256}",
        f"taken from member: {info.member or '?'} (meshraft {info.meshraft or '?'})",
    ]))


def restore(file: Path, data_dir: Path, node_id: str, peers_text: str, cluster_token: str,
            as_json: bool) -> None:
    """Create the data dir of member --id of a NEW cluster from the backup FILE.

    Run it once per member, with the same FILE and --peers; then start each member
    with `meshraft serve --id N --peers ... --data-dir DIR`. The new cluster has its
    own identity: members of the cluster the backup came from are refused by it
    (and refuse it), so an old member can never rejoin by mistake."""
    from meshraft.kv.backup import BadBackup, restore_member
    from meshraft.raft.errors import StorageError

    peers = cli.parse_peers(peers_text)
    if node_id not in peers:
        cli.fail(f"--id {node_id} is not one of --peers ({', '.join(peers)})",
                 cli.EXIT_USAGE)
    addrs = {pid: f"{h}:{p}" for pid, (h, p) in peers.items()}
    try:
        info, cid = asyncio.run(restore_member(file, data_dir, node_id, addrs, cluster_token))
    except (BadBackup, StorageError, ValueError) as exc:
        cli.fail(f"restore refused: {exc}", cli.EXIT_USAGE)
    except OSError as exc:
        cli.fail(f"cannot create {data_dir}: {exc.strerror or exc}", cli.EXIT_USAGE)
    cli.emit(as_json, {"data_dir": str(data_dir), "id": node_id, "cluster_id": cid,
                   "revision": info.revision, "keys": info.keys},
         f"restored member {node_id} of new cluster {cid} into {data_dir}: revision "
         f"{info.revision}, {info.keys} key{'' if info.keys == 1 else 's'}\n"
         f"start it with:  meshraft serve --id {node_id} "
         f"--peers {peers_text} --data-dir {data_dir}")


def move_leader(member_id: str, endpoints: str | None, timeout: float,
                as_json: bool) -> None:
    """Hand leadership to voter ID, which must be caught up (like etcdctl
    move-leader): before stopping the leader for maintenance, without waiting for an
    election timeout. Exit 2 for an unknown id, a learner or a lagging member."""

    async def op(c: Any) -> int:
        r = await c.move_leader(member_id, timeout=timeout)
        cli.emit(as_json, r, f"leadership moved to {r['leader']} (term {r['term']})")
        return cli.EXIT_OK

    cli.run_client(endpoints, timeout, op)
