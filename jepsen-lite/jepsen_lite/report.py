"""The HTML report: a self-contained page (inline SVG and CSS, no scripts fetched)
with the verdict, per-key results and a per-process timeline of operations, and
for ``jepsen-lite run`` the run's numbers, plots and faults (:func:`run_html`).

This module owns presentation only: it reads a CheckResult and never re-checks,
never touches the network, and escapes every string that came from a history.
On a violation the failing key is drawn first, around the failure: the ops of the
minimal failing set outlined in red, the first op that cannot be linearized filled
red, the end of the longest linearizable prefix marked. Callers (the runner) pass
fault periods to shade: ``nemesis_periods=[(start, end, label)]`` in the history's
``time`` unit (nanoseconds), or in event indices if the history has no times.
The watch workload's page (:func:`render_watch_report`) shows the watch checker's
verdict, its numbers and every violation it listed, with the same run section.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jepsen_lite.checker import CheckResult, Failure, KeyResult
from jepsen_lite.history import Op
from jepsen_lite.watch_checker import KINDS, MAX_REPORTED, WatchCheckResult

#: at most this many ops drawn per key timeline (a window around the failure)
MAX_OPS_PER_KEY = 400
#: at most this many key timelines drawn
MAX_KEYS = 12

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
.v-true{color:#17803d} .v-false{color:#c0262d} .v-unknown{color:#b26b00}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:13px} th{background:#f3f3f3}
code,.mono{font-family:ui-monospace,monospace;font-size:12px}
.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
svg{border:1px solid #ddd;background:#fff}
"""

_COLORS = {"ok": "#6cc08b", "fail": "#bbbbbb", "info": "#f0b04a"}


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt_v(v: Any) -> str:
    return "null" if v is None else json.dumps(v)


def _op_label(op: Op) -> str:
    if op.status == "ok" and op.f in ("read", "get"):
        return f"{op.f} → {_fmt_v(op.output)}"
    if op.f in ("read", "get"):
        return f"{op.f} ?"
    if op.f == "cas" and isinstance(op.value, list) and len(op.value) == 2:
        return f"cas {_fmt_v(op.value[0])}→{_fmt_v(op.value[1])}"
    return f"{op.f} {_fmt_v(op.value)}"


def _window(ops: list[Op], failure: Failure | None) -> list[Op]:
    if len(ops) <= MAX_OPS_PER_KEY:
        return ops
    if failure is None:
        return ops[-MAX_OPS_PER_KEY:]
    center = failure.op.complete_index or failure.op.invoke_index
    ranked = sorted(ops, key=lambda o: abs(o.invoke_index - center))[:MAX_OPS_PER_KEY]
    keep = {o.id for o in ranked} | {o.id for o in failure.minimal}
    return [o for o in ops if o.id in keep]


