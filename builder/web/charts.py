"""Charts drawn on the server as SVG text: throughput per instance, and the timeline of
mini-batches per worker. No script library: the page swaps in the new SVG while a job runs.

Both are bounded whatever the job's size: the throughput chart has at most MAX_BUCKETS points per
instance (buckets of 5 s, widened for long jobs), the timeline draws the last MAX_BARS attempts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape

from bepbuild_runtime import layout

from .attempts import AttemptIndex
from .jobview import Claim

BUCKET_SECONDS = 5.0
MAX_BUCKETS = 150
MAX_BARS = 1500
PALETTE = ("#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#65a30d", "#7c3aed", "#0f766e",
           "#b45309")
COLORS = {"ok": "#2563eb", "retry": "#f59e0b", "failed": "#dc2626", "running": "#94a3b8"}

W, H = 1000, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 14, 34


def _duration(seconds: float) -> str:
    if seconds < 10:  # short jobs: tenths (or thousandths) of a second
        return f"{seconds:.1f}s" if seconds >= 1 or seconds == 0 else f"{seconds:.3g}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _nice(value: float) -> float:
    """The next 'round' number at or above value (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp


def _empty(message: str, height: int = 60) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="100%" role="img">'
            f'<text x="{W // 2}" y="{height // 2}" text-anchor="middle" fill="#64748b" font-size="13">'
            f"{escape(message)}</text></svg>")


