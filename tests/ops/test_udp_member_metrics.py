"""A member over the UDP transport (no mesh) serves the Raft, storage and kv metrics
and no mesh families; a scrape never fails because a layer is absent. In-process, with
the public Member API."""

from __future__ import annotations

import socket

import aiohttp
from ops_helpers import parse_exposition

from meshraft.kv.client import AsyncClient
from meshraft.member import Member, MemberConfig
from meshraft.ops.metrics import PREFIX


async def test_udp_member_metrics(tmp_path, caplog) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a port from the OS
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = MemberConfig(node_id="1", peers={"1": ("127.0.0.1", port)},
                          listen=("127.0.0.1", port), client=("127.0.0.1", 0),
                          data_dir=tmp_path, transport="udp", metrics=("127.0.0.1", 0))
    async with Member(config) as m:
        async with AsyncClient([m.client_endpoint], timeout=20) as c:
            await c.put(b"k", b"v")
            status = await c.status()
        assert status["metrics"] == m.ops.address
        async with aiohttp.ClientSession() as s, s.get(
                f"http://{m.ops.address}/metrics") as r:
            assert r.status == 200
            samples = parse_exposition(await r.text())
    assert samples[PREFIX + "server_is_leader"] == [({}, 1.0)]
    assert samples[PREFIX + "mvcc_keys"] == [({}, 1.0)]
    assert not [n for n in samples if n.startswith(PREFIX + "mesh")]
    assert "metrics:" not in caplog.text  # no collector part failed
