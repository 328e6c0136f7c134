"""The watch checker (jepsen_lite.watch_checker): valid logs pass; a gap, a duplicate,
a reorder, a split revision, a disagreeing value, a value no write wrote and a gap at a
reopen are each caught with a message naming the watcher, session and revision; and
property tests: any log cut from a true history passes, and one mutation of it is caught
by the check it breaks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jepsen_lite.history import HistoryError, write_history
from jepsen_lite.report import write_watch_report
from jepsen_lite.watch_checker import check_watch, describe


class H:
    """A history builder in the watch workload's format."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def _add(self, **ev) -> dict:
        ev = {"index": len(self.events), "time": len(self.events) * 1000, **ev}
        self.events.append(ev)
        return ev

    def write(self, process: int, key: int, value: int, revision: int | None,
              status: str = "ok") -> None:
        self._add(process=process, type="invoke", f="write", key=key, value=value)
        extra = {"revision": revision} if status == "ok" else {"error": "boom"}
        self._add(process=process, type=status, f="write", key=key, value=value, **extra)

    def txn(self, process: int, pairs: list[list], revision: int | None,
            status: str = "ok") -> None:
        """A transaction putting every [key, value] of ``pairs`` at one revision."""
        self._add(process=process, type="invoke", f="write", value=pairs)
        extra = {"revision": revision} if status == "ok" else {"error": "boom"}
        self._add(process=process, type=status, f="write", value=pairs, **extra)

    def watch(self, process: int, start: int, events: list[list], progress: int | None = None,
              status: str = "ok") -> None:
        self._add(process=process, type="invoke", f="watch", value=start)
        extra = {"error": "Compacted: at 3"} if status == "fail" else {}
        self._add(process=process, type=status, f="watch", value=start, events=events,
                  progress=progress, **extra)


def writes_1_to(h: H, n: int) -> None:
    """n acknowledged writes: revision r puts key r % 2 = r (one writer, in order)."""
    for r in range(1, n + 1):
        h.write(0, r % 2, r, r)


def ev(r: int) -> list:
    return [r, r % 2, r, "PUT"]


def kinds(res) -> set[str]:
    return {k for k, n in res.counts.items() if n}


def test_a_valid_history_passes():
    h = H()
    writes_1_to(h, 6)
    h.watch(1, 1, [ev(r) for r in (1, 2, 3)], progress=3)
    h.watch(1, 4, [ev(r) for r in (4, 5, 6)], progress=6)
    h.watch(2, 2, [ev(r) for r in (2, 3, 4, 5, 6)], progress=6)
    h.watch(3, 1, [], progress=0)  # opened before anything happened, saw nothing
    res = check_watch(h.events)
    assert res.valid, describe(res)
    assert res.stats["sessions"] == 4 and res.stats["watchers"] == 3
    assert res.stats["events_delivered"] == 11
    assert "watch guarantees hold" in "\n".join(describe(res))


def test_a_gap_is_caught():
    h = H()
    writes_1_to(h, 4)
    h.watch(1, 1, [ev(1), ev(2), ev(4)], progress=4)
    res = check_watch(h.events)
    assert not res.valid and kinds(res) == {"reliable"}
    (v,) = res.violations
    assert v.revision == 3 and v.process == 1 and v.session == 0
    assert "watcher p1 session #0" in v.message and "misses write p0 key 1 = 3" in v.message


def test_a_gap_beyond_the_last_event_is_caught_through_progress():
    """The session said it had everything up to 4 but its last event was 2."""
    h = H()
    writes_1_to(h, 4)
    h.watch(1, 1, [ev(1), ev(2)], progress=4)
    res = check_watch(h.events)
    assert kinds(res) == {"reliable"} and {v.revision for v in res.violations} == {3, 4}


def test_a_duplicate_is_caught_within_and_across_sessions():
    h = H()
    writes_1_to(h, 3)
    h.watch(1, 1, [ev(1), ev(2), ev(2), ev(3)], progress=3)
    res = check_watch(h.events)
    assert kinds(res) == {"unique"} and res.violations[0].revision == 2
    assert "delivered a second time" in res.violations[0].message
    h = H()
    writes_1_to(h, 3)
    h.watch(1, 1, [ev(1), ev(2)], progress=2)
    h.watch(1, 2, [ev(2), ev(3)], progress=3)  # a reopen that starts one too early
    res = check_watch(h.events)
    assert kinds(res) == {"unique"}
    assert "session #1" in res.violations[0].message


def test_a_reorder_is_caught():
    h = H()
    writes_1_to(h, 3)
    h.watch(1, 1, [ev(1), ev(3), ev(2)], progress=3)
    res = check_watch(h.events)
    assert kinds(res) == {"ordered"}
    (v,) = res.violations
    assert v.revision == 2 and "revision 2 (key 0) after revision 3" in v.message


