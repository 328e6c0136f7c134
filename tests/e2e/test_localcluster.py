"""meshraft.localcluster through its public functions: who is leader, the addresses
and command line of a member, and stopping processes by PID (real child processes;
no cluster: the e2e tests start real clusters through it)."""

from __future__ import annotations

import signal
import sys
import time

from meshraft.localcluster import (
    MemberAddr,
    peers_arg,
    pick_leader,
    plan_members,
    serve_argv,
    start_process,
    stop_processes,
)


def test_pick_leader_prefers_the_highest_term_and_a_member_that_says_so() -> None:
    assert pick_leader({}) is None
    assert pick_leader({"1": None, "2": {"role": "follower", "term": 3}}) is None
    # hearsay counts, unless the caller wants a self-declared leader only
    hearsay = {"1": {"role": "follower", "term": 3, "leader": "2"}, "2": None}
    assert pick_leader(hearsay) == "2"
    assert pick_leader(hearsay, hearsay=False) is None
    # a stale leader of an older term loses to the newer term's leader
    stale = {"1": {"role": "leader", "term": 2, "id": "1"},
             "2": {"role": "leader", "term": 5, "id": "2"},
             "3": {"role": "follower", "term": 5, "leader": "2"}}
    assert pick_leader(stale) == "2"
    # in one term, a member that says it leads wins over one naming another
    same = {"1": {"role": "follower", "term": 4, "leader": "3"},
            "2": {"role": "leader", "term": 4, "id": "2"}}
    assert pick_leader(same) == "2"


def test_plan_members_and_serve_argv() -> None:
    members = plan_members(3)
    assert [m.id for m in members] == ["1", "2", "3"]
    ports = [int(a.rsplit(":", 1)[1]) for m in members for a in (m.peer, m.client)]
    assert len(set(ports)) == 6
    assert peers_arg(members) == ",".join(f"{m.id}={m.peer}" for m in members)
    argv = serve_argv(members[1], members, "/d/2", "udp", ["--log-level", "debug"])
    assert argv[:3] == [sys.executable, "-m", "meshraft.cli"]
    assert argv[3:] == ["serve", "--id", "2", "--peers", peers_arg(members), "--client",
                        members[1].client, "--data-dir", "/d/2", "--transport", "udp",
                        "--log-level", "debug"]
    inside = MemberAddr("1", "10.0.0.1:7000", "10.0.0.1:7001", listen="0.0.0.0:7000")
    assert serve_argv(inside, [inside], "/d")[8:10] == ["--listen", "0.0.0.0:7000"]
    assert plan_members(2, ids=["a", "b"])[1].id == "b"


def test_stop_processes_terms_then_kills_what_ignores_term(tmp_path) -> None:
    polite = start_process("polite", [sys.executable, "-c", "import time; time.sleep(60)"],
                           tmp_path / "polite.log")
    stubborn = start_process(
        "stubborn", [sys.executable, "-c",
                     "import signal, sys, time\n"
                     "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                     "print('ready', flush=True)\n"
                     "time.sleep(60)"],
        tmp_path / "stubborn.log", header="=== start #1\n")
    deadline = time.monotonic() + 10
    while "ready" not in stubborn.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed: list[str] = []
    stop_processes([polite, stubborn], timeout=1.0, on_kill=lambda p: killed.append(p.name))
    assert not polite.alive() and polite.returncode == -signal.SIGTERM
    assert not stubborn.alive() and stubborn.returncode == -signal.SIGKILL
    assert killed == ["stubborn"]
    assert stubborn.log_tail().splitlines() == ["=== start #1", "ready"]
