"""``meshraft txn``: run a transaction read from stdin.

This module owns that command: the text syntax (etcdctl txn's), the JSON input, the
output and the exit codes, in ``meshraft.cli``'s style: 0 the compares held (the
success ops ran), 1 they did not (the failure ops ran), 2 bad input (syntax, a key
written twice, too many ops), 3 unavailable or outcome unknown. The transaction itself
is the cluster's (``meshraft.kv.txn``); this module only parses and calls
``AsyncClient.txn``. It is imported by ``meshraft.cli``, which registers the command,
and borrows cli's client options and error handling. See
docs/architecture.md#transactions.

Text input: compares, a blank line, success ops, a blank line, failure ops (each part
may be empty; ``#`` starts a comment line)::

    value("stock/apples") = "3"
    version("order/7") = "0"

    put stock/apples 2
    put order/7 "2 apples"

    get stock/apples

Compares: ``TARGET("KEY") OP "VALUE"`` with TARGET value, version, create, mod or lease
and OP ``=``, ``!=``, ``>``, ``<`` (version/create/mod/lease take an integer; a lease id
may be hex with 0x). Ops: ``put KEY VALUE [--lease ID]``, ``get KEY``, ``get PREFIX
--prefix`` (= ``list PREFIX``), ``list PREFIX [--limit N]``, ``del KEY [--prefix]``
(or ``delete``). Words are split like a shell does (quote values with spaces).

``--json-input``: ``{"compare": [{"key", "target", "result", "value"}], "success":
[{"op", "key", "value", "lease", "prefix", "limit"}], "failure": [...]}`` with keys
and values as UTF-8 strings (or ``key_base64``/``value_base64``/``prefix_base64``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
import sys
from types import ModuleType
from typing import Any

import click

__all__ = ["TxnSyntaxError", "build_command", "parse_json", "parse_text"]

# meshraft.cli, given to build_command (cli imports this module, so this module cannot
# import cli at its top: `python -m meshraft.cli` would load it twice).
cli: Any = None

# Input read from stdin at most (a transaction is one request: its frame is capped too).
MAX_INPUT = 64 * 1024 * 1024
_COMPARE = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*(!=|=|>|<)\s*(.*?)\s*$")


class TxnSyntaxError(ValueError):
    """Input that is not a transaction; the message names the line."""


def _word(text: str, what: str, where: str) -> str:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise TxnSyntaxError(f"{where}: {what}: {exc}") from None
    if len(words) != 1:
        raise TxnSyntaxError(f"{where}: {what} must be one (quoted) word, got {text!r}")
    return words[0]


def _number(text: str, where: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise TxnSyntaxError(f"{where}: {text!r} is not an integer") from None
    if n < 0:
        raise TxnSyntaxError(f"{where}: {text!r} must not be negative")
    return n


def _utf8(text: str, what: str, where: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise TxnSyntaxError(f"{where}: {what} is not valid UTF-8") from None


def parse_compare(line: str, where: str) -> dict[str, Any]:
    m = _COMPARE.match(line)
    if not m:
        raise TxnSyntaxError(f'{where}: a compare is TARGET("KEY") OP "VALUE", got {line!r}')
    target, key, result, value = m.groups()
    if target not in ("value", "version", "create", "mod", "lease"):
        raise TxnSyntaxError(f"{where}: unknown compare target {target!r} (value, version, "
                             "create, mod or lease)")
    k = _utf8(_word(key, "the key", where), "the key", where)
    v = _word(value, "the value", where)
    return {"key": k, "target": target, "result": result,
            "value": _utf8(v, "the value", where) if target == "value" else
            _number(v, where)}


def parse_op(line: str, where: str) -> dict[str, Any]:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise TxnSyntaxError(f"{where}: {exc}") from None
    cmd = words[0] if words else ""
    # options: --prefix (a flag), --lease ID and --limit N (also --name=VALUE)
    args: list[str] = []
    opts: dict[str, str | None] = {}
    i = 1
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            name, eq, value = w[2:].partition("=")
            if name in ("lease", "limit") and not eq:
                if i + 1 >= len(words):
                    raise TxnSyntaxError(f"{where}: --{name} needs a value")
                value = words[i + 1]
                i += 1
            opts[name] = value if name != "prefix" else None
        else:
            args.append(w)
        i += 1

    def opt(name: str) -> str | None:
        return opts.pop(name, None)

    def flag(name: str) -> bool:
        if name in opts:
            del opts[name]
            return True
        return False

    if cmd == "put":
        lease = opt("lease")
        out: dict[str, Any] = {"op": "put"}
        if len(args) != 2:
            raise TxnSyntaxError(f"{where}: put takes KEY VALUE [--lease ID], got {line!r}")
        out["key"], out["value"] = (_utf8(a, "put's argument", where) for a in args)
        if lease is not None:
            out["lease"] = _number(lease, where)
    elif cmd in ("get", "list"):
        prefix = flag("prefix")
        limit = opt("limit")
        if len(args) != 1:
            what = "KEY" if cmd == "get" else "PREFIX"
            raise TxnSyntaxError(f"{where}: {cmd} takes one {what}, got {line!r}")
        k = _utf8(args[0], "the key", where)
        if cmd == "list" or prefix:
            out = {"op": "list", "prefix": k}
            if limit is not None:
                out["limit"] = _number(limit, where)
        else:
            out = {"op": "get", "key": k}
    elif cmd in ("del", "delete"):
        prefix = flag("prefix")
        if len(args) != 1:
            raise TxnSyntaxError(f"{where}: {cmd} takes one KEY [--prefix], got {line!r}")
        out = {"op": "delete", "key": _utf8(args[0], "the key", where)}
        if prefix:
            out["prefix"] = True
    else:
        raise TxnSyntaxError(f"{where}: unknown operation {cmd!r} (put, get, list, del)")
    if opts:
        raise TxnSyntaxError(f"{where}: unknown option(s) "
                             f"{', '.join('--' + o for o in sorted(opts))} for {cmd}")
    return out


def parse_text(text: str) -> tuple[list[Any], list[Any], list[Any]]:
    """etcdctl txn's syntax: compares, blank line, success ops, blank line, failure ops."""
    parts: list[list[tuple[int, str]]] = [[]]
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            if len(parts) == 3:
                if parts[2]:
                    parts.append([])  # a fourth part: an error below, if it has lines
                continue
            parts.append([])
            continue
        parts[-1].append((n, line))
    if len(parts) > 3 and any(parts[3:]):
        n = next(line for part in parts[3:] for line in part)[0]
        raise TxnSyntaxError(f"line {n}: more than three parts (compares, blank line, "
                             "success ops, blank line, failure ops)")
    parts += [[]] * (3 - len(parts))
    compare = [parse_compare(line, f"line {n}") for n, line in parts[0]]
    success = [parse_op(line, f"line {n}") for n, line in parts[1]]
    failure = [parse_op(line, f"line {n}") for n, line in parts[2]]
    return compare, success, failure


