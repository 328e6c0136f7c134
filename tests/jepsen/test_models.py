"""Models: the sequential specifications, one step at a time."""

import pytest
from jepsen_lite.history import Op
from jepsen_lite.models import ILLEGAL, KV, CasRegister, Model, freeze, get_model, thaw


def op(f, value=None, status="ok", output=None, key="r"):
    if status == "ok" and output is None and f not in ("read", "get"):
        output = value
    return Op(id=0, process=0, f=f, key=key, value=value, status=status, output=output)


def test_registry():
    assert isinstance(get_model("cas-register"), CasRegister)
    assert isinstance(get_model("kv"), KV)
    m = CasRegister()
    assert get_model(m) is m
    with pytest.raises(ValueError, match="unknown model"):
        get_model("queue")


def test_cas_register_steps():
    m = CasRegister()
    s = m.init()
    assert s is None
    assert m.step(s, op("read", output=None)) is None
    assert m.step(s, op("read", output=1)) is ILLEGAL
    s = m.step(s, op("write", 1))
    assert s == 1
    assert m.step(s, op("cas", [1, 2])) == 2
    assert m.step(s, op("cas", [3, 2])) is ILLEGAL
    assert m.step(None, op("cas", [None, 5])) == 5  # expected null: only if absent
    # an info op's result is unknown: if it happened, a read constrains nothing
    assert m.step(7, op("read", status="info")) == 7
    assert m.partition_key(op("read", key="x")) == "x"


def test_cas_register_keeps_true_apart_from_one():
    m = CasRegister()
    s = m.step(m.init(), op("write", True))
    assert m.step(s, op("read", output=1)) is ILLEGAL
    assert m.step(s, op("read", output=True)) == s


def test_cas_register_validation():
    m = CasRegister()
    assert m.validate(op("cas", [1, 2])) is None
    assert "cas takes [old, new]" in m.validate(op("cas", 3))
    assert "no operation" in m.validate(op("append", "x"))
    assert "must repeat" in m.validate(op("write", 1, output=2))


def test_kv_steps_and_validation():
    m = KV()
    s = m.init()
    assert s == ""
    s = m.step(s, op("append", "a"))
    s = m.step(s, op("append", "b"))
    assert s == "ab"
    assert m.step(s, op("get", output="ab")) == "ab"
    assert m.step(s, op("get", output="a")) is ILLEGAL
    assert m.step(s, op("put", "z")) == "z"
    assert "string" in m.validate(op("put", 3))
    assert m.read_only(op("get")) and not m.read_only(op("put", "x"))


def test_describe():
    m = CasRegister()
    assert m.describe(op("read", output=None)) == "read -> null"
    assert m.describe(op("cas", [1, 2])) == "cas 1->2"
    assert KV().describe(op("append", "x")) == "append 'x'"


def test_freeze_round_trips_json_values():
    for v in [None, 1, "a", True, [1, [2, "x"]], {"a": [1, False]}]:
        assert thaw(freeze(v)) == v
        hash(freeze(v))


def test_a_user_model_plugs_in():
    from jepsen_lite.checker import check_history

    class Counter(Model):
        name = "counter"

        def init(self):
            return 0

        def step(self, state, o):
            if o.f == "add":
                return state + o.value
            return state if o.status != "ok" or o.output == state else ILLEGAL

        def read_only(self, o):
            return o.f == "read"

    h = [
        {"index": 0, "process": 0, "type": "invoke", "f": "add", "value": 2},
        {"index": 1, "process": 0, "type": "ok", "f": "add", "value": 2},
        {"index": 2, "process": 1, "type": "invoke", "f": "read", "value": None},
        {"index": 3, "process": 1, "type": "ok", "f": "read", "value": 2},
    ]
    assert check_history(h, Counter()).valid is True
    h[3]["value"] = 3
    assert check_history(h, Counter()).valid is False


def test_a_user_model_with_several_keys_in_one_partition():
    """Info ops of different keys are not interchangeable, even with the same f and value
    (regression: the frontier search treated write a=1 and write b=1 as one class)."""
    from jepsen_lite.checker import check_history

    class Registers(Model):
        name = "registers"

        def init(self):
            return ()

        def partition_key(self, o):
            return "all"

        def step(self, state, o):
            d = dict(state)
            if o.f == "write":
                d[o.key] = o.value
                return tuple(sorted(d.items()))
            return state if o.status != "ok" or d.get(o.key) == o.output else ILLEGAL

        def read_only(self, o):
            return o.f == "read"

    rows = [(0, "invoke", "write", "a", 1), (0, "info", "write", "a", 1),
            (1, "invoke", "write", "b", 1), (1, "info", "write", "b", 1),
            (2, "invoke", "read", "a", None), (2, "ok", "read", "a", 1),
            (2, "invoke", "read", "b", None), (2, "ok", "read", "b", 1)]
    h = [{"index": i, "process": p, "type": t, "f": f, "key": k, "value": v}
         for i, (p, t, f, k, v) in enumerate(rows)]
    for algorithm in ("auto", "dfs", "frontier"):
        r = check_history(h, Registers(), algorithm=algorithm, explain=False)
        assert r.valid is True, algorithm
        assert list(r.keys) == ["all"]
    h[-1]["value"] = 2  # b was never 2
    for algorithm in ("auto", "dfs", "frontier"):
        assert check_history(h, Registers(), algorithm=algorithm).valid is False, algorithm
    # the report draws the partition's timeline with all its ops, failing ones marked
    from jepsen_lite.report import render_report

    page = render_report(check_history(h, Registers()))
    assert "No operations" not in page and page.count("write") >= 2
