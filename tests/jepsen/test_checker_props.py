"""Property tests: the checker agrees with a brute-force checker that tries every
order allowed by the definition, on small histories generated from a model and on
mutated ones (most of which are not linearizable)."""

import dataclasses
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from jepsen_lite.checker import check_history, checkable_ops, prepare_ops
from jepsen_lite.models import ILLEGAL, get_model, simulate


def brute_force(events, model_name):
    """Linearizable iff some order of all ok ops and some info ops respects real time
    (a before b when a completed before b was invoked) and the model. No memo, no
    cleverness: the definition, tried exhaustively."""
    model = get_model(model_name)
    return brute_force_ops(prepare_ops(events, model), model)


def brute_force_ops(ops, model):
    ops = checkable_ops(ops, model)
    by_key = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)

    def ok_key(kops):
        def go(state, remaining):
            if not any(o.status == "ok" for o in remaining):
                return True
            for x in remaining:
                # x may go next only if no remaining op completed before x was invoked
                if any(y is not x and y.complete_index is not None and y.status == "ok"
                       and y.complete_index < x.invoke_index for y in remaining):
                    continue
                ns = model.step(state, x)
                if ns is ILLEGAL:
                    continue
                if go(ns, [y for y in remaining if y is not x]):
                    return True
            return False
        return go(model.init(), kops)

    return all(ok_key(k) for k in by_key.values())


def relaxed(op):
    """The op as if its outcome were unknown (may or may not have taken effect)."""
    return dataclasses.replace(op, status="info", output=None, complete_index=None)


def explanation_holds(events, model_name, f):
    """The failure's minimal set, within the history cut at the failing op's completion,
    cannot be linearized with every other op relaxed; relaxing any one more op of it
    makes the rest linearizable (1-minimal)."""
    model = get_model(model_name)
    cut = f.prefix_index
    base = []
    for op in prepare_ops(events, model):
        if op.key != f.key or op.invoke_index > cut or op.status == "fail":
            continue
        if op.status == "ok" and op.complete_index > cut:
            op = relaxed(op)
        base.append(op)
    keep = {o.id for o in f.minimal}
    assert {o.id for o in base} >= keep

    def hist(kept):
        return [op if op.id in kept else relaxed(op) for op in base]

    assert brute_force_ops(hist(keep), model) is False, "the minimal set is not failing"
    if f.minimal_complete and not f.context_ops:
        for o in f.minimal:
            assert brute_force_ops(hist(keep - {o.id}), model) is True, \
                f"the minimal set is not minimal: {o} is not needed"


def mutate(events, rng, n):
    ev = [dict(e) for e in events]
    for _ in range(n):
        completions = [e for e in ev if e["type"] != "invoke"]
        if not completions:
            break
        e = rng.choice(completions)
        kind = rng.randrange(5)
        if kind == 0 and e["type"] == "ok" and e["f"] in ("read", "get"):
            e["value"] = rng.choice([None, 0, 1, 2]) if e["f"] == "read" else \
                rng.choice(["", "a", "ab", "b"])
        elif kind == 1 and e["f"] == "cas" and e["type"] in ("ok", "fail"):
            e["type"] = "fail" if e["type"] == "ok" else "ok"
        elif kind == 2:
            e["type"] = "info"
            e["value"] = [x["value"] for x in ev if x["process"] == e["process"]
                          and x["type"] == "invoke" and x["index"] < e["index"]][-1]
        elif kind == 3 and e["type"] == "ok" and e["f"] in ("write", "put"):
            e["type"] = "fail"
        elif kind == 4:
            ev.remove(e)  # the invoke never completes
            # a process may not invoke again while open: move it to a fresh process id
            later = [x for x in ev if x["process"] == e["process"] and x["index"] > e["index"]]
            for x in later:
                x["process"] = 1000 + e["index"]
    return ev


# The profile (derandomized "ci" by default, "fuzz" on demand) is tests/conftest.py's;
# each test pins only its example count.
CI_EXAMPLES = settings(max_examples=150)


@CI_EXAMPLES
@given(seed=st.integers(0, 10**9), n_ops=st.integers(1, 7), procs=st.integers(1, 4),
       crash=st.sampled_from([0.0, 0.2, 0.5]), model=st.sampled_from(["cas-register", "kv"]))
def test_generated_histories_are_linearizable_by_both(seed, n_ops, procs, crash, model):
    h = simulate(model, ops=n_ops, processes=procs, keys=1, values=3, seed=seed, crash=crash)
    assert brute_force(h, model) is True
    assert check_history(h, model).valid is True


