"""The CLI's client commands as a user runs them (subprocesses), against a kv server on a
fake node: output, --json, exit codes, and errors as one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kvfixtures
import pytest
from fakenode import Timeout, Unavailable

served_sync = kvfixtures.served_sync  # a fixture shared with the other kv tests


@pytest.fixture
def cli(served_sync):
    host, port, sm, node = served_sync

    def run(*args: str, endpoints: str | None = f"{host}:{port}", input: bytes | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "meshraft.cli", *args]
        if endpoints is not None:
            argv += ["--endpoints", endpoints]
        return subprocess.run(argv, capture_output=True, timeout=60, input=input,
                              env={**os.environ, **(env or {})})

    run.sm, run.node, run.endpoint = sm, node, f"{host}:{port}"
    return run


def one_line_error(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("meshraft: "), err
    assert "Traceback" not in err
    return err


def test_put_get_delete_and_exit_codes(cli):
    r = cli("put", "greeting", "hello")
    assert r.returncode == 0 and r.stdout == b"OK (revision 1)\n"
    r = cli("get", "greeting")
    assert r.returncode == 0 and r.stdout == b"hello\n"
    r = cli("get", "nope")
    assert r.returncode == 1 and r.stdout == b""
    assert "key not found: nope" in one_line_error(r)
    r = cli("delete", "greeting")
    assert r.returncode == 0 and r.stdout == b"1\n"
    r = cli("delete", "greeting")
    assert r.returncode == 0 and r.stdout == b"0\n"


def test_json_output(cli):
    r = cli("put", "k", "v1", "--json")
    assert json.loads(r.stdout) == {"key": "k", "revision": 1, "create_revision": 1,
                                    "version": 1}
    cli("put", "k", "v2")
    r = cli("get", "k", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"key": "k", "found": True, "value": "v2",
                                    "create_revision": 1, "mod_revision": 2, "version": 2}
    r = cli("get", "missing", "--json")
    assert r.returncode == 1 and json.loads(r.stdout) == {"key": "missing", "found": False}
    r = cli("list", "--json")
    assert json.loads(r.stdout)["count"] == 1
    r = cli("delete", "k", "--json")
    assert json.loads(r.stdout) == {"key": "k", "deleted": 1, "revision": 3}


def test_serializable_flag_skips_the_read_barrier(cli):
    cli("put", "k", "v")
    before = cli.node.barriers
    assert cli("get", "k", "--serializable").stdout == b"v\n"
    assert cli.node.barriers == before
    assert cli("get", "k").stdout == b"v\n"
    assert cli.node.barriers == before + 1


def test_cas(cli):
    r = cli("cas", "--absent", "lock", "me", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["succeeded"] is True
    r = cli("cas", "--absent", "lock", "you")
    assert r.returncode == 1 and "cas mismatch: lock exists" in one_line_error(r)
    r = cli("cas", "lock", "wrong", "x")
    assert r.returncode == 1 and "has another value" in one_line_error(r)
    r = cli("cas", "lock", "me", "you", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"key": "lock", "succeeded": True,
                                                          "revision": 2}
    r = cli("cas", "absent-key", "x", "y", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["succeeded"] is False
    assert cli("get", "lock").stdout == b"you\n"
    r = cli("cas", "lock", "only-one")
    assert r.returncode == 2 and "EXPECTED NEW" in one_line_error(r)


def test_list(cli):
    for k in ("app/b", "app/a", "other"):
        cli("put", k, k.upper())
    r = cli("list", "app/")
    assert r.stdout == b"app/a\tAPP/A\napp/b\tAPP/B\n"
    assert cli("list", "--keys-only").stdout == b"app/a\napp/b\nother\n"


def test_value_from_stdin_may_be_binary(cli):
    r = cli("put", "bin", input=b"\x00\xff\xfe")
    assert r.returncode == 0
    r = cli("get", "bin", "--json")
    out = json.loads(r.stdout)
    assert out["value"] is None and out["value_base64"] == "AP/+"


def test_input_errors_exit_2_and_change_nothing(cli):
    cli("put", "k", "v")
    rev = cli.sm.revision
    r = cli("put", "x" * 1025, "v")
    assert r.returncode == 2 and "key is 1025 bytes" in one_line_error(r)
    r = cli("put", "k", input=b"v" * (1024 * 1024 + 1))
    assert r.returncode == 2 and "value is 1048577 bytes" in one_line_error(r)
    # non-UTF-8 on the command line (argv bytes that are not UTF-8)
    r = subprocess.run([os.fsencode(sys.executable), b"-m", b"meshraft.cli", b"put",
                        b"\xff\xfekey", b"v", b"--endpoints", cli.endpoint.encode()],
                       capture_output=True, timeout=60)
    assert r.returncode == 2 and "KEY is not valid UTF-8" in one_line_error(r)
    r = cli("get", "k", endpoints="not-an-endpoint")
    assert r.returncode == 2 and "HOST:PORT" in one_line_error(r)
    r = cli("frobnicate", endpoints=None)
    assert r.returncode == 2 and "No such command 'frobnicate'" in one_line_error(r)
    r = cli("put", endpoints=None)
    assert r.returncode == 2 and "Missing argument 'KEY'" in one_line_error(r)
    r = cli("get", "k", "--timeout", "-1")
    assert r.returncode == 2 and "--timeout" in one_line_error(r)
    assert cli.sm.revision == rev


def test_unavailable_and_outcome_unknown_exit_3(cli):
    r = cli("get", "k", "--timeout", "0.5", endpoints="127.0.0.1:1")
    assert r.returncode == 3 and "unavailable" in one_line_error(r)
    cli.node.fail_with = Timeout("slow")
    r = cli("put", "k", "v", "--timeout", "0.5")
    assert r.returncode == 3 and "outcome unknown" in one_line_error(r)
    cli.node.fail_with = Unavailable("no leader")
    r = cli("put", "k", "v", "--timeout", "0.5")
    assert r.returncode == 3 and "unavailable" in one_line_error(r)
    cli.node.fail_with = None


def test_endpoints_from_the_environment(cli):
    r = cli("put", "k", "v", endpoints=None, env={"MESHRAFT_ENDPOINTS": cli.endpoint})
    assert r.returncode == 0


def test_status_of_a_member_that_is_not_running_fails_at_once(cli):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("status", "--timeout", "60", endpoints=f"127.0.0.1:{port}")
    assert r.returncode == 3
    err = one_line_error(r)
    assert f"cannot connect to 127.0.0.1:{port}" in err and "is the member running" in err
    assert "unavailable for 60s" not in err  # not after retrying for the whole --timeout


def test_status(cli):
    r = cli("status", "--json")
    assert r.returncode == 0
    st = json.loads(r.stdout)
    for field in ("id", "role", "term", "leader", "commit_index", "applied_index"):
        assert field in st
    assert st["mesh"]["routes"] == {"2": "2", "3": "2"}
    text = cli("status").stdout.decode()
    assert "role:           leader" in text and "3 via 2" in text
    assert "match index:    2=0" in text
