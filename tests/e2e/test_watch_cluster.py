"""Watch on real `meshraft serve` processes: the Python client's watch survives the
member it is on being SIGKILLed, SIGSTOPped (silent: the client's liveness check) and
removed, while a writer writes increasing values; the watcher's log holds every
acknowledged write exactly once, in revision order. And the `meshraft watch` CLI."""

from __future__ import annotations

import json
import signal
import threading
import time

from e2e_cluster import Cluster, wait_until

from meshraft.kv.client import Client, MeshraftError

cluster = __import__("e2e_cluster").cluster  # the fixture


class Writer(threading.Thread):
    """Puts 0, 1, 2, ... to one key, one at a time; remembers each acknowledged
    value's revision, and every value it tried."""

    def __init__(self, endpoints: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(endpoints, timeout=30, attempt_timeout=1.0)
        self.acked: dict[int, int] = {}  # value -> revision
        self.tried = 0
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self.tried = i + 1
            try:
                r = self.client.put("w/k", str(i))
                self.acked[i] = r.revision
            except MeshraftError:
                pass  # outcome unknown: it may or may not appear in the log
            i += 1
            time.sleep(0.01)
        self.client.close()


class Watcher(threading.Thread):
    def __init__(self, endpoints: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(endpoints, timeout=60, attempt_timeout=1.0, prefer_leader=False)
        self.watch = self.client.watch("w/", prefix=True, start_revision=1)
        self.log: list[tuple[int, int]] = []  # (revision, value)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for ev in self.watch:
                self.log.append((ev.revision, int(ev.value)))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def on(self, c: Cluster) -> str:
        ep = self.watch.endpoint
        return next(i for i, a in c.client.items() if a == f"{ep[0]}:{ep[1]}")

    def passes(self, n: int, within: float = 30.0) -> None:
        """Wait until the log grows by ``n`` events."""
        start = len(self.log)
        wait_until(lambda: len(self.log) >= start + n or self.error, within,
                   what=f"{n} more events at the watcher")
        assert self.error is None, repr(self.error)


def check(writer: Writer, watcher: Watcher) -> None:
    revs = [r for r, _ in watcher.log]
    values = [v for _, v in watcher.log]
    assert revs == sorted(set(revs)), "revisions must strictly increase (no duplicate)"
    assert values == sorted(set(values)), "values must strictly increase"
    assert all(0 <= v < writer.tried for v in values)
    logged = dict((v, r) for r, v in watcher.log)
    missing = {v: r for v, r in writer.acked.items() if logged.get(v) != r}
    assert not missing, f"acknowledged writes missing from the watch: {missing}"


def test_watch_resumes_across_kill_stop_and_remove_without_loss(cluster):
    c = cluster
    first = c.ids[0]
    others = [i for i in c.ids if i != first]
    writer = Writer(c.endpoints())
    watcher = Watcher(c.endpoints([first, *others]))
    writer.start()
    watcher.start()
    try:
        watcher.passes(20)
        assert watcher.on(c) == first

        # 1. SIGKILL the member the watch is on
        c.kill(first)
        watcher.passes(30)
        second = watcher.on(c)
        assert second != first and watcher.watch.resumes >= 1
        c.start(first)  # back, so that stopping another one leaves a quorum
        c.leader()

        # 2. SIGSTOP it: the connection goes silent; the liveness check moves on
        resumes = watcher.watch.resumes
        c.members[second].signal(signal.SIGSTOP)
        watcher.passes(30, within=60)
        third = watcher.on(c)
        assert third != second and watcher.watch.resumes > resumes
        c.members[second].signal(signal.SIGCONT)
        c.leader()

        # 3. remove it from the cluster: it cancels its watches "unavailable"
        resumes = watcher.watch.resumes
        r = c.cli("member", "remove", third, "--timeout", "30")
        assert r.returncode == 0, r.stderr
        watcher.passes(30, within=60)
        assert watcher.on(c) != third and watcher.watch.resumes > resumes
    finally:
        writer.stop.set()
        writer.join(60)
    last = max(writer.acked.values())
    wait_until(lambda: watcher.watch.revision >= last or watcher.error, 30,
               what="the watcher to reach the last write")
    assert watcher.error is None, repr(watcher.error)
    watcher.watch.close()
    watcher.join(10)
    watcher.client.close()
    assert len(writer.acked) > 80
    check(writer, watcher)


def test_cli_watch_prints_events_and_exits_1_when_compacted(cluster):
    c = cluster
    with c.client_for() as client:
        r0 = client.put("cfg/a", "probe")
        p = c.procs.start("watch", "cfg/", "--prefix", "--json", "--prev-kv", "--rev",
                          str(r0.revision), "--endpoints", c.endpoints(), name="watch")
        r1 = client.put("cfg/a", "1")
        client.put("other", "x")
        r2 = client.delete("cfg/a")

        def seen(n):
            lines = [ln for ln in p.log().splitlines() if ln.startswith("{")]
            return lines if len(lines) >= n else None

        events = [json.loads(ln) for ln in wait_until(lambda: seen(3), 30,
                                                       what="three events")]
        assert [(e["type"], e["mod_revision"]) for e in events] == [
            ("PUT", r0.revision), ("PUT", r1.revision), ("DELETE", r2.revision)]
        assert events[1]["value"] == "1" and events[1]["prev_kv"]["value"] == "probe"
        assert events[0]["prev_kv"] is None and events[0]["version"] == 1
        assert events[2]["prev_kv"]["value"] == "1" and events[2]["version"] == 0
        p.signal(signal.SIGINT)
        assert p.wait(20) == 0, p.log()

        for i in range(3):
            client.put("h", str(i))
        rev = client.put("h", "last").revision
    r = c.cli("compact", str(rev))
    assert r.returncode == 0, r.stderr
    r = c.cli("watch", "h", "--rev", "1", "--timeout", "10")
    assert r.returncode == 1
    assert f"compacted at {rev}" in r.stderr
    r = c.cli("watch", "", "--timeout", "5")
    assert r.returncode == 2 and "empty" in r.stderr


def test_member_cut_off_from_the_quorum_cancels_its_watches_and_the_watch_resumes(cluster):
    """The other two members stop (SIGSTOP): the watched member has no leader; after
    about two election timeouts it cancels its watches with unavailable (and refuses
    new ones) instead of serving a stream that cannot move. Once the others are back,
    the watch resumes and misses nothing."""
    c = cluster
    first = c.ids[0]
    others = [i for i in c.ids if i != first]
    writer = Writer(c.endpoints())
    watcher = Watcher(c.endpoints([first, *others]))
    writer.start()
    watcher.start()
    try:
        watcher.passes(20)
        assert watcher.on(c) == first
        resumes = watcher.watch.resumes
        for i in others:
            c.members[i].signal(signal.SIGSTOP)
        wait_until(lambda: "cancelling every watch" in c.members[first].log(), 30,
                   what="the cut-off member to cancel its watches")
        assert "no leader" in c.members[first].log()
        wait_until(lambda: watcher.watch.resumes > resumes, 30, what="the watch to resume")
        for i in others:
            c.members[i].signal(signal.SIGCONT)
        c.leader()
        watcher.passes(30, within=60)
    finally:
        for i in others:
            c.members[i].signal(signal.SIGCONT)
        writer.stop.set()
        writer.join(60)
    last = max(writer.acked.values())
    wait_until(lambda: watcher.watch.revision >= last or watcher.error, 30,
               what="the watcher to reach the last write")
    assert watcher.error is None, repr(watcher.error)
    watcher.watch.close()
    watcher.join(10)
    watcher.client.close()
    check(writer, watcher)