def _json_bytes(item: dict[str, Any], name: str, where: str, required: bool = True
                ) -> bytes | None:
    if f"{name}_base64" in item:
        try:
            return base64.b64decode(item[f"{name}_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise TxnSyntaxError(f"{where}: {name}_base64 is not base64") from None
    v = item.get(name)
    if v is None:
        if required:
            raise TxnSyntaxError(f"{where}: {name} is missing")
        return None
    if not isinstance(v, str):
        raise TxnSyntaxError(f"{where}: {name} must be a string")
    return _utf8(v, name, where)


def parse_json(text: str) -> tuple[list[Any], list[Any], list[Any]]:
    """The ``--json-input`` form (see the module docstring)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TxnSyntaxError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TxnSyntaxError("the JSON input must be an object with compare, success, failure")
    unknown = set(doc) - {"compare", "success", "failure"}
    if unknown:
        raise TxnSyntaxError(f"unknown field(s) {', '.join(sorted(unknown))}")
    lists: dict[str, list[Any]] = {}
    for name in ("compare", "success", "failure"):
        v = doc.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise TxnSyntaxError(f"{name} must be a list of objects")
        lists[name] = v
    compare = []
    for i, c in enumerate(lists["compare"], 1):
        where = f"compare {i}"
        out = {"key": _json_bytes(c, "key", where), "target": c.get("target"),
               "result": c.get("result")}
        out["value"] = (_json_bytes(c, "value", where) if c.get("target") == "value"
                        else c.get("value"))
        compare.append(out)
    branches = []
    for name in ("success", "failure"):
        ops = []
        for i, o in enumerate(lists[name], 1):
            where = f"{name} op {i}"
            out = {k: v for k, v in o.items() if k in ("op", "lease", "prefix", "limit")}
            if o.get("op") == "list":
                out["prefix"] = _json_bytes(o, "prefix", where, required=False) or b""
            else:
                out["key"] = _json_bytes(o, "key", where)
                if o.get("op") == "put":
                    out["value"] = _json_bytes(o, "value", where)
            ops.append(out)
        branches.append(ops)
    return compare, branches[0], branches[1]


def _kv_json(kv: Any) -> dict[str, Any]:
    return {"key": cli.show_key(kv.key), **cli.show_bytes(kv.value),
            "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
            "version": kv.version}


def _response_json(op: dict[str, Any], r: Any) -> dict[str, Any]:
    kind = op["op"]
    if kind == "put":
        return {"op": "put", "revision": r.revision, "version": r.version}
    if kind == "delete":
        return {"op": "delete", "deleted": r.deleted}
    if kind == "get":
        return {"op": "get", "found": r is not None, **({"kv": _kv_json(r)} if r else {})}
    return {"op": "list", "kvs": [_kv_json(kv) for kv in r.kvs], "more": r.more}


def _print_response(op: dict[str, Any], r: Any) -> None:
    """etcdctl's plain output: OK for a put, the count for a delete, key and value
    lines for a get or list (nothing for an absent key)."""
    kind = op["op"]
    out = sys.stdout.buffer
    if kind == "put":
        out.write(b"OK\n")
    elif kind == "delete":
        out.write(b"%d\n" % r.deleted)
    else:
        for kv in ([] if r is None else [r]) if kind == "get" else r.kvs:
            out.write(kv.key + b"\n" + kv.value + b"\n")
    out.flush()


def txn(json_input: bool, endpoints: str | None, timeout: float, as_json: bool) -> None:
    """Run a transaction read from stdin: compares, a blank line, success ops, a blank
    line, failure ops (etcdctl txn's syntax; or JSON with --json-input). Prints
    SUCCESS or FAILURE and each op's result; exit 0 if the compares held, 1 if the
    failure ops ran."""
    data = sys.stdin.buffer.read(MAX_INPUT + 1)
    if len(data) > MAX_INPUT:
        cli.fail(f"the transaction on stdin is over {MAX_INPUT} bytes", cli.EXIT_USAGE)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        cli.fail("stdin is not valid UTF-8 (use --json-input with value_base64 for "
                 "binary values)", cli.EXIT_USAGE)
    try:
        compare, success, failure = parse_json(text) if json_input else parse_text(text)
    except TxnSyntaxError as exc:
        cli.fail(f"txn: {exc}", cli.EXIT_USAGE)

    async def op(c: Any) -> int:
        r = await c.txn(compare, success, failure)
        ran = success if r.succeeded else failure
        if as_json:
            cli.emit(True, {"succeeded": r.succeeded, "revision": r.revision,
                            "responses": [_response_json(o, x)
                                          for o, x in zip(ran, r.responses, strict=True)]},
                     None)
        else:
            click.echo("SUCCESS" if r.succeeded else "FAILURE")
            for o, x in zip(ran, r.responses, strict=True):
                click.echo("")
                _print_response(o, x)
        return cli.EXIT_OK if r.succeeded else cli.EXIT_NO

    cli.run_client(endpoints, timeout, op)


def build_command(cli_module: ModuleType) -> click.Command:
    """The ``txn`` command, built with ``cli_module``'s client options and exit codes."""
    global cli
    cli = cli_module
    return click.command(name="txn")(click.option(
        "--json-input", is_flag=True,
        help="Read the transaction as JSON: {\"compare\": [...], \"success\": [...], "
             "\"failure\": [...]}.")(cli.client_options(txn)))
