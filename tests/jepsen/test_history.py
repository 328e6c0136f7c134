"""History format: parsing, validation with line numbers, pairing, and the writer."""

import io
import json
import threading

import pytest
from jepsen_lite.history import (
    HistoryError,
    HistoryWriter,
    loads_history,
    pair_operations,
    read_history,
    read_history_with_lines,
)


def lines(*events):
    return "".join(json.dumps(e) + "\n" for e in events)


def ev(i, p, t, f="write", v=1, key="r", **kw):
    return {"index": i, "process": p, "type": t, "f": f, "key": key, "value": v, **kw}


def test_design_example_parses_and_pairs():
    text = (
        '{"index":12,"time":1834500012,"process":3,"type":"invoke","f":"cas","key":"r","value":[1,4]}\n'
        '{"index":15,"time":1839912001,"process":3,"type":"fail","f":"cas","key":"r","value":[1,4],'
        '"error":"cas-mismatch"}\n'
        '{"index":16,"time":1840000000,"process":"nemesis","type":"info","f":"start-partition",'
        '"value":{"1":["2","3"]}}\n'
    )
    events = loads_history(text)
    assert len(events) == 3
    ops = pair_operations(events)
    assert len(ops) == 1  # the nemesis is not a client
    op = ops[0]
    assert (op.process, op.f, op.status, op.value, op.error) == (3, "cas", "fail", [1, 4],
                                                                  "cas-mismatch")
    assert (op.invoke_index, op.complete_index, op.invoke_time) == (12, 15, 1834500012)


def test_blank_lines_are_skipped_and_lines_are_counted():
    text = "\n" + lines(ev(0, 0, "invoke")) + "\n" + lines(ev(1, 0, "ok"))
    _events, nums = read_history_with_lines(io.StringIO(text))
    assert nums == [2, 4]


@pytest.mark.parametrize("text, line, fragment", [
    ('{"index":0,"process":0,"type":"invoke","f":"read"}\n{"index": 1,\n', 2, "not valid JSON"),
    ('[1,2]\n', 1, "JSON object"),
    ('{"process":0,"type":"invoke","f":"read"}\n', 1, "'index'"),
    ('{"index":"0","process":0,"type":"invoke","f":"read"}\n', 1, "'index' must be an integer"),
    ('{"index":0,"process":0,"type":"begin","f":"read"}\n', 1, "'type' must be one of"),
    ('{"index":0,"process":0,"type":"invoke"}\n', 1, "'f'"),
    ('{"index":0,"type":"invoke","f":"read"}\n', 1, "'process'"),
    ('{"index":0,"process":0,"type":"invoke","f":"read","time":"x"}\n', 1, "'time'"),
    ('{"index":0,"process":0,"type":"invoke","f":"read","key":[1]}\n', 1, "'key'"),
])
def test_bad_events_name_their_line(text, line, fragment):
    with pytest.raises(HistoryError) as ei:
        loads_history(text)
    assert ei.value.line == line
    assert fragment in str(ei.value)
    assert str(ei.value).startswith(f"line {line}:")


def test_index_must_strictly_increase():
    with pytest.raises(HistoryError, match="strictly increase") as ei:
        loads_history(lines(ev(0, 0, "invoke"), ev(0, 0, "ok")))
    assert ei.value.line == 2


def test_time_must_not_go_backwards():
    with pytest.raises(HistoryError, match="backwards") as ei:
        loads_history(lines(ev(0, 0, "invoke", time=10), ev(1, 0, "ok", time=9)))
    assert ei.value.line == 2


@pytest.mark.parametrize("events, line, fragment", [
    ([ev(0, 0, "ok")], 1, "no open invoke"),
    ([ev(0, 0, "invoke"), ev(1, 0, "invoke")], 2, "has not completed"),
    ([ev(0, 0, "invoke"), ev(1, 0, "ok", f="read")], 2, "invoked 'write'"),
    ([ev(0, 0, "invoke"), ev(1, 0, "ok", key="s")], 2, "key"),
    ([ev(0, 0, "invoke", v=1), ev(1, 0, "fail", v=2)], 2, "repeat the invoke's value"),
])
def test_pairing_errors(events, line, fragment):
    with pytest.raises(HistoryError, match=fragment) as ei:
        loads_history(lines(*events))
    assert ei.value.line == line


def test_never_completed_invoke_is_info_and_process_may_continue_after_info():
    events = [ev(0, 0, "invoke", v=1), ev(1, 0, "info", v=1, error="timeout"),
              ev(2, 0, "invoke", v=2), ev(3, 1, "invoke", f="read", v=None)]
    ops = pair_operations(loads_history(lines(*events)))
    assert [o.status for o in ops] == ["info", "info", "info"]
    assert ops[0].complete_index == 1 and ops[0].error == "timeout"
    assert ops[1].complete_index is None and ops[2].complete_index is None


def test_not_utf8_is_a_clear_error(tmp_path):
    p = tmp_path / "h.jsonl"
    p.write_bytes(b'{"index":0}\xff\xfe\n')
    with pytest.raises(HistoryError, match="UTF-8"):
        read_history(p)


def test_writer_indices_times_and_flush(tmp_path):
    p = tmp_path / "h.jsonl"
    clock_values = iter([100, 50, 200, 300])  # a clock that steps back once
    w = HistoryWriter(p, clock=lambda: next(clock_values), start_index=5)
    w.invoke(1, "write", 3, key="k")
    # flushed: visible to a reader before close
    assert len(p.read_text().splitlines()) == 1
    w.ok(1, "write", 3, key="k")
    w.info("nemesis", "start-partition", {"1": ["2"]})
    w.fail(2, "cas", [1, 2], key="k", error="cas-mismatch")  # completes nothing: writer is dumb
    w.close()
    evs = [json.loads(x) for x in p.read_text().splitlines()]
    assert [e["index"] for e in evs] == [5, 6, 7, 8]
    assert [e["time"] for e in evs] == [100, 100, 200, 300]
    assert evs[2]["process"] == "nemesis" and "key" not in evs[2]
    assert evs[3]["error"] == "cas-mismatch"


def test_writer_output_reads_back_and_is_safe_across_threads(tmp_path):
    p = tmp_path / "h.jsonl"
    with HistoryWriter(p) as w:
        def client(proc):
            for i in range(50):
                w.invoke(proc, "write", i, key="r")
                w.ok(proc, "write", i, key="r")
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    events = read_history(p)  # validates index order, time order and pairing
    assert len(events) == 400
    assert len(pair_operations(events)) == 200


def test_writer_rejects_unknown_type(tmp_path):
    with HistoryWriter(tmp_path / "h.jsonl") as w, pytest.raises(ValueError):
        w.append(1, "done", "read")
