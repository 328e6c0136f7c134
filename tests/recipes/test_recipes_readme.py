"""The README's recipes example (a fenced write under a SyncLock), run as written
against three real members (only its endpoints replaced)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from recipes_helpers import cluster  # noqa: F401  (the fixture)

README_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"


def example() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Recipes"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_lock_example_runs(cluster):  # noqa: F811
    code = example()
    assert code.count(README_ENDPOINTS) == 1
    r = subprocess.run([sys.executable, "-c", code.replace(README_ENDPOINTS,
                                                           cluster.endpoints())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fenced write applied: True"
    with cluster.client_for() as c:
        kv = c.get("jobs/nightly-result")
        token = int(kv.value.decode().removeprefix("done by "))
        assert 0 < token < kv.mod_revision
        assert c.list("jobs/nightly/") == []  # released, session revoked
