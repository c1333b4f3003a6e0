"""Reports of a run: the latency plot and, for a violation, an HTML timeline of the operations that show it.

``latency.png`` plots every operation's latency against the time it began (log scale; failed
operations as crosses, operations of unknown outcome as triangles at the top), throughput per
second below, and shades the windows in which faults were in effect. matplotlib draws it with
the Agg backend, so no display is needed.

``timeline.html`` is one self-contained page (inline SVG, no scripts): one row per operation
(labelled with its index, process and member), a bar from invocation to completion, open-ended
bars for unknown outcomes, the operations the checker points at outlined in red, the faults of
that moment, and a table of the operations with their values.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.history import FAIL, INFO, OK, Operation

_COLORS = {OK: "#3a9a4a", FAIL: "#9a9a9a", INFO: "#e08a1e"}
_BAR_COLORS = {OK: "#a8dcb0", FAIL: "#d6d6d6", INFO: "#f7c98a"}
_F_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#e377c2"]


def latency_plot(
    ops: Sequence[Operation],
    faults: Sequence[tuple[int, int, str]],
    path: Path,
    title: str,
    timeout_s: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True, height_ratios=[3, 1])
    fs = sorted({op.f for op in ops})
    for i, f in enumerate(fs):
        color = _F_COLORS[i % len(_F_COLORS)]
        pts = [(op.call / 1e9, op.latency_ns / 1e6) for op in ops if op.f == f and op.type == OK and op.latency_ns]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=4, color=color, alpha=0.6, label=f"{f} ok", linewidths=0)
        bad = [(op.call / 1e9, max(op.latency_ns / 1e6, 0.01)) for op in ops if op.f == f and op.type == FAIL]
        if bad:
            ax.scatter(*zip(*bad, strict=True), s=14, color=color, marker="x", linewidths=0.8, label=f"{f} fail")
    unknown = [op.call / 1e9 for op in ops if op.type == INFO]
    if unknown:
        ax.scatter(unknown, [timeout_s * 1000] * len(unknown), s=16, color="#d62728", marker="v", label="info")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.2)
    end = max([op.call / 1e9 for op in ops] + [1.0])
    for start, stop, desc in faults:
        for a in (ax, ax2):
            a.axvspan(start / 1e9, stop / 1e9, color="#f2b134", alpha=0.18, linewidth=0)
        ax.text(
            start / 1e9,
            1.0,
            " " + desc,
            transform=ax.get_xaxis_transform(),
            fontsize=6,
            va="top",
            rotation=90,
            color="#8a5a00",
            clip_on=True,
        )
    buckets: dict[str, list[int]] = {t: [0] * (int(end) + 2) for t in (OK, FAIL, INFO)}
    for op in ops:
        buckets[op.type][int(op.call / 1e9)] += 1
    xs = list(range(len(buckets[OK])))
    bottom = [0] * len(xs)
    for t in (OK, FAIL, INFO):
        ax2.bar(xs, buckets[t], bottom=bottom, width=1.0, align="edge", color=_COLORS[t], label=t)
        bottom = [b + v for b, v in zip(bottom, buckets[t], strict=True)]
    ax2.set_ylabel("ops/s")
    ax2.set_xlabel("time since start (s)")
    ax2.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7)
    if ops:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, markerscale=2)
    ax.set_xlim(0, end + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(op: Operation) -> str:
    v = op.value
    if isinstance(v, dict):
        v = {k: x for k, x in v.items() if k != "key"}
    text = json.dumps(v, separators=(",", ":"), default=str)
    return f"{op.f} {text}" if len(text) < 90 else f"{op.f} {text[:87]}..."


def timeline_html(
    ops: Sequence[Operation],
    window: Sequence[int],
    path: Path,
    title: str,
    explanation: str,
    highlight: Sequence[int] = (),
    faults: Sequence[tuple[int, int, str]] = (),
    highlight_label: str = "the operation where every order runs out",
) -> None:
    """A page showing the operations ``window`` (indices into ops)."""
    chosen = sorted({i for i in window if 0 <= i < len(ops)}, key=lambda i: (ops[i].call, i))
    if not chosen:
        path.write_text(f"<!doctype html><title>{html.escape(title)}</title><p>{html.escape(explanation)}</p>")
        return
    t0 = min(ops[i].call for i in chosen)
    t1 = max(max(ops[i].ret or ops[i].call for i in chosen), t0 + 1)
    span = t1 - t0
    t1 += span // 8  # room for open-ended bars
    span = t1 - t0
    row = {i: n for n, i in enumerate(chosen)}  # one row per operation: labels never overlap
    width, left, row_h = 1100, 110, 22
    height = 40 + row_h * len(chosen) + 30

    def x(t: int) -> float:
        return left + (width - left - 10) * (t - t0) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
        'font-size="10">'
    ]
    for start, stop, desc in faults:
        if stop < t0 or start > t1:
            continue
        a, b = x(max(start, t0)), x(min(stop, t1))
        parts.append(
            f'<rect x="{a:.1f}" y="20" width="{max(b - a, 1):.1f}" height="{height - 50}" fill="#f2b134" '
            f'opacity="0.2"><title>{html.escape(desc)}</title></rect>'
        )
        parts.append(f'<text x="{a + 2:.1f}" y="14" fill="#8a5a00">{html.escape(desc)}</text>')
    for i, n in row.items():
        y = 30 + n * row_h
        who = f"#{i} p{ops[i].process}" + (f" {ops[i].node}" if ops[i].node else "")
        parts.append(f'<text x="4" y="{y + 14}">{html.escape(who)}</text>')
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y + row_h - 2}" y2="{y + row_h - 2}" stroke="#eee"/>')
    for i in chosen:
        op = ops[i]
        y = 30 + row[i] * row_h
        a = x(op.call)
        b = x(op.ret) if op.ret is not None else width - 10
        color = _BAR_COLORS[op.type]
        stroke = ' stroke="#d00" stroke-width="2.5"' if i in highlight else ""
        dash = ' stroke-dasharray="4 2" fill-opacity="0.35"' if op.ret is None else ""
        tip = html.escape(
            f"#{i} {op.f} {op.type} {json.dumps(op.value, default=str)}" + (f" error: {op.error}" if op.error else "")
        )
        parts.append(
            f'<rect x="{a:.1f}" y="{y + 2}" width="{max(b - a, 2):.1f}" height="{row_h - 8}" rx="3" '
            f'fill="{color}"{stroke}{dash}><title>{tip}</title></rect>'
        )
        anchor = f'x="{a + 3:.1f}"' if a < left + (width - left) * 0.55 else f'x="{a - 3:.1f}" text-anchor="end"'
        parts.append(f'<text {anchor} y="{y + 14}" fill="#111">{html.escape(_label(op))}</text>')
    parts.append(f'<text x="{left}" y="{height - 6}">{(t0) / 1e9:.3f} s</text>')
    parts.append(f'<text x="{width - 90}" y="{height - 6}">{t1 / 1e9:.3f} s</text>')
    parts.append("</svg>")
    rows = []
    for i in chosen:
        op = ops[i]
        mark = ' class="hl"' if i in highlight else ""
        rows.append(
            f"<tr{mark}><td>{i}</td><td>{html.escape(str(op.process))}</td><td>{html.escape(op.node or '')}</td>"
            f"<td>{op.f}</td><td>{op.type}</td><td>{op.call / 1e6:.3f}</td>"
            f"<td>{'' if op.ret is None else f'{op.ret / 1e6:.3f}'}</td>"
            f"<td><code>{html.escape(json.dumps(op.invoke_value, default=str))}</code></td>"
            f"<td><code>{html.escape(json.dumps(op.value, default=str))}</code></td>"
            f"<td>{html.escape(op.error or '')}</td></tr>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ddd; padding: 2px 6px; vertical-align: top; }}
tr.hl td {{ background: #fdd; }}
code {{ white-space: pre-wrap; word-break: break-all; }}
.legend span {{ display: inline-block; padding: 1px 8px; margin-right: 6px; color: #111; border-radius: 3px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(explanation)}</p>
<p class="legend"><span style="background:{_BAR_COLORS[OK]}">ok</span>
<span style="background:{_BAR_COLORS[FAIL]}">fail</span>
<span style="background:{_BAR_COLORS[INFO]}">info (unknown outcome, open-ended)</span>
<span style="background:#fff;color:#d00;border:2px solid #d00">{html.escape(highlight_label)}</span>
shaded: faults in effect. Times are milliseconds since the run began; hover a bar for its values.</p>
{"".join(parts)}
<h2>Operations ({len(chosen)})</h2>
<table><tr><th>#</th><th>process</th><th>member</th><th>f</th><th>outcome</th><th>invoked (ms)</th>
<th>completed (ms)</th><th>invocation</th><th>completion</th><th>error</th></tr>
{"".join(rows)}
</table></body></html>
"""
    path.write_text(page)


def write_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
