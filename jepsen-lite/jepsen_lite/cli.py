"""The ``jepsen-lite`` command: check a history, run a cluster under faults, clean up.

Exit codes for ``check`` and ``run``: 0 linearizable, 1 not linearizable,
2 unknown or the run itself failed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from jepsen_lite import __version__

EXIT_OK, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jepsen-lite")
def main() -> None:
    """jepsen-lite: real clusters, real faults, a linearizability verdict."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"jepsen-lite {__version__}")


def _fail(msg: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"valid": "unknown", "error": msg}))
    click.echo(f"jepsen-lite check: error: {msg}", err=True)
    sys.exit(EXIT_UNKNOWN)


@main.command()
@click.argument("history", metavar="HISTORY.jsonl")
@click.option("--model", type=click.Choice(["cas-register", "kv", "watch", "txn"]),
              default="cas-register", show_default=True,
              help="The sequential model each key is checked against; watch: the watch "
                   "workload's history against etcd's watch guarantees; txn: the txn "
                   "workload's multi-key transactions.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="S", help="Give up after S seconds: the verdict is then unknown.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--report", "report_path", metavar="FILE.html", default=None,
              help="Write a self-contained HTML report.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: CPU count).")
def check(history: str, model: str, time_limit: float | None, as_json: bool,
          report_path: str | None, workers: int | None) -> None:
    """Check HISTORY.jsonl for linearizability (or, with --model watch, the watch
    guarantees).

    Exit 0 linearizable, 1 not linearizable, 2 unknown or an error.
    """
    from jepsen_lite.checker import check_history
    from jepsen_lite.history import HistoryError, read_lines

    if model == "watch":
        _check_watch(history, as_json, report_path)
        return

    try:
        events, lines = read_lines(history)  # validated by check_history
        checked: Any = model
        if model == "txn":
            from jepsen_lite.txn_model import TxnModel

            checked = TxnModel()
        result = check_history(events, checked, time_limit, workers=workers, lines=lines)
    except HistoryError as e:
        _fail(f"{history}: {e}", as_json)
        return
    except OSError as e:
        _fail(f"{history}: {e.strerror or e}", as_json)
        return
    if report_path:
        from jepsen_lite.report import write_report

        try:
            write_report(report_path, result, source=history)
        except OSError as e:
            _fail(f"cannot write report {report_path}: {e.strerror or e}", as_json)
            return
    if as_json:
        out: dict[str, Any] = result.to_json()
        if report_path:
            out["report"] = report_path
        click.echo(json.dumps(out, default=str))
    else:
        _print_human(history, result)
    sys.exit(EXIT_OK if result.valid is True else
             EXIT_INVALID if result.valid is False else EXIT_UNKNOWN)


def _check_watch(history: str, as_json: bool, report_path: str | None) -> None:
    """``check --model watch``: exit 0 the guarantees hold, 1 violated, 2 an error."""
    from jepsen_lite.history import HistoryError, read_lines
    from jepsen_lite.watch_checker import check_watch, describe

    try:
        events, lines = read_lines(history)
        result = check_watch(events, lines)
    except HistoryError as e:
        _fail(f"{history}: {e}", as_json)
        return
    except OSError as e:
        _fail(f"{history}: {e.strerror or e}", as_json)
        return
    if report_path:
        from jepsen_lite.report import write_watch_report

        try:
            write_watch_report(report_path, result, source=history)
        except OSError as e:
            _fail(f"cannot write report {report_path}: {e.strerror or e}", as_json)
            return
    if as_json:
        out: dict[str, Any] = result.to_json()
        if report_path:
            out["report"] = report_path
        click.echo(json.dumps(out, default=str))
    else:
        click.echo("\n".join(describe(result, history)))
    sys.exit(EXIT_OK if result.valid else EXIT_INVALID)


def _print_human(source: str, result: Any) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in result.ops_by_status.items())
    click.echo(f"{source}: {result.op_count} ops ({counts}) on {len(result.keys)} keys, "
               f"model {result.model}, checked in {result.elapsed:.3f} s")
    if result.valid is True:
        click.echo("linearizable")
        return
    if result.valid != "unknown" or result.failures:
        for f in result.failures:
            d = f.descriptions
            click.echo(f"NOT linearizable: key {f.key!r}")
            click.echo(f"  first op that cannot be linearized: p{f.op.process} "
                       f"{d.get(f.op.id, '')} (events #{f.op.invoke_index}..#"
                       f"{f.op.complete_index})")
            if not f.located:
                click.echo("  (the explanation ran out of time: that op and the prefix below "
                           "are approximate)")
            if f.states_before:
                click.echo(f"  possible states just before: {', '.join(f.states_before)}")
            kind = "minimal set" if f.minimal_complete else "neighbourhood (not proven minimal)"
            ctx = f", given the {f.context_ops} older ops" if f.context_ops else ""
            click.echo(f"  ops that cannot be linearized together — {kind}{ctx}:")
            for o in f.minimal:
                mark = "  <- first" if o.id == f.op.id else ""
                click.echo(f"    p{o.process:<4} {d.get(o.id, ''):<24} #{o.invoke_index}..#"
                           f"{o.complete_index}{mark}")
            click.echo(f"  longest linearizable prefix: events before #{f.prefix_index} "
                       f"({f.prefix_ops} ops completed); one valid order ends:")
            for o, st in f.linearization[-6:]:
                click.echo(f"    p{o.process:<4} {d.get(o.id, ''):<24} -> {st}")
    unknown = result.unknown_keys
    if unknown:
        click.echo(f"unknown: {len(unknown)} keys not decided within the time limit: "
                   + ", ".join(repr(k) for k in unknown[:10]))
    if result.valid == "unknown":
        click.echo("verdict: unknown")


# The runner's commands register here (jepsen_lite.runner): `run` and `clean`.
from jepsen_lite.runner import clean_cmd, run_cmd  # noqa: E402

main.add_command(run_cmd)
main.add_command(clean_cmd)


if __name__ == "__main__":
    main()
