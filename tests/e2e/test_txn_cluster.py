"""Transactions on a real cluster (`meshraft cluster`, three serve processes): the
README's "Transactions" examples as written (the shell block, then the Python block),
and one revision for all of a transaction's writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from test_readme import ctrl_c, meshraft, start_cluster

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks() -> tuple[str, str]:
    text = README.read_text()
    section = text[text.index("### Transactions"):]
    section = section[:section.index("\n### ", 5)]
    sh = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    py = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return sh, py


def test_the_readme_transaction_examples_run_as_written(procs):
    home = procs.tmpdir("user")
    proc, endpoints = start_cluster(procs, home)
    sh, py = readme_blocks()
    script = (f'meshraft() {{ {sys.executable} -m meshraft.cli "$@"; }}\n'
              + sh.replace("meshraft txn <<", "meshraft txn --json <<"))
    r = subprocess.run(["sh", "-c", script], cwd=home, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["succeeded"] is True
    assert [x["op"] for x in out["responses"]] == ["put", "put"]
    # run again as the comment says: the else branch, exit 1, plain output
    txn = sh[sh.index("<<'TXN'\n") + 8:sh.index("\nTXN")] + "\n"
    r = subprocess.run([sys.executable, "-m", "meshraft.cli", "txn"], input=txn, cwd=home,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (1, "FAILURE\n\nstock/apples\n2\n"), r.stderr
    # both puts of the transaction have its revision
    for key in ("stock/apples", "order/7"):
        kv = json.loads(meshraft(home, "get", key, "--json").stdout)
        assert kv["mod_revision"] == out["revision"]

    ns: dict = {}
    exec(py.replace("127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003", endpoints), ns)
    r, c = ns["r"], ns["c"]
    try:
        assert r.succeeded and len(r.responses) == 2
        assert all(p.revision == r.revision for p in r.responses)
        assert c.get("order/8").mod_revision == c.get("stock/pears").mod_revision == r.revision
        again = c.txn(compare=[ns["Compare"].value("stock/pears") == "3"],
                      success=[ns["Op"].put("stock/pears", "1")],
                      failure=[ns["Op"].get("stock/pears")])
        assert not again.succeeded and again.responses[0].value == b"2"
    finally:
        c.close()
    ctrl_c(proc)
