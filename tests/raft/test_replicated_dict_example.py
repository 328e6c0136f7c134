"""cmd/replicated_dict.py, the Raft layer used as a library, run as a user would: three
real processes on real UDP and HTTP sockets (ports from the OS). One is killed with
SIGKILL while the others take writes, then started again on its data dir: it catches
up and serves every write, with linearizable reads, from any member."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import ProcessManager, free_ports, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "cmd" / "replicated_dict.py"
IDS = ["1", "2", "3"]


def request(url: str, method: str = "GET", body: bytes | None = None,
            timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def put(base: str, key: str, value: bytes, timeout: float = 20.0) -> int:
    """PUT until the member says it applied it; 503 (no leader yet, outcome unknown)
    is retried, which is safe here: setting a key twice leaves the same value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = request(f"{base}/kv/{key}", "PUT", value)
            if status == 200:
                return json.loads(body)["index"]
            assert status == 503, (status, body)
            last = body
        except OSError as exc:  # the member is not listening (yet)
            last = repr(exc).encode()
        if time.monotonic() > deadline:
            raise AssertionError(f"PUT {key} not applied within {timeout}s: {last!r}")
        time.sleep(0.05)


def get(base: str, key: str) -> bytes | None:
    status, body = request(f"{base}/kv/{key}")
    if status == 404:
        return None
    assert status == 200, (status, body)
    return body


def status(base: str) -> dict:
    code, body = request(f"{base}/status", timeout=2.0)
    assert code == 200, body
    return json.loads(body)


def test_three_members_one_killed_and_restarted_catches_up(procs: ProcessManager,
                                                          tmp_path: Path) -> None:
    raft_ports, http_ports = free_ports(3), free_ports(3)
    peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in zip(IDS, raft_ports, strict=True))
    http = {i: f"http://127.0.0.1:{p}" for i, p in zip(IDS, http_ports, strict=True)}

    def start(i: str):
        return procs.start_raw(
            [sys.executable, str(EXAMPLE), "--id", i, "--peers", peers,
             "--data", str(tmp_path / f"data{i}"), "--http", http[i].removeprefix("http://"),
             "--snapshot-entries", "20", "--log-level", "WARNING"], name=f"member{i}")

    members = {i: start(i) for i in IDS}
    try:
        def one_leader() -> bool:
            leaders = {status(http[i])["leader"] for i in IDS}
            return len(leaders) == 1 and None not in leaders

        wait_until(one_leader, timeout=30, what="the three members to agree on a leader")
        for k in range(30):
            put(http[IDS[k % 3]], f"k{k}", b"v%d" % k)
        assert get(http["3"], "k29") == b"v29"  # (a read barrier first, on a follower too)

        members["3"].kill()  # SIGKILL, by PID
        assert not members["3"].alive()
        for k in range(30, 80):  # some overwrite keys member 3 has, some are new
            put(http[IDS[k % 2]], f"k{k % 50}", b"w%d" % k)
        expected = {f"k{k}": b"v%d" % k for k in range(30)}
        expected.update({f"k{k % 50}": b"w%d" % k for k in range(30, 80)})

        members["3"] = start("3")  # same data dir: replays its WAL, then catches up
        wait_until(lambda: get(http["3"], "k29") == b"w79", timeout=30,
                   what=f"member 3 to catch up\n{members['3'].log()}")
        commit = max(status(http[i])["commit_index"] for i in ("1", "2"))
        for key, value in expected.items():  # each GET waits for a read barrier
            assert get(http["3"], key) == value, key
        st = status(http["3"])
        assert st["keys"] == len(expected) == 50 and st["failed"] is None
        assert st["role"] in ("follower", "leader") and st["leader"] is not None
        assert st["applied_index"] >= commit
        # and it takes writes again, which the others see
        put(http["3"], "after", b"restart")
        assert get(http["1"], "after") == b"restart"
        assert all(m.alive() for m in members.values()), [m.log() for m in members.values()]
    finally:
        procs.stop_all()  # every process this test started, by PID
