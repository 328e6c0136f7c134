"""`meshraft lock` and `meshraft elect` as real processes against three real members:
the token in CMD's environment, CMD's exit code, release on exit and on SIGINT, a
SIGKILLed holder whose lock passes after its TTL, and elect/listen printing leaders
in order (a resign included)."""

from __future__ import annotations

import signal
import sys
import time

from recipes_helpers import cluster, wait_until  # noqa: F401  (cluster: the fixture)

# CMD for `meshraft lock`: print the token, then wait for a file (bounded) and exit 7.
HOLD = ("import os, sys, time, pathlib\n"
        "print('token', os.environ['MESHRAFT_LOCK_TOKEN'], flush=True)\n"
        "end = time.monotonic() + 60\n"
        "while time.monotonic() < end and not pathlib.Path(sys.argv[1]).exists():\n"
        "    time.sleep(0.05)\n"
        "sys.exit(7)\n")


def _lock(cluster, name: str, flag, *extra: str, proc_name: str = "lock"):  # noqa: F811
    return cluster.procs.start_raw(
        [sys.executable, "-m", "meshraft.cli", "lock", name, "--endpoints",
         cluster.endpoints(), *extra, "--", sys.executable, "-c", HOLD, str(flag)],
        name=proc_name)


def _token(proc) -> int:
    for line in proc.log().splitlines():
        if line.startswith("token "):
            return int(line.split()[1])
    return 0


def test_lock_runs_cmd_with_the_token_and_releases_when_it_ends(cluster):  # noqa: F811
    flag = cluster.procs.tmpdir("flag") / "done"
    first = _lock(cluster, "cli", flag, "--ttl", "30", proc_name="first")
    t1 = wait_until(lambda: _token(first), 20, what="the first holder's token")
    second = _lock(cluster, "cli", flag, "--ttl", "30", proc_name="second")
    with cluster.client_for() as c:
        wait_until(lambda: len(c.list("cli/")) == 2, 20, what="the second in the queue")
        assert _token(second) == 0  # waiting: CMD not started
        flag.touch()  # both CMDs may end now; the second runs only after the first
        assert first.wait(20) == 7, first.log()
        assert second.wait(20) == 7, second.log()
        assert _token(second) > t1
        assert c.list("cli/") == []  # released (keys deleted, leases revoked)


def test_lock_releases_on_sigint_and_exits_with_the_signal(cluster):  # noqa: F811
    flag = cluster.procs.tmpdir("flag") / "never"
    holder = _lock(cluster, "int", flag, "--ttl", "30")
    wait_until(lambda: _token(holder), 20, what="the holder's token")
    holder.signal(signal.SIGINT)  # passed on to CMD (python: KeyboardInterrupt)
    rc = holder.wait(20)
    assert rc not in (None, 0), holder.log()
    with cluster.client_for() as c:
        assert c.list("int/") == []


def test_sigkilled_holder_loses_the_lock_after_its_ttl(cluster):  # noqa: F811
    flag = cluster.procs.tmpdir("flag") / "done"
    holder = _lock(cluster, "kill", flag, "--ttl", "2", proc_name="holder")
    t1 = wait_until(lambda: _token(holder), 20, what="the holder's token")
    waiter = _lock(cluster, "kill", flag, "--ttl", "5", proc_name="waiter")
    with cluster.client_for() as c:
        wait_until(lambda: len(c.list("kill/")) == 2, 20, what="the waiter in the queue")
        holder.kill()  # SIGKILL: no release; the lease must lapse
        killed = time.monotonic()
        t2 = wait_until(lambda: _token(waiter), 20, what="the waiter to get the lock")
        waited = time.monotonic() - killed
        assert t2 > t1
        assert waited < 2 + 5, waited  # within the TTL plus the expiry bound
        flag.touch()
        assert waiter.wait(20) == 7, waiter.log()


def test_elect_and_listen_print_leaders_in_order(cluster):  # noqa: F811
    def start(*args: str, name: str):
        return cluster.procs.start_raw(
            [sys.executable, "-m", "meshraft.cli", "elect", "boss", *args, "--ttl", "10",
             "--endpoints", cluster.endpoints()], name=name)

    listener = start("--listen", name="listen")
    a = start("alpha", name="alpha")
    wait_until(lambda: "leading boss as alpha" in a.log(), 20, what="alpha to lead")
    wait_until(lambda: listener.log().splitlines()[-1:] == ["alpha"], 20,
               what="the listener to print alpha")
    b = start("beta", name="beta")
    with cluster.client_for() as c:
        wait_until(lambda: len(c.list("boss/")) == 2, 20, what="beta to campaign")
    assert "leading" not in b.log()
    a.signal(signal.SIGINT)  # alpha resigns: beta leads
    assert a.wait(20) == 0, a.log()
    wait_until(lambda: "leading boss as beta" in b.log(), 20, what="beta to lead")
    wait_until(lambda: listener.log().splitlines()[-1:] == ["beta"], 20,
               what="the listener to print beta")
    assert [ln for ln in listener.log().splitlines() if ln] == ["alpha", "beta"]
    b.signal(signal.SIGTERM)
    assert b.wait(20) == 0, b.log()
    listener.signal(signal.SIGINT)
    assert listener.wait(20) == 0, listener.log()
