"""TLS on the client port, with real `meshraft serve` processes and a throwaway PKI:
TLS put/get works (CLI and Python client), mutual TLS requires a client certificate
from the trusted CA, and every misconfiguration fails with one clear line (exit 2)."""

from __future__ import annotations

import asyncio
import json

import pytest
from secfixtures import make_pki, start_member

from meshraft.kv import client as kc
from meshraft.kv.tls import client_context


@pytest.fixture
def pki(procs):
    return make_pki(procs.tmpdir("pki"))


def one_line(r) -> str:
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("meshraft: "), r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr


def test_tls_put_get_and_clear_failures(procs, pki):
    m = start_member(procs, "--client-cert", pki.server_cert, "--client-key", pki.server_key)
    ep = ["--endpoints", m.endpoint, "--timeout", "20"]
    r = procs.run("put", "k", "over tls", *ep, "--cacert", pki.ca.path)
    assert r.returncode == 0, r.stderr
    r = procs.run("get", "k", *ep, "--cacert", pki.ca.path)
    assert (r.returncode, r.stdout) == (0, "over tls\n"), r.stderr
    # The CA can come from the environment too, like the endpoints.
    r = procs.run("get", "k", "--endpoints", m.endpoint, env={"MESHRAFT_CACERT": pki.ca.path})
    assert (r.returncode, r.stdout) == (0, "over tls\n"), r.stderr

    # Plain TCP against the TLS port: one clear line, exit 2, nothing written.
    r = procs.run("put", "k", "plain", *ep)
    assert r.returncode == 2, r.stderr
    assert "speaks TLS" in one_line(r)
    # A server certificate from a CA the client does not trust.
    r = procs.run("put", "k", "wrong ca", *ep, "--cacert", pki.other_ca.path)
    assert r.returncode == 2, r.stderr
    assert "cannot verify the server's certificate" in one_line(r)
    assert "--cacert" in r.stderr
    r = procs.run("get", "k", *ep, "--cacert", pki.ca.path)
    assert r.stdout == "over tls\n"  # neither failure changed anything
    assert m.proc.alive()


def test_tls_client_against_a_plain_port_fails_clearly(procs, pki):
    m = start_member(procs)
    r = procs.run("put", "k", "v", "--endpoints", m.endpoint, "--cacert", pki.ca.path)
    assert r.returncode == 2, r.stderr
    assert "does not speak TLS" in one_line(r)
    r = procs.run("get", "k", "--endpoints", m.endpoint)
    assert r.returncode == 1  # not written
    assert m.proc.alive()


def test_mutual_tls(procs, pki):
    m = start_member(procs, "--client-cert", pki.server_cert, "--client-key", pki.server_key,
                     "--trusted-ca", pki.ca.path)
    assert "mutual TLS" in m.proc.log()
    ep = ["--endpoints", m.endpoint, "--cacert", pki.ca.path, "--timeout", "20"]
    r = procs.run("put", "k", "mtls", *ep, "--cert", pki.client_cert, "--key", pki.client_key)
    assert r.returncode == 0, r.stderr
    # No client certificate.
    r = procs.run("get", "k", *ep)
    assert r.returncode == 2, r.stderr
    assert "client certificate" in one_line(r)
    # A client certificate from a CA the server does not trust.
    r = procs.run("put", "k", "rogue", *ep, "--cert", pki.rogue_cert, "--key", pki.rogue_key)
    assert r.returncode == 2, r.stderr
    assert "TLS" in one_line(r) and "client certificate" in r.stderr
    r = procs.run("get", "k", *ep, "--cert", pki.client_cert, "--key", pki.client_key)
    assert (r.returncode, r.stdout) == (0, "mtls\n"), r.stderr
    # --cert without --key is a usage error.
    r = procs.run("get", "k", *ep, "--cert", pki.client_cert)
    assert r.returncode == 2 and "--cert and --key" in one_line(r)


def test_python_client_takes_a_context_or_paths(procs, pki):
    m = start_member(procs, "--client-cert", pki.server_cert, "--client-key", pki.server_key,
                     "--trusted-ca", pki.ca.path)

    async def go() -> None:
        ctx = client_context(pki.ca.path, pki.client_cert, pki.client_key)
        async with kc.AsyncClient([m.endpoint], ssl=ctx, timeout=20) as c:
            await c.put(b"a", b"1")
        async with kc.AsyncClient([m.endpoint], cacert=pki.ca.path, cert=pki.client_cert,
                                  key=pki.client_key, timeout=20) as c:
            assert (await c.get(b"a")).value == b"1"
        async with kc.AsyncClient([m.endpoint], cacert=pki.other_ca.path, timeout=20) as c:
            with pytest.raises(kc.TLSFailure, match="verify"):
                await c.put(b"a", b"2")
        async with kc.AsyncClient([m.endpoint], timeout=5) as c:  # plain
            with pytest.raises(kc.MeshraftError, match="speaks TLS"):
                await c.put(b"a", b"3")

    asyncio.run(go())
    r = procs.run("get", "a", "--endpoints", m.endpoint, "--cacert", pki.ca.path,
                  "--cert", pki.client_cert, "--key", pki.client_key)
    assert r.stdout == "1\n", r.stderr


def test_serve_refuses_bad_tls_flags(procs, pki):
    base = ["serve", "--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir",
            str(procs.tmpdir("d"))]
    r = procs.run(*base, "--client-cert", pki.server_cert)
    assert r.returncode == 2 and "--client-key" in one_line(r)
    r = procs.run(*base, "--trusted-ca", pki.ca.path)
    assert r.returncode == 2 and "--client-cert" in one_line(r)
    r = procs.run(*base, "--client-cert", pki.server_cert, "--client-key", pki.client_key)
    assert r.returncode == 2 and "TLS files" in one_line(r)  # key does not match


def test_bench_over_mutual_tls(procs, pki):
    m = start_member(procs, "--client-cert", pki.server_cert, "--client-key", pki.server_key,
                     "--trusted-ca", pki.ca.path)
    load = ["bench", "--endpoints", m.endpoint, "--clients", "2", "--duration", "1",
            "--warmup", "0.2", "--timeout", "5", "--json", "--cacert", pki.ca.path]
    r = procs.run(*load, "--cert", pki.client_cert, "--key", pki.client_key, timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["ops"] > 0 and res["errors"] == 0, res
    r = procs.run(*load, "--cert", pki.client_cert, timeout=60)
    assert r.returncode == 2 and "--cert and --key go together" in r.stderr, r.stderr
