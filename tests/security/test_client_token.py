"""The client token and safe defaults, with real `meshraft serve` processes.

With --client-token-file every request must carry the token: a missing or wrong
one is a clear "unauthorized" (exit 2) and changes nothing. Clients and the mesh
listen on loopback unless told otherwise, and listening elsewhere without a token
(client port) or a password (mesh) is logged as a WARNING at start."""

from __future__ import annotations

import asyncio
import json

import pytest
from secfixtures import make_pki, start_member

from meshraft.kv import client as kc


def one_line(r) -> str:
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("meshraft: "), r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr


@pytest.fixture
def token_member(procs):
    d = procs.tmpdir("tok")
    (d / "token").write_text("s3cret-token\n")
    (d / "wrong").write_text("s3cret-tokeN\n")
    m = start_member(procs, "--client-token-file", str(d / "token"))
    m.dir = d
    return m


def test_token_right_missing_wrong(procs, token_member):
    m, d = token_member, token_member.dir
    ep = ["--endpoints", m.endpoint, "--timeout", "20"]
    ok = ["--token-file", str(d / "token")]
    assert procs.run("put", "k", "v1", *ep, *ok).returncode == 0
    rev = json.loads(procs.run("status", "--json", *ep, *ok).stdout)["kv"]["revision"]

    r = procs.run("put", "k", "missing", *ep)
    assert r.returncode == 2
    assert one_line(r) == "meshraft: unauthorized: missing client token\n"
    r = procs.run("put", "k", "wrong", *ep, "--token-file", str(d / "wrong"))
    assert r.returncode == 2
    assert one_line(r) == "meshraft: unauthorized: wrong client token\n"
    r = procs.run("delete", "k", *ep, env={"MESHRAFT_TOKEN": "nope"})
    assert r.returncode == 2 and "unauthorized" in one_line(r)
    for args in (["get", "k"], ["status"], ["list"], ["member", "list"]):  # reads too
        r = procs.run(*args, *ep)
        assert r.returncode == 2 and "unauthorized" in one_line(r), args

    # Nothing happened: same value, same revision. MESHRAFT_TOKEN works as the token.
    r = procs.run("get", "k", *ep, env={"MESHRAFT_TOKEN": "s3cret-token"})
    assert (r.returncode, r.stdout) == (0, "v1\n"), r.stderr
    st = json.loads(procs.run("status", "--json", *ep, *ok).stdout)
    assert st["kv"]["revision"] == rev
    assert "s3cret" not in m.proc.log()  # the token is never logged
    assert "without a valid client token" in m.proc.log()


def test_python_client_token(token_member):
    m = token_member

    async def go() -> None:
        async with kc.AsyncClient([m.endpoint], timeout=20) as c:
            with pytest.raises(kc.Unauthorized, match="missing client token"):
                await c.put("a", "1")
        async with kc.AsyncClient([m.endpoint], timeout=20, token="s3cret-token!") as c:
            with pytest.raises(kc.Unauthorized, match="wrong client token"):
                await c.put("a", "1")
        async with kc.AsyncClient([m.endpoint], timeout=20, token=b"s3cret-token") as c:
            assert await c.get("a") is None  # neither refused write happened
            await c.put("a", "2")
            assert (await c.get("a")).value == b"2"

    asyncio.run(go())


def test_token_over_mutual_tls(procs):
    pki = make_pki(procs.tmpdir("pki"))
    d = procs.tmpdir("tok")
    (d / "token").write_text("t")
    m = start_member(procs, "--client-cert", pki.server_cert, "--client-key", pki.server_key,
                     "--trusted-ca", pki.ca.path, "--client-token-file", str(d / "token"))
    tls = ["--endpoints", m.endpoint, "--timeout", "20", "--cacert", pki.ca.path,
           "--cert", pki.client_cert, "--key", pki.client_key]
    r = procs.run("put", "k", "v", *tls)
    assert r.returncode == 2 and "unauthorized" in one_line(r)
    r = procs.run("put", "k", "v", *tls, "--token-file", str(d / "token"))
    assert r.returncode == 0, r.stderr


def test_empty_token_file_is_refused(procs):
    d = procs.tmpdir("tok")
    (d / "empty").write_text("\n")
    r = procs.run("serve", "--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir", str(d),
                  "--client-token-file", str(d / "empty"))
    assert r.returncode == 2 and "empty" in one_line(r)


def warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line]


def test_loopback_by_default_and_quiet(procs):
    m = start_member(procs, client=False, transport="mesh")
    r = procs.run("status", "--json", "--endpoints", m.endpoint, "--timeout", "20")
    st = json.loads(r.stdout)
    assert st["kv"]["client"].startswith("127.0.0.1:")
    assert not warnings(m.proc.log()), m.proc.log()


def test_off_loopback_without_token_or_password_warns(procs):
    # Binds the wildcard address briefly; the test sends traffic only to 127.0.0.1.
    m = start_member(procs, client_host="0.0.0.0", transport="mesh")
    m.proc.terminate()
    w = warnings(m.proc.log())
    assert any("non-loopback address 0.0.0.0" in x and "WITHOUT a client token" in x
               for x in w), m.proc.log()
    assert not any("mesh password" in x for x in w)  # the mesh is on loopback

    d = procs.tmpdir("tok")
    (d / "token").write_text("t")
    m = start_member(procs, "--client-token-file", str(d / "token"), client_host="0.0.0.0",
                     transport="mesh")
    m.proc.terminate()
    assert not warnings(m.proc.log()), m.proc.log()


def test_mesh_off_loopback_without_password_warns(procs):
    m = start_member(procs, listen="0.0.0.0:0", transport="mesh")
    m.proc.terminate()
    w = warnings(m.proc.log())
    assert any("listening on 0.0.0.0 without a mesh password" in x for x in w), m.proc.log()
    assert not any("client token" in x for x in w)  # the client port is on loopback


def test_bench_against_a_cluster_that_requires_a_token(procs, token_member):
    m, d = token_member, token_member.dir
    load = ["bench", "--endpoints", m.endpoint, "--clients", "2", "--duration", "1",
            "--warmup", "0.2", "--timeout", "5", "--json"]
    r = procs.run(*load, "--token-file", str(d / "token"), timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["ops"] > 0 and res["errors"] == 0, res
    # the token can come from the environment too
    r = procs.run(*load, env={"MESHRAFT_TOKEN": "s3cret-token"}, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["errors"] == 0, r.stderr
    # without it nothing succeeds, and bench says so
    r = procs.run(*load, timeout=60)
    assert r.returncode == 3 and "no operation succeeded" in r.stderr, r.stderr
    # the options are for --endpoints only: a local cluster bench starts is plain
    r = procs.run("bench", "--token-file", str(d / "token"), "--duration", "1", timeout=60)
    assert r.returncode == 2 and "--endpoints" in r.stderr, r.stderr
