"""``jepsen-lite run`` and ``jepsen-lite clean``.

Owns: starting the cluster (``meshraft serve`` processes, in namespaces or on
loopback), the workload and nemesis tasks, writing the out dir, and cleaning up
after itself on every path (normal end, exception, SIGINT/SIGTERM).

Must never: signal a process it did not start and record, or leave a namespace
behind on any exit path it can see.
"""

from __future__ import annotations

import json

import click

from jepsen_lite import netns


@click.command("clean")
@click.option("--force", is_flag=True,
              help="Also remove runs whose runner process is still alive.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def clean_cmd(force: bool, as_json: bool) -> None:
    """Remove namespaces, veths, rules and processes that crashed runs left behind."""
    removed = netns.clean_stale(force=force)
    if as_json:
        click.echo(json.dumps(removed))
        return
    if not any(removed.values()):
        click.echo("nothing to clean")
        return
    for what, items in removed.items():
        if items:
            click.echo(f"removed {what}: {' '.join(items)}")
