"""`serve --log-format text|json`: every log record a member writes names the member —
records of the mesh, raft and kv loggers alike — and JSON lines carry time, level,
member, term (once known), logger and message."""

from __future__ import annotations

import json
import re

import pytest
from ops_helpers import Cluster

TEXT_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"\[(?P<member>[^\]]+)\] (?P<logger>\S+): ")
BANNER = re.compile(r"^meshraft node \S+: clients on ")


def records(c: Cluster, i: str, fmt: str) -> list[dict]:
    out = []
    for line in c.members[i].log().splitlines():
        if not line.strip() or BANNER.match(line):
            continue
        if fmt == "json":
            rec = json.loads(line)  # every other line is a JSON record
            out.append(rec)
        else:
            m = TEXT_RECORD.match(line)
            assert m is not None, f"member {i}: a log line that names no member: {line!r}"
            out.append({"member": m["member"], "logger": m["logger"]})
    return out


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_record_names_its_member(procs, fmt: str) -> None:
    c = Cluster(procs, extra_args=("--log-format", fmt))
    c.start_all()
    leader = c.leader()
    with c.client_for() as cl:
        cl.put("k", "v")
    c.stop(leader)  # a stop logs too; and the others elect a new leader
    c.leader(among=[i for i in c.ids if i != leader])
    for i in c.ids:
        recs = records(c, i, fmt)
        assert recs, f"member {i} logged nothing"
        assert {r["member"] for r in recs} == {i}
        loggers = {r["logger"] for r in recs}
        for layer in ("meshraft.mesh", "meshraft.raft", "meshraft.kv"):
            assert any(name.startswith(layer) for name in loggers), (layer, loggers)
        if fmt == "json":
            for r in recs:
                assert {"time", "level", "member", "logger", "message"} <= set(r), r
                assert r["level"] in ("debug", "info", "warning", "error", "critical")
            terms = [r["term"] for r in recs if "term" in r]
            assert terms and max(terms) >= 1, f"member {i}: no record carries a term"
