"""The ``meshraft`` command: serve a member, run a local cluster, and talk to one.

This module owns argument parsing, output formatting and exit codes, and nothing
else: it builds on ``meshraft.kv`` and never reaches below it into raft or mesh
internals beyond starting them.

Exit codes: 0 ok, 1 the operation's own "no" (key absent, cas mismatch),
2 usage or input error, 3 unavailable or outcome unknown.
"""

from __future__ import annotations

import click

from meshraft import __version__

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshraft")
def main() -> None:
    """meshraft: a linearizable, replicated key-value store."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"meshraft {__version__}")


if __name__ == "__main__":
    main()