def _timeline(key: Any, ops: list[Op], failure: Failure | None,
              periods: Sequence[tuple[float, float, str]], use_time: bool) -> str:
    if not ops:
        return "<p>No operations.</p>"
    ops = _window(ops, failure)

    def t0(o: Op) -> float:
        return float(o.invoke_time if use_time else o.invoke_index)  # type: ignore[arg-type]

    def t1(o: Op) -> float | None:
        v = o.complete_time if use_time else o.complete_index
        return None if v is None else float(v)

    lo = min(t0(o) for o in ops)
    hi = max(max(t0(o), t1(o) or t0(o)) for o in ops)
    if failure is not None:
        hi = max(hi, float(failure.prefix_index) if not use_time else hi)
    span = max(hi - lo, 1.0)
    hi_open = hi + span * 0.04  # where never-completed ops end
    procs = sorted({o.process for o in ops})
    lane = {p: i for i, p in enumerate(procs)}
    width, left, lane_h, top = 1100, 70, 22, 22
    height = top + lane_h * len(procs) + 30

    def x(v: float) -> float:
        return left + (v - lo) / (hi_open - lo) * (width - left - 10)

    minimal = {o.id for o in failure.minimal} if failure else set()
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="timeline of key {_esc(key)}">']
    for a, b, label in periods:
        if b < lo or a > hi_open:
            continue
        xa, xb = x(max(a, lo)), x(min(b, hi_open))
        parts.append(f'<rect x="{xa:.1f}" y="{top - 14}" width="{max(xb - xa, 1):.1f}" '
                     f'height="{height - top}" fill="#8fa8d8" opacity="0.18">'
                     f'<title>{_esc(label)}</title></rect>'
                     f'<text x="{xa + 2:.1f}" y="{top - 4}" font-size="10" '
                     f'fill="#456">{_esc(label)}</text>')
    for p, i in lane.items():
        y = top + i * lane_h
        parts.append(f'<text x="4" y="{y + 14}" font-size="11" class="mono">p{_esc(p)}</text>'
                     f'<line x1="{left}" x2="{width - 10}" y1="{y + lane_h - 1}" '
                     f'y2="{y + lane_h - 1}" stroke="#eee"/>')
    for o in ops:
        y = top + lane[o.process] * lane_h + 3
        a = x(t0(o))
        end = t1(o)
        b = x(end) if end is not None else x(hi_open)
        w = max(b - a, 2.0)
        fill = _COLORS.get(o.status, "#ccc")
        stroke, sw = "none", 0
        if o.id in minimal:
            stroke, sw = "#c0262d", 2
        if failure is not None and o.id == failure.op.id:
            fill = "#e0454b"
        dash = ' stroke-dasharray="4 2"' if end is None else ""
        tip = (f"p{o.process} {_op_label(o)} [{o.status}] invoke #{o.invoke_index}"
               f" complete #{o.complete_index if o.complete_index is not None else '-'}"
               + (f" ({o.error})" if o.error else ""))
        parts.append(f'<g><rect x="{a:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 6}" '
                     f'rx="3" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"{dash}/>'
                     f'<title>{_esc(tip)}</title>')
        if w > 40:
            parts.append(f'<text x="{a + 3:.1f}" y="{y + 12}" font-size="10" '
                         f'pointer-events="none">{_esc(_op_label(o))[:int(w / 6)]}</text>')
        parts.append("</g>")
    if failure is not None:
        cut = failure.op.complete_time if use_time else failure.prefix_index
        if cut is not None:
            xc = x(float(cut))
            parts.append(f'<line x1="{xc:.1f}" x2="{xc:.1f}" y1="{top - 14}" y2="{height - 18}" '
                         f'stroke="#c0262d" stroke-dasharray="5 3"/>'
                         f'<text x="{xc + 3:.1f}" y="{height - 6}" font-size="11" '
                         f'fill="#c0262d">linearizable prefix ends here</text>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="10" fill="#777">'
                 f'{"time" if use_time else "event index"} {lo:.0f} … {hi:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _failure_html(f: Failure) -> str:
    d = f.descriptions
    rows = "".join(
        f"<tr><td>p{_esc(o.process)}</td><td class=mono>{_esc(d.get(o.id) or _op_label(o))}</td>"
        f"<td>{o.invoke_index}</td><td>{o.complete_index}</td>"
        f"<td>{'<b>first that cannot be linearized</b>' if o.id == f.op.id else ''}</td></tr>"
        for o in f.minimal)
    lin = "".join(f"<tr><td>p{_esc(o.process)}</td><td class=mono>{_esc(d.get(o.id, ''))}</td>"
                  f"<td class=mono>{_esc(st)}</td></tr>" for o, st in f.linearization)
    states = (f"<p>Possible states just before it completed: "
              f"<code>{_esc(', '.join(f.states_before))}</code></p>" if f.states_before else "")
    if not f.located:
        states += ("<p><i>The explanation ran out of time: the op and the prefix shown are "
                   "approximate.</i></p>")
    note = ("" if f.minimal_complete else
            "<p><i>The search for a minimal set ran out of time: the set below is the "
            "failing op's neighbourhood, not proven minimal.</i></p>")
    ctx = (f"<p>Given the {f.context_ops} older ops of this key as they were.</p>"
           if f.context_ops else "")
    return (f"<h3>Key <code>{_esc(f.key)}</code></h3>"
            f"<p>The first op that cannot be linearized: <code>p{_esc(f.op.process)} "
            f"{_esc(d.get(f.op.id, ''))}</code> (invoked at event #{f.op.invoke_index}, "
            f"completed at #{f.op.complete_index}).</p>{states}"
            f"<p>Operations that together cannot be linearized ({len(f.minimal)}): every "
            f"other op relaxed to “may or may not have taken effect”.</p>{note}{ctx}"
            f"<table><tr><th>process</th><th>op</th><th>invoke #</th><th>complete #</th>"
            f"<th></th></tr>{rows}</table>"
            f"<p>Longest linearizable prefix: every event before #{f.prefix_index} "
            f"({f.prefix_ops} ops completed). One valid order ends:</p>"
            f"<table><tr><th>process</th><th>op</th><th>state after</th></tr>{lin}</table>")


def render_report(result: CheckResult, *, title: str = "jepsen-lite report",
                  nemesis_periods: Sequence[tuple[float, float, str]] = (),
                  source: str | None = None, extra_html: str = "") -> str:
    """The report as an HTML string. ``extra_html`` (trusted, from the runner) is
    inserted after the summary, e.g. plots or run statistics."""
    v = result.valid
    vcls = {True: "v-true", False: "v-false"}.get(v, "v-unknown")  # type: ignore[call-overload]
    vtxt = {True: "linearizable", False: "NOT linearizable"}.get(v, "unknown")  # type: ignore[call-overload]
    by_key: dict[Any, list[Op]] = {}
    for op in result.ops:  # grouped as the checker did (a model may join keys)
        by_key.setdefault(result.partition.get(op.id, op.key), []).append(op)
    use_time = bool(result.ops) and all(
        o.invoke_time is not None and (o.complete_index is None or o.complete_time is not None)
        for o in result.ops)
    keys_sorted: list[KeyResult] = sorted(
        result.keys.values(), key=lambda k: (k.valid is not False, k.valid != "unknown", -k.ops))
    rows = "".join(
        f"<tr><td><code>{_esc(k.key)}</code></td>"
        f"<td class={ {True: 'v-true', False: 'v-false'}.get(k.valid, 'v-unknown') }>"  # type: ignore[call-overload]
        f"{_esc(k.valid)}</td><td>{k.ops}</td><td>{k.info_ops}</td><td>{k.steps}</td>"
        f"<td>{k.elapsed:.3f}</td><td>{_esc(k.reason or '')}</td></tr>"
        for k in keys_sorted)
    failures = "".join(_failure_html(f) for f in result.failures)
    timelines = []
    for k in keys_sorted[:MAX_KEYS]:
        ops = by_key.get(k.key, [])
        shown = len(_window(ops, k.failure))
        more = f" (showing {shown} of {len(ops)} ops)" if shown < len(ops) else ""
        timelines.append(f"<h3>Key <code>{_esc(k.key)}</code> — {_esc(k.valid)}{more}</h3>"
                         + _timeline(k.key, ops, k.failure, nemesis_periods, use_time))
    src = f"<p>History: <code>{_esc(source)}</code></p>" if source else ""
    counts = ", ".join(f"{n} {s}" for s, n in result.ops_by_status.items())
    legend = ("<p class=legend><span><i class=sw style='background:#6cc08b'></i>ok</span>"
              "<span><i class=sw style='background:#bbbbbb'></i>fail</span>"
              "<span><i class=sw style='background:#f0b04a'></i>info (dashed: never "
              "completed)</span><span><i class=sw style='background:#e0454b'></i>first op "
              "that cannot be linearized</span><span><i class=sw style='border:2px solid "
              "#c0262d'></i>minimal failing set</span><span><i class=sw style='background:"
              "#8fa8d8;opacity:.4'></i>fault active</span></p>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>{src}"
            f"<p style='font-size:20px'>Verdict: <b class={vcls}>{vtxt}</b></p>"
            f"<p>{result.op_count} operations ({counts}) on {len(result.keys)} keys, model "
            f"<code>{_esc(result.model)}</code>, checked in {result.elapsed:.3f} s.</p>"
            f"{extra_html}"
            + (f"<h2>Violations</h2>{failures}" if failures else "")
            + f"<h2>Keys</h2><table><tr><th>key</th><th>valid</th><th>ops checked</th>"
            f"<th>info</th><th>search steps</th><th>seconds</th><th></th></tr>{rows}</table>"
            f"<h2>Timelines</h2>{legend}{''.join(timelines)}</body></html>")


def run_html(r: dict[str, Any], images: Sequence[Path] = ()) -> str:
    """The ``extra_html`` of a ``jepsen-lite run`` report: the run's command and
    numbers from its results (``r``, as in results.json), the PNG ``images`` that
    exist (embedded, so the page stands alone), and the fault periods."""
    esc = html.escape
    a = r.get("availability", {})
    cfg = r.get("config", {})
    rows = [
        ("command (replay)", f"<code>{esc(r.get('replay', ''))}</code>"),
        ("nodes / net / transport", esc(f"{cfg.get('nodes')} / {cfg.get('net')} / "
                                        f"{cfg.get('transport')}")),
        ("nemesis / reads", esc(f"{cfg.get('nemesis')} / {cfg.get('reads')}")),
        ("ops by outcome", esc(json.dumps(r.get("ops_by_outcome")))),
        ("ok share: during faults / without", esc(f"{a.get('during_faults')} / "
                                                 f"{a.get('without_faults')}")),
        ("answered client time: during faults / without",
         esc(f"{a.get('answered_client_time_during_faults')} / "
             f"{a.get('answered_client_time_without_faults')}")),
        ("longest write outage per fault, median s",
         esc(json.dumps(r.get("failover", {}).get("median_by_fault")))),
    ]
    if r.get("watch"):  # the watch workload: its sessions apart from the writes above
        w = r["watch"]
        rows.append(("watchers / sessions (by outcome) / events delivered",
                     esc(f"{w.get('watchers')} / {w.get('sessions')} "
                         f"{json.dumps(w.get('sessions_by_outcome'))} / "
                         f"{w.get('events_delivered')}")))
        rows.append(("session errors", esc(json.dumps(w.get("session_errors")))))
    faults = "".join(
        f"<tr><td>{esc(p['f'])}</td><td>{p['start']:.2f}</td>"
        f"<td>{'' if p['stop'] is None else round(p['stop'], 2)}</td>"
        f"<td><code>{esc(json.dumps(p['value'])[:200])}</code></td></tr>"
        for p in r.get("nemesis_periods", []))
    imgs = ""
    for path in images:
        if path.exists():
            data = base64.b64encode(path.read_bytes()).decode()
            imgs += f"<p><img alt='{path.name}' src='data:image/png;base64,{data}'></p>"
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (f"<h2>Run</h2><table>{table}</table>{imgs}"
            f"<h2>Faults</h2><table><tr><th>fault</th><th>start s</th><th>stop s</th>"
            f"<th>value</th></tr>{faults}</table>")


def write_report(path: str | os.PathLike[str], result: CheckResult,
                 history: Sequence[dict[str, Any]] | None = None, *,
                 nemesis_periods: Sequence[tuple[float, float, str]] = (),
                 title: str = "jepsen-lite report", source: str | None = None,
                 extra_html: str = "") -> None:
    """Write the report to ``path`` (atomically: a temporary file, then rename).

    ``history`` is accepted for callers that have it (unused beyond the result's
    own ops today); ``nemesis_periods`` are shaded on every timeline.
    """
    del history
    text = render_report(result, title=title, nemesis_periods=nemesis_periods,
                         source=source, extra_html=extra_html)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def render_watch_report(result: WatchCheckResult, *, title: str = "jepsen-lite watch report",
                        source: str | None = None, extra_html: str = "") -> str:
    """The watch checker's verdict as an HTML string (``extra_html`` as in
    :func:`render_report`)."""
    vcls = "v-true" if result.valid else "v-false"
    vtxt = "watch guarantees hold" if result.valid else "watch guarantees VIOLATED"
    src = f"<p>History: <code>{_esc(source)}</code></p>" if source else ""
    stats = "".join(f"<tr><th>{_esc(k.replace('_', ' '))}</th><td><code>"
                    f"{_esc(json.dumps(v))}</code></td></tr>" for k, v in result.stats.items())
    counts = "".join(f"<tr><td>{k}</td><td class={'v-false' if result.counts.get(k) else 'v-true'}>"
                     f"{result.counts.get(k, 0)}</td></tr>" for k in KINDS)
    rows = "".join(f"<tr><td>{_esc(v.kind)}</td><td>{_esc(v.revision)}</td>"
                   f"<td>{_esc('' if v.process is None else f'p{v.process}')}</td>"
                   f"<td>{_esc('' if v.session is None else f'#{v.session}')}</td>"
                   f"<td>{_esc('' if v.index is None else v.index)}</td>"
                   f"<td>{_esc(v.message)}</td></tr>" for v in result.violations)
    listed = (f"<h2>Violations (at most {MAX_REPORTED} per kind)</h2><table><tr><th>kind</th>"
              f"<th>revision</th><th>watcher</th><th>session</th><th>history index</th>"
              f"<th>what</th></tr>{rows}</table>" if rows else "")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>{src}"
            f"<p style='font-size:20px'>Verdict: <b class={vcls}>{vtxt}</b></p>"
            f"<p>Checked in {result.elapsed:.3f} s.</p><table>{stats}</table>"
            f"{extra_html}<h2>Guarantees</h2><table><tr><th>check</th><th>violations</th></tr>"
            f"{counts}</table>{listed}</body></html>")


def write_watch_report(path: str | os.PathLike[str], result: WatchCheckResult, *,
                       title: str = "jepsen-lite watch report", source: str | None = None,
                       extra_html: str = "") -> None:
    """Write :func:`render_watch_report` to ``path`` (atomically)."""
    text = render_watch_report(result, title=title, source=source, extra_html=extra_html)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
