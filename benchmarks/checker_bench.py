"""Benchmark the jepsen-lite linearizability checker.

Measures, on linearizable histories generated from the cas-register model
(``jepsen_lite.models.simulate``: random interleavings, 10 client processes):

1. the time to check 10,000 and 100,000 operations over 10 keys (end to end: read
   the JSONL file, validate, pair, check; median of --repeat runs), with one process
   and with a worker process per CPU;
2. the largest single-key history (10 processes on one register) checked within
   --budget seconds (default 10), by doubling then bisecting the op count;
3. optionally (--violation) the time to find and explain a violation: one read
   near the end of the 100,000-op history changed to a value never written.

    python benchmarks/checker_bench.py                 # everything, 3 repeats
    python benchmarks/checker_bench.py --quick         # smaller, for a smoke test
    python benchmarks/checker_bench.py --json out.json

The machine's load matters a lot (this is pure Python, single threaded per key):
the script prints the load average next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jepsen-lite"))

from jepsen_lite.checker import check_file, check_history
from jepsen_lite.history import read_lines, write_history
from jepsen_lite.models import simulate


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
    a = ap.parse_args()
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
