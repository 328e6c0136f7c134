"""`meshraft txn`: the etcdctl-style text syntax and the JSON input, parsed on their own
and run as a user runs them (subprocesses against a kv server on a fake node): output,
--json, exit codes 0/1/2, errors as one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kvfixtures
import pytest

from meshraft.cli_txn import TxnSyntaxError, parse_json, parse_text

served_sync = kvfixtures.served_sync


@pytest.fixture
def cli(served_sync):
    host, port, sm, _node = served_sync

    def run(*args: str, input: bytes = b"") -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "meshraft.cli", *args, "--endpoints", f"{host}:{port}"]
        return subprocess.run(argv, capture_output=True, timeout=60, input=input,
                              env=dict(os.environ))

    run.sm = sm
    return run


def one_line_error(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("meshraft: "), err
    assert "Traceback" not in err
    return err


def test_text_syntax_like_etcdctl():
    compare, success, failure = parse_text(
        '# a comment\n'
        'value("stock/apples") = "3"\n'
        'version(order/7) = "0"\n'
        'mod("a b") > 12\n'
        'lease("l") != "0x1f"\n'
        '\n'
        'put stock/apples 2\n'
        'put order/7 "2 apples" --lease 31\n'
        'del old --prefix\n'
        'get order/7\n'
        'get stock/ --prefix\n'
        'list stock/ --limit=5\n'
        '\n'
        'get stock/apples\n')
    assert compare == [
        {"key": b"stock/apples", "target": "value", "result": "=", "value": b"3"},
        {"key": b"order/7", "target": "version", "result": "=", "value": 0},
        {"key": b"a b", "target": "mod", "result": ">", "value": 12},
        {"key": b"l", "target": "lease", "result": "!=", "value": 31}]
    assert success == [
        {"op": "put", "key": b"stock/apples", "value": b"2"},
        {"op": "put", "key": b"order/7", "value": b"2 apples", "lease": 31},
        {"op": "delete", "key": b"old", "prefix": True},
        {"op": "get", "key": b"order/7"},
        {"op": "list", "prefix": b"stock/"},
        {"op": "list", "prefix": b"stock/", "limit": 5}]
    assert failure == [{"op": "get", "key": b"stock/apples"}]
    # parts may be empty; a put whose key equals the lease id still parses right
    assert parse_text("\nput 5 v --lease 5\n") == (
        [], [{"op": "put", "key": b"5", "value": b"v", "lease": 5}], [])
    assert parse_text("") == ([], [], [])


@pytest.mark.parametrize("text, words", [
    ('value("k") == "x"\n', "the value must be one (quoted) word"),  # no "=="
    ('size("k") = "1"\n', "unknown compare target"),
    ('version("k") = "x"\n', "line 1: 'x' is not an integer"),
    ('value("k") = "unterminated\n', "line 1"),
    ("\nfrobnicate k\n", "line 2: unknown operation 'frobnicate'"),
    ("\nput k\n", "put takes KEY VALUE"),
    ("\nget k --bogus\n", "unknown option(s) --bogus"),
    ("\nput k v --lease\n", "--lease needs a value"),
    ("\nput a 1\n\nput b 2\n\nput c 3\n", "line 6: more than three parts"),
])
def test_text_syntax_errors_name_the_line(text, words):
    with pytest.raises(TxnSyntaxError) as e:
        parse_text(text)
    assert words in str(e.value)


def test_json_input():
    compare, success, failure = parse_json(json.dumps({
        "compare": [{"key": "k", "target": "value", "result": "=", "value": "x"},
                    {"key_base64": "AP8=", "target": "version", "result": ">", "value": 1}],
        "success": [{"op": "put", "key": "k", "value_base64": "AAE=", "lease": 3},
                    {"op": "list", "prefix": "p", "limit": 2}],
        "failure": [{"op": "delete", "key": "d", "prefix": True}]}))
    assert compare == [{"key": b"k", "target": "value", "result": "=", "value": b"x"},
                       {"key": b"\x00\xff", "target": "version", "result": ">", "value": 1}]
    assert success == [{"op": "put", "key": b"k", "value": b"\x00\x01", "lease": 3},
                       {"op": "list", "prefix": b"p", "limit": 2}]
    assert failure == [{"op": "delete", "key": b"d", "prefix": True}]
    for bad, words in [("[1]", "must be an object"), ("{", "not JSON"),
                       ('{"succes": []}', "unknown field(s) succes"),
                       ('{"success": [{"op": "put", "value": "v"}]}', "key is missing"),
                       ('{"success": [{"op": "get", "key_base64": "!"}]}', "not base64")]:
        with pytest.raises(TxnSyntaxError, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_json(bad)


def test_txn_command_exit_codes_and_output(cli):
    txn = b'version("k") = "0"\n\nput k v1\nput j w\nget k\n\nget k\n'
    r = cli("txn", input=txn)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"SUCCESS\n\nOK\n\nOK\n\nk\nv1\n"
    r = cli("txn", input=txn)  # k exists now: the failure ops ran
    assert r.returncode == 1, r.stderr
    assert r.stdout == b"FAILURE\n\nk\nv1\n"
    assert cli.sm.revision == 1
    r = cli("txn", "--json", input=txn)
    assert r.returncode == 1
    assert json.loads(r.stdout) == {
        "succeeded": False, "revision": 1, "responses": [
            {"op": "get", "found": True, "kv": {"key": "k", "value": "v1",
                                                "create_revision": 1, "mod_revision": 1,
                                                "version": 1}}]}


def test_txn_command_json_input(cli):
    doc = {"compare": [{"key": "n", "target": "create", "result": "=", "value": 0}],
           "success": [{"op": "put", "key": "n", "value": "1"},
                       {"op": "list", "prefix": ""}, {"op": "delete", "key": "none"}]}
    r = cli("txn", "--json-input", "--json", input=json.dumps(doc).encode())
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["succeeded"] is True and out["revision"] == 1
    assert out["responses"][0] == {"op": "put", "revision": 1, "version": 1}
    assert [kv["key"] for kv in out["responses"][1]["kvs"]] == ["n"]
    assert out["responses"][2] == {"op": "delete", "deleted": 0}


@pytest.mark.parametrize("args, text, words", [
    ((), b"\nput k 1\nput k 2\n", "duplicate key"),
    ((), b"\n" + b"".join(b"get k%d\n" % i for i in range(129)), "too many operations"),
    ((), b'value("k") ~ "x"\n', "txn: line 1"),
    (("--json-input",), b"[]", "must be an object"),
    ((), b"\xff\n", "not valid UTF-8"),
])
def test_txn_command_bad_input_is_exit_2_and_changes_nothing(cli, args, text, words):
    r = cli("txn", *args, input=text)
    assert r.returncode == 2
    assert words in one_line_error(r)
    assert cli.sm.revision == 0
