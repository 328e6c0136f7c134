"""The README's watch recipe ("reload a config when it changes"), run as written against
a real cluster (only its endpoints replaced): it prints the config at start and after
every change, deletes included."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from e2e_cluster import wait_until

cluster = __import__("e2e_cluster").cluster  # the fixture

README_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"


def recipe() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Watch"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def printed(proc) -> list[dict]:
    return [ast.literal_eval(line.removeprefix("config: "))
            for line in proc.log().splitlines() if line.startswith("config: ")]


def test_readme_reload_config_recipe_runs(cluster):
    code = recipe()
    assert code.count(README_ENDPOINTS) == 1
    with cluster.client_for() as c:
        c.put("config/db", "primary")
        c.put("unrelated", "x")
        proc = cluster.procs.start_raw(
            [sys.executable, "-c", code.replace(README_ENDPOINTS, cluster.endpoints())],
            name="recipe")
        wait_until(lambda: printed(proc) or not proc.alive(), 30, what="the first reload")
        assert printed(proc) == [{b"config/db": b"primary"}], proc.log()
        c.put("config/db", "replica")
        c.put("config/cache", "on")
        c.delete("config/db")
        c.put("unrelated", "y")
        wait_until(lambda: len(printed(proc)) >= 4 or not proc.alive(), 30,
                   what="three more reloads")
    assert printed(proc) == [
        {b"config/db": b"primary"},
        {b"config/db": b"replica"},
        {b"config/db": b"replica", b"config/cache": b"on"},
        {b"config/cache": b"on"},
    ], proc.log()
