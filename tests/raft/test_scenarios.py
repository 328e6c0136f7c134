"""Scenario scripts: readable multi-node stories in tests/raft/scenarios/*.txt.

Each command is followed by the output it produced when the file was last
reviewed; the test fails if the cores now behave differently (messages, roles,
applied entries), and ``expect`` lines fail on their own when a property does
not hold. After an intended change, regenerate with
``MESHRAFT_REWRITE=1 python -m pytest tests/raft/test_scenarios.py`` and review the diff.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from meshraft.raft.rafttest.scenario import run_file

DIR = Path(__file__).parent / "scenarios"
FILES = sorted(DIR.glob("*.txt"))
REWRITE = os.environ.get("MESHRAFT_REWRITE") == "1"


def test_there_are_enough_scenarios():
    assert len(FILES) >= 15


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario(path: Path):
    results = run_file(path, rewrite=REWRITE)
    assert results, "empty scenario"
    for cmd, got, expected in results:
        if REWRITE:
            continue
        assert expected is not None, f"{path.name}: {cmd!r} has no recorded output"
        if got != expected:
            diff = "\n".join(difflib.unified_diff(expected.splitlines(), got.splitlines(),
                                                  "recorded", "now", lineterm=""))
            pytest.fail(f"{path.name}: output of {cmd!r} changed:\n{diff}")