@CI_EXAMPLES
@given(seed=st.integers(0, 10**9), n_ops=st.integers(2, 7), procs=st.integers(1, 4),
       crash=st.sampled_from([0.0, 0.3]), mutations=st.integers(1, 3),
       model=st.sampled_from(["cas-register", "kv"]))
def test_mutated_histories_agree_with_brute_force(seed, n_ops, procs, crash, mutations, model):
    h = simulate(model, ops=n_ops, processes=procs, keys=1, values=3, seed=seed, crash=crash)
    m = mutate(h, random.Random(seed), mutations)
    expected = brute_force(m, model)
    r = check_history(m, model)
    assert r.valid is expected
    assert check_history(m, model, algorithm="dfs", explain=False).valid is expected
    assert check_history(m, model, algorithm="frontier", explain=False).valid is expected
    if expected is False:
        f = r.failures[0]
        # the reported minimal set is itself not linearizable (others relaxed), and
        # minimal ...
        assert f.op in f.minimal
        explanation_holds(m, model, f)
        # ... and the longest linearizable prefix really is linearizable
        prefix = [e for e in m if e["index"] < f.prefix_index]
        assert brute_force(prefix, model) is True


@CI_EXAMPLES
@given(seed=st.integers(0, 10**9), n_ops=st.integers(2, 6))
def test_two_keys_agree_with_brute_force(seed, n_ops):
    h = simulate(ops=n_ops * 2, processes=3, keys=2, values=2, seed=seed, crash=0.2)
    m = mutate(h, random.Random(seed), 2)
    expected = brute_force(m, "cas-register")
    assert check_history(m).valid is expected
    assert check_history(m, algorithm="frontier").valid is expected


@settings(max_examples=300)
@given(seed=st.integers(0, 10**9), n_ops=st.integers(2, 8), procs=st.integers(2, 8),
       crash=st.sampled_from([0.0, 0.2, 0.5]), values=st.sampled_from([2, 3, 0]),
       mutations=st.integers(0, 3), model=st.sampled_from(["cas-register", "kv"]))
def test_fast_search_agrees_with_brute_force_up_to_8_processes(
        seed, n_ops, procs, crash, values, mutations, model):
    """Up to 8 concurrent processes, info ops, few values (the reductions for
    identical ops and info classes) or unique ones (values=0: overwrite pruning, the
    search-free stale-op test, kv's dead ends), both models, with injected
    violations: the depth-first search alone, the default checker and the frontier
    search all agree with the definition."""
    h = simulate(model, ops=n_ops, processes=procs, keys=1, values=values or 3, seed=seed,
                 crash=crash, unique=not values)
    m = mutate(h, random.Random(seed), mutations) if mutations else h
    expected = brute_force(m, model)
    assert check_history(m, model, algorithm="dfs", explain=False).valid is expected
    assert check_history(m, model, explain=False).valid is expected
    assert check_history(m, model, algorithm="frontier", explain=False).valid is expected


@settings(max_examples=200)
@given(seed=st.integers(0, 10**9), n_ops=st.integers(4, 8), procs=st.integers(2, 8),
       crash=st.sampled_from([0.0, 0.2]), model=st.sampled_from(["cas-register", "kv"]))
def test_unique_value_violations_agree_with_brute_force(seed, n_ops, procs, crash, model):
    """Unique values, one read changed to another value the key held (stale or from
    the future): what the search-free test and the pruning must get exactly right."""
    h = simulate(model, ops=n_ops, processes=procs, keys=1, seed=seed, crash=crash,
                 unique=True)
    rng = random.Random(seed)
    reads = [e for e in h if e["type"] == "ok" and e["f"] in ("read", "get")]
    held = {json.dumps(v): v for v in [e["value"] for e in reads] + ["" if model == "kv"
                                                                      else None]}
    if reads:  # one of the values reads saw, or the initial one
        rng.choice(reads)["value"] = held[rng.choice(sorted(held))]
    expected = brute_force(h, model)
    assert check_history(h, model, algorithm="dfs", explain=False).valid is expected
    r = check_history(h, model)
    assert r.valid is expected
    if expected is False:  # the explanation (often found without search) holds too
        f = r.failures[0]
        assert f.op in f.minimal
        explanation_holds(h, model, f)
        assert brute_force([e for e in h if e["index"] < f.prefix_index], model) is True
