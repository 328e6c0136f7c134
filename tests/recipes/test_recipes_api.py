"""meshraft.recipes without a cluster: its public names, that it loads neither the
server nor raft (it is a client-side package), and bad arguments refused early."""

from __future__ import annotations

import subprocess
import sys

import pytest

import meshraft.recipes as recipes
from meshraft.kv.client import AsyncClient
from meshraft.recipes import Lock, LockNotHeld, Session


def test_public_names_resolve():
    for name in recipes.__all__:
        assert getattr(recipes, name) is not None, name


def test_importing_recipes_loads_neither_the_server_nor_raft():
    code = ("import sys, meshraft.recipes; "
            "print(sorted(m for m in sys.modules if m.startswith('meshraft')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "meshraft.kv.server" not in out and "meshraft.raft" not in out, out


@pytest.mark.parametrize("ttl", [0, -1, 1.5, True])
def test_a_session_ttl_is_a_whole_number_of_seconds(ttl):
    with pytest.raises(ValueError, match="ttl"):
        Session(AsyncClient("127.0.0.1:1"), ttl)


async def test_lock_names_and_unheld_locks():
    s = Session(AsyncClient("127.0.0.1:1"), 5)
    with pytest.raises(ValueError, match="empty"):
        Lock(s, "")
    lock = Lock(s, "a")
    assert lock.prefix == b"a/"
    with pytest.raises(LockNotHeld):
        lock.fence()
    assert not await lock.is_held()
    await lock.release()  # not held: nothing to do, no request