def throughput(index: AttemptIndex, *, now: float | None = None, running: bool = False) -> str:
    """Items per second in each bucket of BUCKET_SECONDS (wider for long jobs), one line per instance.

    An attempt's items count at its end. Call with `index.lock` held.
    """
    n = len(index)
    if n == 0:
        return _empty("no mini-batch has finished yet")
    start, elapsed, total, worker = index.start, index.elapsed, index.total, index.worker
    t0 = min(start)
    t1 = max(s + e for s, e in zip(start, elapsed, strict=True))
    if running:
        t1 = max(t1, now or time.time())
    width = BUCKET_SECONDS
    buckets = max(1, math.ceil((t1 - t0) / width))
    if buckets > MAX_BUCKETS:
        width = BUCKET_SECONDS * math.ceil(buckets / MAX_BUCKETS)
        buckets = max(1, math.ceil((t1 - t0) / width))
    instance_of = [layout.instance_of(w) for w in index.workers]
    instances = sorted(set(instance_of))
    series = {name: [0.0] * buckets for name in instances}
    for i in range(n):
        b = min(buckets - 1, int((start[i] + elapsed[i] - t0) / width))
        series[instance_of[worker[i]]][b] += total[i]
    # The last bucket of a running job is still filling: left out until it is whole. A finished
    # job's last bucket is as long as the job lasted in it.
    spans = [width] * buckets
    spans[-1] = max(1.0, min(width, t1 - (t0 + width * (buckets - 1))))
    if running and buckets > 1 and spans[-1] < width:
        buckets -= 1
        series = {name: v[:buckets] for name, v in series.items()}
    rates = {name: [items / spans[b] for b, items in enumerate(v)] for name, v in series.items()}
    peak = _nice(max(max(v) for v in rates.values()))
    axis = width * (buckets - 1) + spans[buckets - 1]  # seconds from t0 the x axis covers
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" '
             f'aria-label="throughput per instance">']
    for k in range(5):  # horizontal grid and y labels
        y = TOP + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#475569">'
                     f"{peak * k / 4:g}</text>")
    for k in range(6):  # x labels: time since the first attempt started
        x = LEFT + plot_w * k / 5
        parts.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11" '
                     f'fill="#475569">{_duration(axis * k / 5)}</text>')
    parts.append(f'<text x="{LEFT}" y="{H - 4}" font-size="11" fill="#475569">items/s per {width:g} s, '
                 f"by instance</text>")
    for j, name in enumerate(instances):
        color = PALETTE[j % len(PALETTE)]
        pts = []
        for b, rate in enumerate(rates[name]):
            x = LEFT + plot_w * (b * width + spans[b] / 2) / axis
            y = TOP + plot_h - plot_h * rate / peak
            pts.append((x, y, rate))
        # Lines drawn thinner one over the other: instances at the same rate stay visible.
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="{max(1.5, 4.5 - 1.2 * j):g}" '
                     f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)}"><title>{escape(name)}</title>'
                     "</polyline>")
        if len(pts) <= 60:  # markers keep overlapping lines apart
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{3.5 - j % 2:g}" fill="{color}"><title>'
                         f"{escape(name)}: {rate:.2f} items/s</title></circle>" for x, y, rate in pts)
        lx = W - RIGHT - 130 * (len(instances) - j)
        parts.append(f'<rect x="{lx}" y="2" width="10" height="10" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="11" font-size="11" fill="#1e293b">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline(index: AttemptIndex, claims: Sequence[Claim], *, now: float | None = None) -> str:
    """One lane per worker, one bar per attempt (retries and failures in their own colours), the
    mini-batches being worked on now in grey. Call with `index.lock` held."""
    now = now or time.time()
    order = index.order()
    shown = order[-MAX_BARS:]
    if not shown and not claims:
        return _empty("no mini-batch has started yet")
    done_status = index.statuses.index(layout.STATUS_DONE) if layout.STATUS_DONE in index.statuses else -1
    workers = sorted({index.workers[index.worker[i]] for i in shown} | {c.worker for c in claims},
                     key=_natural)
    lane = {w: k for k, w in enumerate(workers)}
    starts = [index.start[i] for i in shown] + [c.since for c in claims]
    ends = [index.start[i] + index.elapsed[i] for i in shown] + ([now] if claims else [])
    t0 = min(starts)
    t1 = max(max(ends), t0 + 0.001)  # a job of milliseconds still fills the width
    lane_h, left = 20, 120
    height = TOP + lane_h * len(workers) + BOTTOM
    plot_w = W - left - RIGHT
    x = lambda t: left + plot_w * (t - t0) / (t1 - t0)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="100%" role="img" '
             f'aria-label="mini-batches per worker">']
    for w, k in lane.items():
        y = TOP + k * lane_h
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" font-size="11" fill="#1e293b">'
                     f"{escape(w)}</text>")
        parts.append(f'<line x1="{left}" x2="{W - RIGHT}" y1="{y + lane_h - 1}" y2="{y + lane_h - 1}" '
                     f'stroke="#f1f5f9"/>')
    for i in shown:
        status = index.status[i]
        kind = "failed" if status != done_status else ("retry" if index.picked[i] > 1 else "ok")
        s, e = index.start[i], index.start[i] + index.elapsed[i]
        y = TOP + lane[index.workers[index.worker[i]]] * lane_h + 2
        bx = x(s)
        parts.append(f'<rect class="mb {kind}" x="{bx:.1f}" y="{y}" width="{max(1.0, x(e) - bx):.1f}" '
                     f'height="{lane_h - 5}" fill="{COLORS[kind]}"><title>mini-batch {index.batch[i]:09d} try '
                     f"{index.picked[i]}: {escape(index.statuses[status])} ({index.elapsed[i]:.2f} s)</title></rect>")
    for c in claims:
        y = TOP + lane[c.worker] * lane_h + 2
        bx = x(c.since)
        parts.append(f'<rect class="mb running" x="{bx:.1f}" y="{y}" width="{max(1.0, x(now) - bx):.1f}" '
                     f'height="{lane_h - 5}" fill="{COLORS["running"]}"><title>mini-batch {c.batch:09d}: running'
                     f"</title></rect>")
    for k in range(6):
        tx = left + plot_w * k / 5
        parts.append(f'<text x="{tx:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle" font-size="11" '
                     f'fill="#475569">{_duration((t1 - t0) * k / 5)}</text>')
    legend = [("ok", "done"), ("retry", "done on a retry"), ("failed", "failed try"), ("running", "running")]
    lx = left
    for kind, label in legend:
        parts.append(f'<rect x="{lx}" y="{height - 12}" width="10" height="10" fill="{COLORS[kind]}"/>'
                     f'<text x="{lx + 14}" y="{height - 3}" font-size="11" fill="#1e293b">{label}</text>')
        lx += 30 + 7 * len(label)
    if len(order) > len(shown):
        parts.append(f'<text x="{W - RIGHT}" y="{height - 3}" text-anchor="end" font-size="11" fill="#64748b">'
                     f"last {len(shown):,} of {len(order):,} attempts</text>")
    parts.append("</svg>")
    return "".join(parts)


def _natural(name: str) -> tuple:
    """instance-2.1 before instance-10.0."""
    out: list = []
    for part in name.replace("-", ".").split("."):
        out.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return tuple(out)
