"""The lease checker on hand-made histories: a good one passes, and each kind of bad
one (a key lost while a keepalive was young, a keepalive refused early, a lapsed
lease's key outliving TTL + bound) is caught."""

from __future__ import annotations

from jepsen_lite.lease_checker import check_lease_history

S = 1_000_000_000


class H:
    """A tiny history builder: times in seconds."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def ev(self, t: float, process, typ: str, f: str, key=None, value=None, **kw) -> None:
        e = {"index": len(self.events), "time": int(t * S), "process": process, "type": typ,
             "f": f, "value": value, **kw}
        if key is not None:
            e["key"] = key
        self.events.append(e)

    def op(self, t0: float, t1: float, f: str, value=None, out=None, typ="ok", key="s",
           process=0, **kw) -> None:
        self.ev(t0, process, "invoke", f, key, value)
        self.ev(t1, process, typ, f, key, out if typ == "ok" else value, **kw)


def session(h: H, ttl: int = 2) -> None:
    h.op(0.0, 0.1, "grant", ttl, 7)
    h.op(0.1, 0.2, "put", 7)
    h.op(1.0, 1.1, "keepalive", 7, ttl)
    h.op(1.1, 1.2, "read", None, 7)


def test_a_good_history_passes_and_measures_the_expiry():
    h = H()
    session(h)
    h.op(1.3, 1.3, "lapse", 7, 7)
    h.op(2.0, 2.1, "read", None, 7)  # still there: 1.0 + 2 s not reached
    h.op(3.2, 3.3, "read", None, None)  # gone after 1.0 + TTL: fine
    r = check_lease_history(h.events)
    assert r.valid, r.violations
    assert (r.sessions, r.lapsed, r.checked_expiries) == (1, 1, 1)
    assert r.guarded_ops == 3  # the keepalive, and the reads at 1.2 and 2.1
    assert abs(r.expiry_delays[0] - (3.3 - 1.1)) < 1e-6
    assert r.to_json()["valid"] is True


def test_a_key_lost_while_a_keepalive_was_young_is_caught():
    h = H()
    session(h)
    h.op(2.5, 2.8, "read", None, None)  # 1.0 (keepalive invoked) + 2 s = 3.0 > 2.8
    r = check_lease_history(h.events)
    assert not r.valid
    assert [v["kind"] for v in r.violations] == ["key-lost-early"]
    assert r.violations[0]["op"]["invoke_line"] == 9


def test_age_is_measured_from_the_keepalive_invocation():
    h = H()
    session(h)
    h.op(2.9, 3.05, "read", None, None)  # completes after 1.0 + 2 s: allowed
    assert check_lease_history(h.events).valid
    # an unacknowledged (failed) keepalive promises nothing
    h2 = H()
    h2.op(0.0, 0.1, "grant", 2, 7)
    h2.op(0.1, 0.2, "put", 7)
    h2.op(1.0, 1.1, "keepalive", 7, typ="fail", error="Unavailable: no leader")
    h2.op(2.2, 2.3, "read", None, None)  # after grant + 2 s: allowed
    assert check_lease_history(h2.events).valid


def test_a_keepalive_refused_early_is_caught():
    h = H()
    session(h)
    h.op(1.5, 1.6, "keepalive", 7, typ="fail", error="lease not found")
    r = check_lease_history(h.events)
    assert [v["kind"] for v in r.violations] == ["lease-lost-early"]


def test_a_revoked_lease_may_lose_its_key_at_once():
    h = H()
    session(h)
    h.op(1.3, 1.4, "revoke", 7)
    h.op(1.5, 1.6, "read", None, None)
    r = check_lease_history(h.events)
    assert r.valid and r.revoked == 1


def test_a_lapsed_lease_outliving_ttl_plus_bound_is_caught():
    h = H()
    session(h)
    h.op(1.3, 1.3, "lapse", 7, 7)
    h.op(1.1 + 2 + 5 + 0.5, 8.7, "read", None, 7)  # past 1.1 + TTL + 5 s
    r = check_lease_history(h.events)
    assert [v["kind"] for v in r.violations] == ["key-outlived-lease"]


def test_a_fault_in_progress_moves_the_expiry_deadline():
    h = H()
    session(h)
    h.op(1.3, 1.3, "lapse", 7, 7)
    h.ev(1.5, "nemesis", "info", "start-pause", value="n1")
    h.ev(9.0, "nemesis", "info", "stop-pause", value="n1")
    h.op(12.0, 12.1, "read", None, 7)  # within 9.0 + 2 + 5: no violation
    h.op(16.5, 16.6, "read", None, 7)  # past it: caught
    r = check_lease_history(h.events)
    assert [v["kind"] for v in r.violations] == ["key-outlived-lease"]
    assert r.violations[0]["op"]["invoke_line"] == 15
