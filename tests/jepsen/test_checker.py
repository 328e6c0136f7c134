"""The checker on hand-built histories: one test per rule of the history contract
(docs/architecture.md#jepsen-lite), the classic cases, the failure explanation, time
limits, parallel workers, and histories recorded from a real (in-process, threaded)
linearizable register."""

import random
import threading
import time

import pytest
from jepsen_lite.checker import UNKNOWN, check_history
from jepsen_lite.history import HistoryError, HistoryWriter, read_history
from jepsen_lite.models import simulate


def H(*rows, key="r"):
    """rows: (process, type, f, value) in history order; index = position."""
    out = []
    for i, row in enumerate(rows):
        p, t, f, v = row[:4]
        k = row[4] if len(row) > 4 else key
        out.append({"index": i, "time": i * 10, "process": p, "type": t, "f": f, "key": k,
                    "value": v})
    return out


def valid(h, model="cas-register", **kw):
    return check_history(h, model, **kw).valid


# ------------------------------------------------------------------ classic cases

def test_stale_read_after_completed_write_is_illegal():
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", None))
    assert valid(h) is False


def test_read_after_completed_write_sees_it():
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert valid(h) is True


@pytest.mark.parametrize("seen", [None, 1])
def test_read_concurrent_with_write_sees_either(seen):
    h = H((0, "invoke", "write", 1), (1, "invoke", "read", None),
          (1, "ok", "read", seen), (0, "ok", "write", 1))
    assert valid(h) is True


def test_read_concurrent_with_write_sees_nothing_else():
    h = H((0, "invoke", "write", 1), (1, "invoke", "read", None),
          (1, "ok", "read", 2), (0, "ok", "write", 1))
    assert valid(h) is False


