"""latency.png and rate.png (matplotlib, a declared dependency): drawn from a history,
with every nemesis period shaded on both plots."""

from __future__ import annotations

from jepsen_lite.nemesis import Period


def ev(i, t, process, typ, f, key=None, value=None):
    e = {"index": i, "time": int(t * 1e9), "process": process, "type": typ, "f": f,
         "value": value}
    if key is not None:
        e["key"] = key
    return e


def test_plots_are_pngs_with_the_fault_periods_shaded(tmp_path, monkeypatch):
    from jepsen_lite import plots
    from matplotlib.axes import Axes

    spans: list[tuple[float, float, str | None]] = []
    real = Axes.axvspan

    def spy(self, xmin, xmax, *a, **kw):
        spans.append((xmin, xmax, kw.get("label")))
        return real(self, xmin, xmax, *a, **kw)

    monkeypatch.setattr(Axes, "axvspan", spy)
    events = [
        ev(0, 0.0, 0, "invoke", "write", 1, 1), ev(1, 0.2, 0, "ok", "write", 1, 1),
        ev(2, 1.0, "nemesis", "info", "start-kill", value={"nodes": ["1"]}),
        ev(3, 1.1, 0, "invoke", "write", 1, 2), ev(4, 3.1, 0, "info", "write", 1, 2),
        ev(5, 3.2, 1, "invoke", "read", 1), ev(6, 3.3, 1, "fail", "read", 1),
        ev(7, 4.0, "nemesis", "info", "stop-kill", value={"nodes": ["1"]}),
        ev(8, 4.5, 1, "invoke", "read", 1), ev(9, 4.6, 1, "ok", "read", 1, 1),
    ]
    plots.write_plots(tmp_path, events, [Period("kill", 1.0, 4.0), Period("pause", 4.2, None)])
    for name in ("latency.png", "rate.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # each plot shades both periods; one still open at the end runs to the last event
    assert spans == [(1.0, 4.0, "kill"), (4.2, 4.6, "pause")] * 2