def test_a_split_revision_is_caught():
    """Revision 2 holds two keys (as a transaction would); watcher 2 gets only one."""
    h = H()
    h.write(0, 1, 1, 1)
    h.write(0, 0, 2, None, status="info")
    h.write(0, 1, 2, None, status="info")
    h.watch(1, 1, [[1, 1, 1, "PUT"], [2, 0, 2, "PUT"], [2, 1, 2, "PUT"]], progress=2)
    h.watch(2, 1, [[1, 1, 1, "PUT"], [2, 0, 2, "PUT"]], progress=2)
    res = check_watch(h.events)
    assert kinds(res) == {"atomic"}, describe(res)
    (v,) = res.violations
    assert v.process == 2 and v.revision == 2
    assert "delivered only in part: 0=2 without 1=2" in v.message


def test_a_split_revision_across_a_reopen_is_caught():
    """The first session ends inside revision 2; the reopen from 3 never brings the rest."""
    h = H()
    h.write(0, 0, 2, None, status="info")
    h.write(0, 1, 2, None, status="info")
    h.write(0, 0, 3, 3)
    h.watch(1, 1, [[2, 0, 2, "PUT"], [2, 1, 2, "PUT"], [3, 0, 3, "PUT"]], progress=3)
    h.watch(2, 1, [[2, 0, 2, "PUT"]], progress=None)
    h.watch(2, 3, [[3, 0, 3, "PUT"]], progress=3)
    res = check_watch(h.events)
    assert kinds(res) == {"atomic"} and res.violations[0].session == 0


def test_transactions_are_delivered_whole_at_one_revision():
    h = H()
    h.write(0, 0, 1, 1)
    h.txn(0, [[0, 2], [1, 1]], 2)
    h.txn(0, [[0, 3], [2, 1]], None, status="info")
    whole = [[1, 0, 1, "PUT"], [2, 0, 2, "PUT"], [2, 1, 1, "PUT"], [3, 0, 3, "PUT"],
             [3, 2, 1, "PUT"]]
    h.watch(1, 1, whole, progress=3)
    h.watch(2, 2, whole[1:], progress=3)
    res = check_watch(h.events)
    assert res.valid, describe(res)
    assert res.stats["unknown_writes_seen"] == 1
    # an acknowledged transaction delivered in part: atomic
    h2 = H()
    h2.write(0, 0, 1, 1)
    h2.txn(0, [[0, 2], [1, 1]], 2)
    h2.watch(1, 1, [[1, 0, 1, "PUT"], [2, 0, 2, "PUT"]], progress=2)
    res = check_watch(h2.events)
    assert kinds(res) == {"atomic"} and "without 1=1" in res.violations[0].message


def test_a_transaction_of_unknown_outcome_seen_in_part_or_split_is_caught():
    h = H()
    h.txn(0, [[0, 1], [1, 1]], None, status="info")
    h.watch(1, 1, [[1, 0, 1, "PUT"], [1, 1, 1, "PUT"]], progress=1)
    h.watch(2, 1, [[1, 0, 1, "PUT"]], progress=1)  # the other put of revision 1 missing
    res = check_watch(h.events)
    assert kinds(res) == {"atomic"} and res.violations[0].process == 2
    h = H()
    h.txn(0, [[0, 1], [1, 1]], None, status="info")
    h.watch(1, 1, [[1, 0, 1, "PUT"], [2, 1, 1, "PUT"]], progress=2)  # split over 2 revisions
    res = check_watch(h.events)
    assert "atomic" in kinds(res)
    assert any("whose puts are one revision" in v.message for v in res.violations)


def test_watchers_that_disagree_are_caught():
    h = H()
    h.write(0, 0, 1, 1)
    h.write(0, 0, 2, None, status="info")
    h.write(0, 0, 3, None, status="info")
    h.watch(1, 1, [[1, 0, 1, "PUT"], [2, 0, 2, "PUT"]], progress=2)
    h.watch(2, 1, [[1, 0, 1, "PUT"], [2, 0, 3, "PUT"]], progress=2)
    res = check_watch(h.events)
    assert "agree" in kinds(res)
    v = next(v for v in res.violations if v.kind == "agree")
    assert v.process == 2 and v.revision == 2
    assert "0=3" in v.message and "watcher p1 session #0" in v.message and "0=2" in v.message


def test_a_value_that_disagrees_with_the_acknowledged_write_is_caught():
    h = H()
    h.write(0, 0, 1, 1)
    h.write(0, 0, 2, 2)
    h.watch(1, 1, [[1, 0, 1, "PUT"], [2, 0, 1, "PUT"]], progress=2)
    res = check_watch(h.events)
    assert "agree" in kinds(res) and "writes" in kinds(res)
    assert any("acknowledged at revision 1" in v.message for v in res.violations)