def test_no_going_back_after_a_read_saw_the_new_value():
    # write 1 concurrent with two sequential reads: 1 then null is impossible
    h = H((0, "invoke", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", 1),
          (1, "invoke", "read", None), (1, "ok", "read", None),
          (0, "ok", "write", 1))
    assert valid(h) is False


def test_info_write_may_take_effect_later():
    h = H((0, "invoke", "write", 1), (0, "info", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", None),
          (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert valid(h) is True


def test_info_write_may_never_take_effect():
    h = H((0, "invoke", "write", 1), (0, "info", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", None))
    assert valid(h) is True


def test_info_write_takes_effect_at_most_once():
    h = H((0, "invoke", "write", 1), (0, "info", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", 1),
          (1, "invoke", "write", 2), (1, "ok", "write", 2),
          (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert valid(h) is False


def test_info_write_cannot_take_effect_before_its_invoke():
    h = H((1, "invoke", "read", None), (1, "ok", "read", 1),
          (0, "invoke", "write", 1), (0, "info", "write", 1))
    assert valid(h) is False


def test_invoke_without_completion_counts_as_info():
    h = H((0, "invoke", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", None),
          (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert valid(h) is True


def test_failed_cas_changes_nothing():
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1),
          (0, "invoke", "cas", [1, 2]), (0, "fail", "cas", [1, 2]),
          (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert valid(h) is True
    h[-1]["value"] = 2
    assert valid(h) is False


def test_ok_cas_requires_the_expected_value():
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1),
          (0, "invoke", "cas", [3, 2]), (0, "ok", "cas", [3, 2]))
    assert valid(h) is False
    h = H((0, "invoke", "cas", [None, 2]), (0, "ok", "cas", [None, 2]),
          (1, "invoke", "read", None), (1, "ok", "read", 2))
    assert valid(h) is True


def test_info_cas_took_effect_only_if_it_could_succeed():
    h = H((0, "invoke", "cas", [5, 2]), (0, "info", "cas", [5, 2]),
          (1, "invoke", "read", None), (1, "ok", "read", 2))
    assert valid(h) is False  # the register was never 5, so that cas cannot have happened


def test_failed_write_did_not_happen():
    h = H((0, "invoke", "write", 1), (0, "fail", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert valid(h) is False


def test_non_integer_processes_are_ignored():
    h = H((0, "invoke", "write", 1), ("nemesis", "info", "start-partition", {"1": ["2"]}),
          (0, "ok", "write", 1), ("nemesis", "info", "read", 99),
          (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert valid(h) is True


def test_index_not_file_position_decides_real_time_order():
    # same events, indices leave room between them: order is what counts
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", None))
    for i, e in enumerate(h):
        e["index"] = 100 * i + 7
    assert valid(h) is False


def test_keys_are_independent():
    h = H((0, "invoke", "write", 1, "a"), (0, "ok", "write", 1, "a"),
          (1, "invoke", "read", None, "b"), (1, "ok", "read", None, "b"))
    r = check_history(h)
    assert r.valid is True and set(r.keys) == {"a", "b"}


def test_kv_model_append_and_get():
    h = H((0, "invoke", "append", "a"), (0, "ok", "append", "a"),
          (1, "invoke", "append", "b"), (2, "invoke", "get", None),
          (2, "ok", "get", "ab"), (1, "ok", "append", "b"),
          (2, "invoke", "get", None), (2, "ok", "get", "ab"))
    assert valid(h, "kv") is True
    h[-1]["value"] = "a"
    assert valid(h, "kv") is False
    h2 = H((0, "invoke", "get", None), (0, "ok", "get", ""))
    assert valid(h2, "kv") is True


def test_empty_history_is_linearizable():
    r = check_history([])
    assert r.valid is True and r.op_count == 0


def test_model_errors_name_the_line():
    h = H((0, "invoke", "cas", 3), (0, "ok", "cas", 3))
    with pytest.raises(HistoryError, match="cas takes") as ei:
        check_history(h)
    assert ei.value.line == 1
    with pytest.raises(HistoryError, match="no operation"):
        check_history(H((0, "invoke", "get", None)), "cas-register")


# ------------------------------------------------------------ failure explanation

def test_violation_names_key_minimal_set_and_prefix():
    h = H((0, "invoke", "write", 1, "x"), (0, "ok", "write", 1, "x"),
          (0, "invoke", "write", 2, "x"), (0, "ok", "write", 2, "x"),
          (2, "invoke", "read", None, "x"), (2, "ok", "read", 2, "x"),
          (1, "invoke", "read", None, "x"), (1, "ok", "read", 1, "x"),
          (3, "invoke", "write", 5, "y"), (3, "ok", "write", 5, "y"))
    r = check_history(h)
    assert r.valid is False
    assert r.keys["y"].valid is True
    (f,) = r.failures
    assert f.key == "x"
    assert f.op.f == "read" and f.op.output == 1 and f.op.process == 1
    # the read of 1 after write 2 completed: write 1, write 2 and that read, nothing else
    assert [(o.f, o.value if o.f != "read" else o.output) for o in f.minimal] == [
        ("write", 1), ("write", 2), ("read", 1)]
    assert f.minimal_complete
    assert f.prefix_index == 7  # the events before the stale read's completion
    assert f.prefix_ops == 3
    assert f.states_before == ["2"]
    assert [o.f for o, _ in f.linearization] == ["write", "write", "read"]
    j = r.to_json()
    assert j["valid"] is False and j["invalid_keys"] == ["x"]
    assert j["failures"][0]["minimal"][2]["description"] == "read -> 1"


def test_minimal_set_excludes_unrelated_ops():
    rows = [(0, "invoke", "write", 1), (0, "ok", "write", 1)]
    for _ in range(20):
        rows += [(1, "invoke", "read", None), (1, "ok", "read", 1)]
    rows += [(0, "invoke", "write", 3), (0, "ok", "write", 3),
             (2, "invoke", "read", None), (2, "ok", "read", 1)]
    f = check_history(H(*rows)).failures[0]
    # the twenty reads of 1 explain nothing; write 1, write 3 and the stale read do
    assert [(o.process, o.f, o.value, o.output) for o in f.minimal] == [
        (0, "write", 1, 1), (0, "write", 3, 3), (2, "read", None, 1)]
    assert f.minimal_complete and f.context_ops == 0


# --------------------------------------------------------------- limits, workers

def test_time_limit_zero_budget_is_unknown_for_big_history():
    h = simulate(ops=20000, processes=10, keys=1, seed=5)
    r = check_history(h, time_limit=1e-9)
    assert r.valid == UNKNOWN


def test_frontier_past_its_memory_bound_is_unknown_with_the_reason(monkeypatch):
    """The breadth-first search gives up (unknown, saying why) rather than grow
    without bound when unknown-outcome ops make the frontier explode."""
    import jepsen_lite.checker as checker

    h = simulate(ops=500, processes=10, keys=1, seed=3, crash=0.05)
    assert check_history(h, algorithm="frontier", workers=1).valid is True
    monkeypatch.setattr(checker, "MAX_FRONTIER", 1)
    r = check_history(h, algorithm="frontier", workers=1)
    assert r.valid == UNKNOWN
    (kr,) = r.keys.values()
    assert "memory limit" in kr.reason


def test_parallel_workers_agree_with_in_process():
    h = simulate(ops=3000, processes=10, keys=6, seed=11, crash=0.02)
    for e in h:  # break one key
        if e["type"] == "ok" and e["f"] == "read" and e["key"] == "k2" and e["index"] > 3000:
            e["value"] = 42
            break
    serial = check_history(h, workers=1)
    par = check_history(h, workers=2, parallel_threshold=0)
    assert serial.valid is False and par.valid is False
    assert {k: v.valid for k, v in serial.keys.items()} == \
        {k: v.valid for k, v in par.keys.items()}
    assert par.failures[0].op.id == serial.failures[0].op.id


@pytest.mark.parametrize("seed", range(5))
def test_simulated_linearizable_histories_pass(seed):
    for model in ("cas-register", "kv"):
        h = simulate(model, ops=400, processes=6, keys=2, seed=seed, crash=0.05)
        assert check_history(h, model).valid is True


def test_long_single_key_history_no_recursion_limit():
    h = simulate(ops=20000, processes=3, keys=1, seed=9)
    assert check_history(h).valid is True


# ------------------------------------------------ a real register, real threads

class Register:
    """A linearizable register: every operation holds the lock for its effect."""

    def __init__(self, stale: bool = False):
        self.lock = threading.Lock()
        self.value = None
        self.stale = stale
        self.old = None

    def read(self):
        with self.lock:
            return self.old if self.stale else self.value

    def write(self, v):
        with self.lock:
            self.old, self.value = self.value, v

    def cas(self, old, new):
        with self.lock:
            if self.value != old:
                return False
            self.old, self.value = self.value, new
            return True


def record(tmp_path, reg, seed, n_threads=5, ops=60):
    path = tmp_path / f"real-{seed}.jsonl"
    rng_master = random.Random(seed)
    with HistoryWriter(path) as w:
        def client(proc, rng):
            for _ in range(ops):
                f = rng.choice(["read", "write", "cas"])
                time.sleep(rng.random() * 0.0005)
                if f == "read":
                    w.invoke(proc, "read", None, key="r")
                    time.sleep(rng.random() * 0.0005)
                    v = reg.read()
                    time.sleep(rng.random() * 0.0005)
                    w.ok(proc, "read", v, key="r")
                elif f == "write":
                    v = rng.randrange(5)
                    w.invoke(proc, "write", v, key="r")
                    time.sleep(rng.random() * 0.0005)
                    reg.write(v)
                    w.ok(proc, "write", v, key="r")
                else:
                    arg = [rng.randrange(5), rng.randrange(5)]
                    w.invoke(proc, "cas", arg, key="r")
                    ok = reg.cas(*arg)
                    time.sleep(rng.random() * 0.0005)
                    if ok:
                        w.ok(proc, "cas", arg, key="r")
                    else:
                        w.fail(proc, "cas", arg, key="r", error="cas-mismatch")

        threads = [threading.Thread(target=client, args=(p, random.Random(rng_master.random())))
                   for p in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return read_history(path)


@pytest.mark.parametrize("seed", range(4))
def test_recorded_from_a_real_linearizable_register(tmp_path, seed):
    events = record(tmp_path, Register(), seed)
    r = check_history(events)
    assert r.op_count == 300
    assert r.valid is True


def test_recorded_from_a_register_that_reads_stale_values(tmp_path):
    # A register whose reads return the value before the last write: once a read
    # follows a write that changed the value, the history cannot be linearized.
    reg = Register(stale=True)
    path = tmp_path / "stale.jsonl"
    with HistoryWriter(path) as w:
        for p, v in [(0, 1), (1, 2)]:
            w.invoke(p, "write", v, key="r")
            reg.write(v)
            w.ok(p, "write", v, key="r")
        w.invoke(2, "read", None, key="r")
        w.ok(2, "read", reg.read(), key="r")
    r = check_history(read_history(path))
    assert r.valid is False
    assert r.failures[0].op.output == 1


# ------------------------------------------------------------------------ report

def test_report_marks_failure_and_shades_nemesis_periods(tmp_path):
    from jepsen_lite.report import write_report

    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1),
          (1, "invoke", "read", None), (1, "ok", "read", None),
          (2, "invoke", "write", "<script>alert(1)</script>"),
          (2, "ok", "write", "<script>alert(1)</script>"))
    r = check_history(h)
    path = tmp_path / "report.html"
    write_report(path, r, h, nemesis_periods=[(5, 25, "partition {1} | {2,3}")])
    text = path.read_text()
    assert "NOT linearizable" in text
    assert "partition {1} | {2,3}" in text and "#8fa8d8" in text  # the shaded fault
    assert 'stroke="#c0262d"' in text  # minimal failing set outlined
    assert "<script>" not in text  # history strings are escaped
    assert "linearizable prefix ends here" in text


def test_report_for_a_valid_history_bounds_its_size(tmp_path):
    from jepsen_lite.report import render_report

    h = simulate(ops=5000, processes=10, keys=2, seed=1)
    text = render_report(check_history(h))
    assert "Verdict: <b class=v-true>linearizable</b>" in text
    assert "showing 400 of" in text
    assert len(text) < 2_000_000
