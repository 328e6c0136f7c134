"""Benchmark the jepsen-lite linearizability checker.

Measures, on linearizable histories generated from the cas-register model
(``jepsen_lite.models.simulate``: random interleavings, 10 client processes):

1. the time to check 10,000 and 100,000 operations over 10 keys (end to end: read
   the JSONL file, validate, pair, check; median of --repeat runs), with one process
   and with a worker process per CPU;
2. the largest single-key history (10 processes on one register) checked within
   --budget seconds (default 10), by doubling then bisecting the op count;
3. optionally (--violation) the time to find and explain a violation: one read
   near the end of the 100,000-op history changed to a value never written;
4. --table: the README's table. Single-key histories of --ops operations from
   :func:`generate` (every written value unique, N concurrent clients), for 10, 50
   and 100 processes, both models, valid and with each --inject'ed violation, each
   checked by ``jepsen-lite check`` in a fresh process under ``/usr/bin/time``
   (seconds, peak RSS). --checker DIR checks with another copy of jepsen-lite (the
   "before" column: a ``git worktree`` of an older commit).

    python benchmarks/checker_bench.py                 # everything, 3 repeats
    python benchmarks/checker_bench.py --quick         # smaller, for a smoke test
    python benchmarks/checker_bench.py --json out.json
    python benchmarks/checker_bench.py --table --ops 10000
    python benchmarks/checker_bench.py --table --ops 10000 --checker /tmp/chk-before/jepsen-lite
    python benchmarks/checker_bench.py --write h.jsonl --processes 50 --model kv \\
        --inject stale-read --ops 10000             # one history, to check by hand

The machine's load matters a lot (this is pure Python, single threaded per key):
the script prints the load average next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jepsen_lite.checker import check_file, check_history
from jepsen_lite.history import read_lines, write_history
from jepsen_lite.models import simulate


def generate(model: str = "cas-register", ops: int = 1000, processes: int = 10, keys: int = 1,
             seed: int = 0, crash: float = 0.0, inject: str | None = None) -> list[dict]:
    """A history of ``processes`` concurrent clients, every written value unique.

    Each op is invoked, takes effect at a random later moment (on the true state),
    then completes; a client picked at random moves one step at a time, so about
    ``processes`` ops are in flight at once. With probability ``crash`` an op ends
    ``info`` (its effect may still land later, or never) and its client continues
    under a new process id. cas-register: read / write v / cas [current or an old
    value, v]; kv: get / put v / append v, values like "v12,". ``inject`` breaks the
    history on purpose (one key; the truth is known, so the break is certain):

    - stale-read: a read near the end returns the value the register held just
      before a write that completed before the read began;
    - lost-write: an acknowledged write's effect vanishes from every read that
      saw it (at least one of which began after the write completed);
    - duplicate-append: kv: a get returns the state with one appended value twice;
      cas-register: a write's value comes back long after later writes replaced it.
    """
    rng = random.Random(seed)
    kv = model == "kv"
    init: Any = "" if kv else None
    state: dict[str, Any] = {}
    history: dict[str, list[tuple[Any, int]]] = {}  # key -> [(state, writer op id)]
    events: list[dict] = []
    slots: list[list[Any]] = [[p, None, 0] for p in range(processes)]
    next_proc, started, uniq = processes, 0, 0
    pending: list[dict] = []
    opinfo: list[dict] = []

    def emit(op: dict, typ: str, value: Any) -> None:
        ev = {"index": len(events), "time": len(events) * 1000, "process": op["process"],
              "type": typ, "f": op["f"], "key": op["key"], "value": value}
        op[typ if typ == "invoke" else "done"] = ev
        events.append(ev)

    def apply(op: dict) -> None:
        k, f, v = op["key"], op["f"], op["value"]
        cur = state.get(k, init)
        hist = history.setdefault(k, [(init, -1)])
        if f in ("read", "get"):
            op["out"] = cur
            op["seen"] = len(hist) - 1
            return
        if f == "cas" and cur != v[0]:
            op["failed"] = True
            return
        new = v[1] if f == "cas" else cur + v if f == "append" else v
        state[k] = new
        hist.append((new, op["id"]))
        op["made"] = len(hist) - 1

    while started < ops or any(s[1] is not None for s in slots):
        if pending and rng.random() < 0.05:
            apply(pending.pop(rng.randrange(len(pending))))
        slot = slots[rng.randrange(processes)]
        proc, op, phase = slot
        if op is None:
            if started >= ops:
                continue
            k = f"k{rng.randrange(keys)}" if keys > 1 else "r"
            uniq += 1
            r = rng.random()
            if kv:
                f = "get" if r < 0.4 else "append" if r < 0.85 else "put"
                v = None if f == "get" else f"v{uniq},"
            else:
                f = "read" if r < 0.4 else "write" if r < 0.7 else "cas"
                v = None if f == "read" else uniq
                if f == "cas":
                    old = [s for s, _ in history.get(k, [(init, -1)])[-3:]]
                    v = [rng.choice(old), uniq]
            op = {"id": len(opinfo), "process": proc, "f": f, "key": k, "value": v}
            opinfo.append(op)
            started += 1
            emit(op, "invoke", v)
            slot[1], slot[2] = op, 0
        elif phase == 0:
            if crash and rng.random() < crash:
                emit(op, "info", op["value"])
                if op["f"] not in ("read", "get") and rng.random() < 0.5:
                    pending.append(op)
                slot[0], slot[1] = next_proc, None
                next_proc += 1
            else:
                apply(op)
                slot[2] = 1
        else:
            if op.get("failed"):
                emit(op, "fail", op["value"])
            else:
                emit(op, "ok", op["out"] if op["f"] in ("read", "get") else op["value"])
            slot[1] = None
    if inject:
        _inject(inject, rng, kv, opinfo, history)
    return events


def _inject(kind: str, rng: random.Random, kv: bool, opinfo: list[dict],
            history: dict[str, list[tuple[Any, int]]]) -> None:
    done = {o["id"]: o["done"]["index"] for o in opinfo
            if "done" in o and o["done"]["type"] == "ok"}
    reads = [o for o in opinfo if o["f"] in ("read", "get") and o["id"] in done]
    # near the end first (a violation found late costs the most to prove), then earlier
    late = [o for o in reads if o["invoke"]["index"] > 0.9 * len(opinfo) * 2]
    late += [o for o in reversed(reads) if o not in late]

    def before(a: int, b: int) -> bool:
        """Op a (-1: the initial state) completed before op b was invoked."""
        return a < 0 or (a in done and done[a] < opinfo[b]["invoke"]["index"])

    def replaced(hist: list[tuple[Any, int]], j: int, r: dict) -> bool:
        """State j was written, then overwritten, strictly before read r began: with
        unique values no order of the ops lets r see state j."""
        w, nxt = hist[j][1], hist[j + 1][1]
        return before(w, nxt) and before(nxt, r["id"])

    for r in late:
        hist = history[r["key"]]
        if kind in ("stale-read", "duplicate-append"):
            old = [j for j in range(r["seen"]) if replaced(hist, j, r)]
            if not old:
                continue
            if kind == "stale-read":
                r["done"]["value"] = hist[old[-1]][0]
                return
            if kv:
                apps = [o for o in opinfo if o["f"] == "append" and o["key"] == r["key"]
                        and o["value"] in r["out"]]
                if apps:  # a state holding one appended value twice never exists
                    r["done"]["value"] = r["out"] + apps[-1]["value"]
                    return
            elif len(old) > 10:
                r["done"]["value"] = hist[old[-10]][0]
                return
        elif kind == "lost-write":
            old = [j for j in range(r["seen"]) if replaced(hist, j, r)]
            if not old:
                continue
            j = old[-1]
            # the writes after state j are lost: every read up to r that saw one of
            # their states sees state j instead (r itself certainly too late for that)
            for o in reads:
                if o["key"] == r["key"] and j < o["seen"] <= r["seen"]:
                    o["done"]["value"] = hist[j][0]
            return
        else:
            raise ValueError(f"unknown injection {kind!r}")
    raise ValueError(f"no place to inject {kind!r}: make the history longer")


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_file(n_ops: int, keys: int, repeat: int, workers: int | None, tmp: Path,
               crash: float) -> dict:
    path = tmp / f"h-{n_ops}-{keys}.jsonl"
    write_history(path, simulate(ops=n_ops, processes=10, keys=keys, seed=n_ops, crash=crash))
    totals, reads, checks = [], [], []
    verdict = None
    for _ in range(repeat):
        (events, lines), t_read, _ = timed(lambda: read_lines(path))
        res, t_check, _ = timed(lambda ev=events, ln=lines: check_history(
            ev, "cas-register", lines=ln, workers=workers))
        verdict = res.valid
        reads.append(t_read)
        checks.append(t_check)
        totals.append(t_read + t_check)
    med = statistics.median
    row = {"ops": n_ops, "keys": keys, "processes": 10, "crash": crash, "valid": verdict,
           "workers": workers or os.cpu_count(),
           "total_s_median": round(med(totals), 3), "total_s_min": round(min(totals), 3),
           "read_s_median": round(med(reads), 3),
           "check_s_median": round(med(checks), 3), "check_s_min": round(min(checks), 3),
           "total_s_all": [round(w, 3) for w in totals]}
    print(f"  {n_ops:>7} ops, {keys} keys, crash {crash}, workers {row['workers']}: verdict "
          f"{verdict}; file to verdict median {row['total_s_median']} s (min "
          f"{row['total_s_min']}; read+parse {row['read_s_median']}, validate+pair+check "
          f"{row['check_s_median']}); runs {row['total_s_all']}", flush=True)
    return row


def check_single_key(n: int, budget: float) -> tuple[bool, float]:
    h = simulate(ops=n, processes=10, keys=1, seed=n)
    res, wall, _ = timed(lambda: check_history(h, "cas-register", time_limit=budget,
                                               workers=1))
    return res.valid is True and wall <= budget, wall


def bench_largest(budget: float, start: int) -> dict:
    n, best, best_t, tries = start, 0, 0.0, []
    while True:
        ok, wall = check_single_key(n, budget)
        tries.append((n, round(wall, 2), ok))
        print(f"  single key, {n:>8} ops: {wall:.2f} s {'ok' if ok else 'over budget'}",
              flush=True)
        if not ok:
            break
        best, best_t = n, wall
        n *= 2
    lo, hi = best, n
    while hi - lo > max(lo // 10, 1000):
        mid = (lo + hi) // 2
        ok, wall = check_single_key(mid, budget)
        tries.append((mid, round(wall, 2), ok))
        print(f"  single key, {mid:>8} ops: {wall:.2f} s {'ok' if ok else 'over budget'}",
              flush=True)
        if ok:
            lo, best, best_t = mid, mid, wall
        else:
            hi = mid
    return {"budget_s": budget, "largest_ops": best, "its_time_s": round(best_t, 2),
            "tries": tries}


def bench_violation(n_ops: int, tmp: Path, workers: int | None) -> dict:
    h = simulate(ops=n_ops, processes=10, keys=10, seed=7)
    reads = [e for e in h if e["type"] == "ok" and e["f"] == "read"
             and e["index"] > len(h) * 0.9]
    reads[0]["value"] = ((reads[0]["value"] or 0) + 1) % 5  # a value it did not hold
    path = tmp / "violation.jsonl"
    write_history(path, h)
    res, wall, _ = timed(lambda: check_file(path, "cas-register", workers=workers))
    f = res.failures[0] if res.failures else None
    row = {"ops": n_ops, "valid": res.valid, "wall_s": round(wall, 3),
           "minimal_ops": len(f.minimal) if f else None,
           "minimal_complete": f.minimal_complete if f else None}
    print(f"  violation in {n_ops} ops: verdict {res.valid} in {wall:.2f} s, "
          f"minimal set {row['minimal_ops']} ops", flush=True)
    return row


def run_check(path: Path, model: str, checker: str, timeout: float) -> dict:
    """``jepsen-lite check`` in a fresh process under /usr/bin/time: verdict, wall
    seconds, peak RSS. ``checker``: the jepsen-lite source directory to import."""
    env = {**os.environ, "PYTHONPATH": checker}
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "jepsen_lite.cli", "check",
           str(path), "--model", model, "--json", "--workers", "1"]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"valid": f"killed after {timeout:g} s", "seconds": timeout, "peak_mb": None}
    wall, kb = p.stderr.strip().splitlines()[-1].split()
    try:
        verdict = json.loads(p.stdout.splitlines()[0])["valid"]
    except (ValueError, IndexError, KeyError):
        verdict = f"error (exit {p.returncode})"
    return {"valid": verdict, "seconds": float(wall), "peak_mb": round(int(kb) / 1024)}


def bench_table(n_ops: int, checker: str, timeout: float, tmp: Path,
                processes: list[int], models: list[str], injects: list[str | None]) -> list:
    rows = []
    print("| model | processes | ops | history | verdict | seconds | peak MB |")
    print("|---|---:|---:|---|---|---:|---:|")
    for model in models:
        for procs in processes:
            for inj in injects:
                path = tmp / f"{model}-{procs}-{inj}.jsonl"
                write_history(path, generate(model, n_ops, procs, seed=procs, inject=inj))
                r = {"model": model, "processes": procs, "ops": n_ops,
                     "history": inj or "valid", **run_check(path, model, checker, timeout)}
                rows.append(r)
                print(f"| {model} | {procs} | {n_ops:,} | {r['history']} | {r['valid']} | "
                      f"{r['seconds']:.2f} | {r['peak_mb']} |", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=None, help="default: CPU count")
    ap.add_argument("--crash", type=float, default=0.0,
                    help="share of ops ending info (unknown outcome)")
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--violation", action="store_true")
    ap.add_argument("--skip-largest", action="store_true")
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--processes", type=int, default=None,
                    help="concurrent clients for --write/--table (--table default: 10 50 100)")
    ap.add_argument("--model", choices=["cas-register", "kv"], default=None,
                    help="--write/--table: the model (--table default: both)")
    ap.add_argument("--inject", choices=["none", "stale-read", "lost-write", "duplicate-append"],
                    default=None, help="--write/--table: break the history this way (--table "
                    "default: none, i.e. valid, and each of the others)")
    ap.add_argument("--ops", type=int, default=10000, help="--write/--table: ops per history")
    ap.add_argument("--keys", type=int, default=1, help="--write: keys")
    ap.add_argument("--seed", type=int, default=1, help="--write: random seed")
    ap.add_argument("--write", metavar="FILE", default=None,
                    help="write one generated history to FILE and exit")
    ap.add_argument("--table", action="store_true", help="the README table (see above)")
    ap.add_argument("--checker", default=str(Path(__file__).resolve().parent.parent
                                             / "jepsen-lite"),
                    help="--table: the jepsen-lite source directory to check with")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="--table: kill a check after this many seconds")
    a = ap.parse_args()
    if a.write:
        write_history(a.write, generate(a.model or "cas-register", a.ops, a.processes or 10,
                                        a.keys, a.seed, a.crash,
                                        None if a.inject == "none" else a.inject))
        return 0
    if a.table:
        with tempfile.TemporaryDirectory() as d:
            rows = bench_table(a.ops, a.checker, a.timeout, Path(d),
                               [a.processes] if a.processes else [10, 50, 100],
                               [a.model] if a.model else ["cas-register", "kv"],
                               [None if a.inject == "none" else a.inject] if a.inject else
                               [None, "stale-read", "lost-write", "duplicate-append"])
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(rows, indent=2))
        return 0
    sizes = [1000, 10000] if a.quick else [10000, 100000]
    repeat = 1 if a.quick else a.repeat
    out: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                 "loadavg_before": os.getloadavg()}
    print(f"load average {out['loadavg_before']}, {out['cpus']} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("10 processes over 10 keys:")
        out["multi_key"] = [bench_file(n, 10, repeat, w, tmp, a.crash)
                            for n in sizes for w in ([a.workers] if a.workers else [1, None])]
        if not a.skip_largest:
            budget = 1.0 if a.quick else a.budget
            print(f"largest single-key history within {budget} s:")
            out["largest_single_key"] = bench_largest(budget, start=1000 if a.quick else 8000)
        if a.violation:
            out["violation"] = bench_violation(sizes[-1], tmp, a.workers)
    out["loadavg_after"] = os.getloadavg()
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