def test_an_event_no_write_could_produce_is_caught():
    h = H()
    h.write(0, 0, 1, 1)
    h.watch(1, 1, [[1, 0, 1, "PUT"], [2, 0, 99, "PUT"]], progress=2)
    res = check_watch(h.events)
    assert kinds(res) == {"writes"}
    assert "a value no write wrote" in res.violations[0].message


def test_a_failed_write_that_shows_up_is_caught_and_an_unknown_one_is_fine():
    h = H()
    h.write(0, 0, 1, None, status="info")
    h.write(0, 0, 2, None, status="fail")
    h.watch(1, 1, [[1, 0, 1, "PUT"]], progress=1)
    assert check_watch(h.events).valid
    h.watch(2, 1, [[1, 0, 1, "PUT"], [2, 0, 2, "PUT"]], progress=2)
    res = check_watch(h.events)
    assert kinds(res) == {"writes"}
    assert "certainly did not take effect" in res.violations[0].message
    assert check_watch(h.events).stats["unknown_writes_seen"] == 1


def test_a_gap_at_a_reopen_is_a_resumable_violation():
    h = H()
    writes_1_to(h, 5)
    h.watch(1, 1, [ev(1), ev(2)], progress=2)
    h.watch(1, 3, [ev(4), ev(5)], progress=5)  # reopened from 3 but 3 never came
    res = check_watch(h.events)
    assert kinds(res) == {"resumable"}
    (v,) = res.violations
    assert v.revision == 3 and v.session == 1 and "delivered up to 2" in v.message


def test_a_reopen_past_last_plus_one_is_a_gap_unless_compacted():
    h = H()
    writes_1_to(h, 5)
    h.watch(1, 1, [ev(1), ev(2)], progress=2)
    h.watch(1, 5, [ev(5)], progress=5)  # should have reopened at 3
    res = check_watch(h.events)
    assert kinds(res) == {"resumable"} and {v.revision for v in res.violations} == {3, 4}
    assert "should reopen at 3" in res.violations[0].message
    h = H()
    writes_1_to(h, 5)
    h.watch(1, 1, [ev(1), ev(2)], progress=None, status="fail")
    h.events[-1]["compact_revision"] = 4
    h.watch(1, 4, [ev(4), ev(5)], progress=5)
    assert check_watch(h.events).valid


def test_an_event_below_the_start_revision_is_caught():
    h = H()
    writes_1_to(h, 3)
    h.watch(1, 3, [ev(2), ev(3)], progress=3)
    assert "start" in kinds(check_watch(h.events))


def test_revisions_of_acknowledged_writes_follow_real_time():
    h = H()
    h.write(0, 0, 1, 5)
    h.write(0, 1, 2, 4)  # invoked after the first was acknowledged, yet a lower revision
    res = check_watch(h.events)
    assert kinds(res) == {"writes"} and "go back in real time" in res.violations[0].message


def test_a_revision_another_watcher_saw_counts_as_known():
    """A write whose client got an unknown outcome but which watcher 1 saw must be in
    watcher 2's log too."""
    h = H()
    h.write(0, 0, 1, 1)
    h.write(0, 1, 1, None, status="info")
    h.write(0, 0, 2, 3)
    h.watch(1, 1, [[1, 0, 1, "PUT"], [2, 1, 1, "PUT"], [3, 0, 2, "PUT"]], progress=3)
    h.watch(2, 1, [[1, 0, 1, "PUT"], [3, 0, 2, "PUT"]], progress=3)
    res = check_watch(h.events)
    assert kinds(res) == {"reliable"}
    assert "seen by another watcher" in res.violations[0].message


def test_malformed_histories_are_errors_not_verdicts():
    h = H()
    h._add(process=0, type="invoke", f="write", key=0, value=1)
    h._add(process=0, type="ok", f="write", key=0, value=1)  # no revision
    with pytest.raises(HistoryError, match="revision"):
        check_watch(h.events)
    h = H()
    h.watch(1, 1, [[1, 0, 1]], progress=1)
    with pytest.raises(HistoryError, match="watch event"):
        check_watch(h.events)
    h = H()
    h.write(0, 0, 1, 1)
    h.write(1, 0, 1, 2)
    with pytest.raises(HistoryError, match="two writes of key 0 value 1"):
        check_watch(h.events)
    h = H()
    h.txn(0, [[0, 1], [0, 2]], 1)
    with pytest.raises(HistoryError, match="writes a key twice"):
        check_watch(h.events)
    h = H()
    h.watch(1, 1, [[1, 0, [1], "PUT"]], progress=1)
    with pytest.raises(HistoryError, match="watch event"):
        check_watch(h.events)


