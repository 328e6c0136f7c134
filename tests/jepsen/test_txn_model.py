"""The txn model (multi-key conditional transactions): its semantics, and the checker
with it agreeing with the brute-force checker on random small histories, valid and
mutated."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from jepsen_lite.checker import check_history, prepare_ops
from jepsen_lite.history import Op
from jepsen_lite.models import ILLEGAL
from jepsen_lite.txn_model import TxnModel, mutate_txn, random_txn, simulate_txn
from test_checker_props import brute_force_ops

M = TxnModel()


def op(value, output=None, status="ok"):
    return Op(id=0, process=0, f="txn", key="g0", value=value, status=status, output=output)


def test_branches_reads_and_writes_in_order():
    t = [[["r0", None]], [["r", "r0", None], ["w", "r0", 1], ["r", "r0", None],
                          ["w", "r1", 2]], [["r", "r1", None]]]
    # r0 absent: the compare holds; the read after the write sees it
    s = M.step((), op(t, [True, [None, 1]]))
    assert s == (("r0", 1), ("r1", 2))
    assert M.step((), op(t, [True, [None, None]])) is ILLEGAL
    assert M.step((), op(t, [False, [None]])) is ILLEGAL
    # now r0 is present: the else branch runs and reads r1
    assert M.step(s, op(t, [False, [2]])) == s
    # an info op's branch follows the state; its reads constrain nothing
    assert M.step(s, op(t, status="info")) == s
    assert M.step((), op(t, status="info")) == (("r0", 1), ("r1", 2))


def test_validation_and_read_only():
    assert M.validate(op([[], [["w", "r0", 1], ["w", "r0", 2]], []], [True, []])) \
        .startswith("a branch writes a register twice")
    assert "compares" in M.validate(op([[["r0"]], [], []], [True, []]))
    assert "one value per read" in M.validate(op([[], [["r", "r0", None]], []], [True, []]))
    assert M.validate(op([[], [["r", "r0", None]], []], [True, [3]])) is None
    assert M.read_only(op([[], [["r", "r0", None]], [["r", "r1", None]]]))
    assert not M.read_only(op([[], [], [["w", "r1", 0]]]))
    rng = random.Random(1)
    for _ in range(200):
        t = random_txn(rng)
        assert M.validate(op(t, status="info")) is None
    assert "if r0==absent" in M.describe(op([[["r0", None]], [["w", "r0", 1]], []],
                                            [True, []]))


def test_a_stale_multi_key_read_is_caught():
    h = []

    def ev(i, p, typ, value):
        h.append({"index": i, "process": p, "type": typ, "f": "txn", "key": "g0",
                  "value": value})
    w = [[], [["w", "r0", 1], ["w", "r1", 1]], []]
    r = [[], [["r", "r0", None], ["r", "r1", None]], []]
    ev(0, 0, "invoke", w)
    ev(1, 0, "ok", [True, []])
    ev(2, 1, "invoke", r)
    ev(3, 1, "ok", [True, [1, None]])  # half of an atomic write: never a state
    res = check_history(h, M)
    assert res.valid is False
    assert brute_force_ops(prepare_ops(h, M), M) is False


@settings(max_examples=150)
@given(seed=st.integers(0, 10**9), n_ops=st.integers(1, 7), procs=st.integers(1, 4),
       crash=st.sampled_from([0.0, 0.3]), groups=st.integers(1, 2))
def test_simulated_histories_are_linearizable_by_both(seed, n_ops, procs, crash, groups):
    h = simulate_txn(ops=n_ops, processes=procs, groups=groups, seed=seed, crash=crash)
    assert brute_force_ops(prepare_ops(h, M), M) is True
    assert check_history(h, M).valid is True


@settings(max_examples=200)
@given(seed=st.integers(0, 10**9), n_ops=st.integers(2, 7), procs=st.integers(1, 4),
       crash=st.sampled_from([0.0, 0.3]), mutations=st.integers(1, 3))
def test_mutated_histories_agree_with_brute_force(seed, n_ops, procs, crash, mutations):
    h = simulate_txn(ops=n_ops, processes=procs, seed=seed, crash=crash)
    m = mutate_txn(h, random.Random(seed), mutations)
    expected = brute_force_ops(prepare_ops(m, M), M)
    assert check_history(m, M).valid is expected


def test_mutations_do_refute_some_histories():
    """The property above is not vacuous: mutated histories include invalid ones."""
    verdicts = set()
    for seed in range(60):
        h = simulate_txn(ops=6, processes=3, seed=seed)
        m = mutate_txn(h, random.Random(seed), 2)
        verdicts.add(brute_force_ops(prepare_ops(m, M), M))
    assert verdicts == {True, False}


def test_a_larger_history_checks_quickly():
    h = simulate_txn(ops=2000, processes=10, groups=4, seed=7, crash=0.05)
    res = check_history(h, M, 60)
    assert res.valid is True
