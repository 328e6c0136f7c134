"""`serve --loop auto|asyncio|uvloop`: a cluster serves writes, reads and watches on
either event loop, each member says in its log which one it runs, and asking for
uvloop where it is not installed is a usage error (exit 2) that names the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ops_helpers import Cluster


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_cluster_serves_on_either_event_loop(procs, loop: str) -> None:
    c = Cluster(procs, extra_args=("--loop", loop))
    c.start_all()
    c.leader()
    with c.client_for() as cl:
        first = cl.put("k", "v0").revision
        cl.put("k", "v1")
        assert cl.get("k").value == b"v1"
        seen = []
        for ev in cl.watch("k", start_revision=first):  # history, then the live push
            seen.append(ev.value)
            if len(seen) == 2:
                cl.put("k", "v2")
            if ev.value == b"v2":
                break
        assert seen == [b"v0", b"v1", b"v2"]
    for i in c.ids:
        assert f"event loop: {loop}" in c.members[i].log(), f"member {i} on {loop}"


def test_uvloop_asked_for_but_missing_is_a_usage_error(tmp_path) -> None:
    hide = ("import sys; sys.modules['uvloop'] = None; "
            "from meshraft.cli import main; main()")
    r = subprocess.run(
        [sys.executable, "-c", hide, "serve", "--id", "n1", "--peers", "n1=127.0.0.1:0",
         "--client", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), "--loop", "uvloop"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "uvloop is not installed" in r.stderr and "meshraft[fast]" in r.stderr