def test_check_cli_with_model_watch(tmp_path):
    h = H()
    writes_1_to(h, 3)
    h.watch(1, 1, [ev(1), ev(3)], progress=3)
    path = tmp_path / "h.jsonl"
    write_history(path, h.events)
    res = subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "check", str(path),
                          "--model", "watch"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert "VIOLATED" in res.stdout and "[reliable]" in res.stdout
    res = subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "check", str(path),
                          "--model", "watch", "--json"], capture_output=True, text=True,
                         timeout=60)
    out = json.loads(res.stdout)
    assert out["valid"] is False and out["violations_by_kind"]["reliable"] == 1


def test_the_html_report_lists_each_violation_escaped(tmp_path):
    h = H()
    h.write(0, 0, 1, 1)
    h.watch(1, 1, [[1, 0, 1, "PUT"], [2, 0, "<b>x</b>", "PUT"]], progress=2)
    res = check_watch(h.events)
    write_watch_report(tmp_path / "r.html", res, source="h.jsonl")
    page = (tmp_path / "r.html").read_text()
    assert "watch guarantees VIOLATED" in page
    assert "a value no write wrote" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<b>x</b>" not in page


# ---------------------------------------------------------------- properties


@st.composite
def true_histories(draw):
    """A true run: n acknowledged or unknown writes on 3 keys, each at its own revision
    (unknown ones may not have happened: then no revision), and watchers whose sessions
    each read a contiguous run of the true event log, reopening at last + 1."""
    n = draw(st.integers(1, 25))
    h = H()
    log = []  # the true events, in revision order
    rev = 0
    for i in range(n):
        key = draw(st.integers(0, 2))
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
        happened = outcome == "ok" or (outcome == "info" and draw(st.booleans()))
        if happened:
            rev += 1
            log.append([rev, key, i, "PUT"])
        h.write(0, key, i, rev if outcome == "ok" else None, status=outcome)
    for p in range(1, draw(st.integers(1, 3)) + 1):
        start = 1
        for _ in range(draw(st.integers(0, 6))):  # sessions of this watcher
            if start > rev + 1:
                break
            end = draw(st.integers(start - 1, rev))  # it read everything up to `end`
            got = [e for e in log if start <= e[0] <= end]
            h.watch(p, start, got, progress=draw(st.sampled_from([end, None]))
                    if got else end)
            start = (got[-1][0] if got else start - 1) + 1
    return h, log


@given(true_histories())
def test_logs_cut_from_a_true_history_pass(hl):
    h, _ = hl
    res = check_watch(h.events)
    assert res.valid, describe(res)


MUTATIONS = {"drop": {"reliable", "resumable"}, "duplicate": {"unique"},
             "swap": {"ordered"}, "value": {"agree", "writes"}}


def droppable(h: H) -> list[tuple[dict, int]]:
    """(session completion, event position) whose loss is provable: the revision is
    known to exist apart from this event (an acknowledged write's, or another session
    delivered it), and the session claimed to cover it (a later event, its progress, or
    a later session of the same watcher that resumed past it)."""
    acked = {e["revision"] for e in h.events if e["f"] == "write" and e["type"] == "ok"}
    done = [e for e in h.events if e["f"] == "watch" and e["type"] == "ok"]
    out = []
    for s in done:
        others = {ev[0] for o in done if o is not s for ev in o["events"]}
        later = any(o["process"] == s["process"] and o["index"] > s["index"] for o in done)
        for i, ev in enumerate(s["events"]):
            known = ev[0] in acked or ev[0] in others
            covered = (i < len(s["events"]) - 1 or (s["progress"] or 0) >= ev[0] or later)
            if known and covered:
                out.append((s, i))
    return out


@given(true_histories(), st.sampled_from(sorted(MUTATIONS)), st.randoms(use_true_random=False))
def test_one_mutation_is_caught_by_the_check_it_breaks(hl, mutation, rnd):
    h, _ = hl
    if mutation == "drop":
        candidates = droppable(h)
        assume(candidates)
        s, i = rnd.choice(candidates)
        del s["events"][i]
    else:
        sessions = [e for e in h.events if e["f"] == "watch" and e["type"] == "ok"
                    and len(e["events"]) >= (2 if mutation == "swap" else 1)]
        assume(sessions)
        evs = rnd.choice(sessions)["events"]
        i = rnd.randrange(len(evs) - (1 if mutation == "swap" else 0))
        if mutation == "duplicate":
            evs.insert(i, list(evs[i]))
        elif mutation == "swap":
            evs[i], evs[i + 1] = evs[i + 1], evs[i]
        else:
            evs[i] = [evs[i][0], evs[i][1], 1000 + evs[i][2], "PUT"]
    res = check_watch(h.events)
    assert not res.valid
    assert kinds(res) & MUTATIONS[mutation], describe(res)
