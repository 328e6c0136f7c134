"""The ``jepsen-lite`` command: check a history, run a cluster under faults, clean up.

Exit codes for ``check`` and ``run``: 0 linearizable, 1 not linearizable,
2 unknown or the run itself failed.
"""

from __future__ import annotations

import click

from jepsen_lite import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jepsen-lite")
def main() -> None:
    """jepsen-lite: real clusters, real faults, a linearizability verdict."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"jepsen-lite {__version__}")


# jepsen-lite run / clean (issue 9): defined in runner.py
from jepsen_lite.runner import clean_cmd, run_cmd  # noqa: E402

main.add_command(run_cmd)
main.add_command(clean_cmd)


if __name__ == "__main__":
    main()
