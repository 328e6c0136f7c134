"""The lock-set checker on hand-made histories: an acknowledged add missing from the
final set is a loss (named, with its token), a refused add present is a bug, unknown
adds may go either way, and a history without a final read cannot be judged."""

from __future__ import annotations

from jepsen_lite.lockset_checker import check_lockset_history


def _add(p, v, tok, t="ok", **extra):
    return [{"process": p, "type": "invoke", "f": "add", "value": v, "token": tok},
            {"process": p, "type": t, "f": "add", "value": v, "token": tok, **extra}]


def _final(values):
    return [{"process": "final", "type": "invoke", "f": "final-read", "value": None},
            {"process": "final", "type": "ok", "f": "final-read", "value": values}]


def test_every_acknowledged_add_present_is_valid():
    h = [*_add(0, 1, 5), *_add(1, 2, 7, "fail", stalled=5.0), *_add(2, 3, 9, "info"),
         *_final([1])]
    r = check_lockset_history(h)
    assert r.valid and r.acknowledged == 1 and r.failed == 1 and r.unknown == 1
    assert r.stalls == 1 and r.unknown_present == 0
    assert "every acknowledged add" in r.explain()


def test_a_lost_update_is_reported_with_its_token():
    h = [*_add(0, 1, 5), *_add(1, 2, 7, stalled=5.0), *_add(0, 3, 9), *_final([2])]
    r = check_lockset_history(h)
    assert not r.valid
    assert [x["value"] for x in r.lost] == [1, 3] and r.lost[0]["token"] == 5
    assert "LOST" in r.explain() and r.to_json()["lost_count"] == 2


def test_a_refused_add_that_applied_is_invalid():
    r = check_lockset_history([*_add(0, 1, 5, "fail"), *_final([1])])
    assert not r.valid and r.unexpected and "refused" in r.explain()


def test_no_final_read_cannot_be_judged():
    r = check_lockset_history(_add(0, 1, 5))
    assert not r.valid and r.error and "final read" in r.explain()
