"""A member wired by meshraft.member, started from Python (no subprocess, no CLI), talked
to with the real client over a real socket, for each transport."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time

import pytest

from meshraft.kv import client as kc
from meshraft.member import Member, MemberConfig, StartupError
from meshraft.ports import free_ports
from meshraft.raft.core import RaftCore


def config_for(tmp_path, transport: str, client_port: int = 0) -> MemberConfig:
    (peer,) = free_ports(1)
    data_dir = tmp_path / "node-1"
    data_dir.mkdir(exist_ok=True)
    return MemberConfig(node_id="1", peers={"1": ("127.0.0.1", peer)},
                        listen=("127.0.0.1", peer), client=("127.0.0.1", client_port),
                        data_dir=data_dir, transport=transport)


async def poll_status(c: kc.AsyncClient, done, within: float = 15.0) -> dict:
    """The member's status once ``done(status)`` holds (or the last one after ``within``)."""
    deadline = time.monotonic() + within
    while True:
        st = await c.status()
        if done(st) or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.05)


async def wait_leader(c: kc.AsyncClient) -> dict:
    return await poll_status(c, lambda st: st.get("role") == "leader")


@pytest.mark.parametrize("transport", ["udp", "mesh"])
async def test_a_member_started_from_python_serves_the_real_client(tmp_path, transport):
    config = config_for(tmp_path, transport)
    async with Member(config) as m:
        assert m.client_address[1] != 0  # port 0: the member took a free one
        async with kc.AsyncClient([m.client_endpoint], timeout=10) as c:
            st = await wait_leader(c)
            assert st["role"] == "leader" and st["leader"] == "1"
            assert st["transport"] == transport
            assert set(st["mesh"]) >= {"peers", "routes"}
            r = await c.put("greeting", "hello")
            assert r.revision == 1
            kv = await c.get("greeting")
            assert kv is not None and kv.value == b"hello"
            assert (await c.cas("greeting", "hello", "bye")).succeeded
            assert [k.key for k in await c.list()] == [b"greeting"]
            members = await c.members()
            assert members["voters"] == ["1"] and members["leader"] == "1"
            # the transport checks a new member's address before Raft sees it
            with pytest.raises(kc.BadRequest, match="HOST:PORT"):
                await c.add_member("2", "not-an-address")
        endpoint = m.client_endpoint
    # stopped: nothing listens on its client port any more
    async with kc.AsyncClient([endpoint], timeout=2, retry_refused=False) as c:
        with pytest.raises(kc.Unavailable, match="nothing listens there"):
            await c.ping()
    # started again on the same data dir: the data is still there
    async with Member(config) as m, kc.AsyncClient([m.client_endpoint], timeout=10) as c:
        await wait_leader(c)
        kv = await c.get("greeting")
        assert kv is not None and kv.value == b"bye"


async def test_a_member_whose_client_port_is_taken_does_not_start_and_holds_nothing(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = config_for(tmp_path, "udp", client_port=port)
        member = Member(config)
        with pytest.raises(StartupError, match=f"cannot listen for clients on 127.0.0.1:{port}"):
            await member.start()
        assert member.node is None and member.server is None
    # nothing was left holding the data dir or the peer port: it starts now
    async with Member(config) as m, kc.AsyncClient([m.client_endpoint], timeout=10) as c:
        assert (await wait_leader(c))["role"] == "leader"


def test_an_unknown_transport_is_a_startup_error(tmp_path):
    config = config_for(tmp_path, "carrier-pigeon")
    with pytest.raises(StartupError, match="unknown transport"):
        asyncio.run(Member(config).start())


async def meshraft_cli(*args: str) -> tuple[int, str, str]:
    """Run ``meshraft ARGS`` without blocking this loop (the member runs on it)."""
    env = {**os.environ, "MESHRAFT_ENDPOINTS": ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshraft.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_member_stopped_by_a_bug_says_so_to_clients_and_in_status(tmp_path,
                                                                          monkeypatch):
    """Fail-stop: a bug inside Raft stops the member; every request gets a clear
    'unavailable' with the reason (no hang, no stale serializable read), and
    `meshraft status` shows the failure."""
    config = config_for(tmp_path, "udp")
    async with Member(config) as m, kc.AsyncClient([m.client_endpoint], timeout=10) as c:
        await wait_leader(c)
        await c.put("k", "v")
        tick = RaftCore.tick

        def buggy_tick(self):
            raise KeyError("injected bug")

        monkeypatch.setattr(RaftCore, "tick", buggy_tick)
        st = await poll_status(c, lambda st: st.get("failed") is not None)
        monkeypatch.setattr(RaftCore, "tick", tick)
        assert "KeyError" in st["failed"] and "fail-stop" in st["failed"]
        async with kc.AsyncClient([m.client_endpoint], timeout=1.0) as one:
            for op in (one.put("k", "w"), one.get("k"), one.get("k", serializable=True),
                       one.list(serializable=True)):
                started = time.monotonic()
                with pytest.raises(kc.Unavailable, match="fail-stop") as info:
                    await op
                assert "injected bug" in info.value.message
                assert time.monotonic() - started < 5  # the client's timeout, not a hang
        code, out, err = await meshraft_cli("status", "--endpoints", m.client_endpoint)
        assert code == 0, err
        failed_line = next(line for line in out.splitlines() if line.startswith("FAILED:"))
        assert "fail-stop" in failed_line and "injected bug" in failed_line
        code, out, err = await meshraft_cli("status", "--json", "--endpoints",
                                            m.client_endpoint)
        assert code == 0, err
        assert json.loads(out)["failed"] == st["failed"]
        code, out, err = await meshraft_cli("get", "k", "--timeout", "1",
                                            "--endpoints", m.client_endpoint)
        assert code == 3 and "fail-stop" in err, (code, out, err)
