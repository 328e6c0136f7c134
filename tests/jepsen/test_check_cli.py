"""`jepsen-lite check` as a user runs it: exit codes, --json, --report, bad files."""

import json
import subprocess
import sys

import pytest
from jepsen_lite.history import write_history
from jepsen_lite.models import simulate


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "check", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.jsonl"
    h = simulate(ops=300, processes=5, keys=3, seed=4, crash=0.05)
    h.append({"index": len(h), "process": "nemesis", "type": "info", "f": "start-partition",
              "value": {"1": ["2", "3"]}})
    write_history(p, h)
    return p


@pytest.fixture
def bad(tmp_path):
    p = tmp_path / "bad.jsonl"
    h = simulate(ops=300, processes=5, keys=3, seed=4, crash=0.05)
    for e in h:
        if e["type"] == "ok" and e["f"] == "read" and e["index"] > 300:
            e["value"] = 99
            key = e["key"]
            break
    write_history(p, h)
    return p, key


def test_linearizable_exits_0(good):
    out = run(str(good))
    assert out.returncode == 0, out.stderr
    assert "linearizable" in out.stdout
    assert "300 ops" in out.stdout


def test_linearizable_json(good):
    out = run(str(good), "--json")
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert doc["valid"] is True
    assert doc["op_count"] == 300 and doc["key_count"] == 3


def test_violation_exits_1_and_explains(bad):
    path, key = bad
    out = run(str(path))
    assert out.returncode == 1
    assert f"NOT linearizable: key '{key}'" in out.stdout
    assert "read -> 99" in out.stdout
    assert "longest linearizable prefix" in out.stdout


def test_violation_json_and_report(bad, tmp_path):
    path, key = bad
    report = tmp_path / "r.html"
    out = run(str(path), "--json", "--report", str(report))
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["valid"] is False
    assert doc["invalid_keys"] == [key]
    (f,) = doc["failures"]
    assert f["op"]["output"] == 99
    assert any(o["id"] == f["op"]["id"] for o in f["minimal"])
    html = report.read_text()
    assert html.startswith("<!doctype html>")
    assert "NOT linearizable" in html and "<svg" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained
    assert "#e0454b" in html  # the failing op is drawn highlighted


def test_kv_model_flag(tmp_path):
    p = tmp_path / "kv.jsonl"
    write_history(p, simulate("kv", ops=200, processes=4, keys=2, seed=1))
    assert run(str(p), "--model", "kv").returncode == 0
    # the same history is nonsense for a register: a clear error, exit 2
    out = run(str(p), "--model", "cas-register")
    assert out.returncode == 2
    assert "cas-register has no operation" in out.stderr


def test_time_limit_unknown_exits_2(tmp_path):
    p = tmp_path / "big.jsonl"
    write_history(p, simulate(ops=20000, processes=10, keys=1, seed=5))
    out = run(str(p), "--time-limit", "0.000001", "--json")
    assert out.returncode == 2
    assert json.loads(out.stdout)["valid"] == "unknown"


@pytest.mark.parametrize("content, fragment", [
    ('{"index":0,"process":0,"type":"invoke","f":"read","key":"r","value":null}\n{"index":0,',
     "line 2: not valid JSON"),
    ('{"index":0,"process":0,"type":"ok","f":"read","key":"r","value":null}\n',
     "line 1: process 0 completes read (ok) with no open invoke"),
])
def test_bad_file_is_one_clear_line_and_exit_2(tmp_path, content, fragment):
    p = tmp_path / "broken.jsonl"
    p.write_text(content)
    out = run(str(p))
    assert out.returncode == 2
    assert fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
    out = run(str(p), "--json")
    assert out.returncode == 2
    assert json.loads(out.stdout)["valid"] == "unknown"


def test_missing_file_exit_2(tmp_path):
    out = run(str(tmp_path / "nope.jsonl"))
    assert out.returncode == 2
    assert "No such file" in out.stderr and len(out.stderr.strip().splitlines()) == 1
