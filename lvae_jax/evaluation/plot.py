"""Rate–distortion plots: PSNR (dB) against bits per pixel, as a PNG (matplotlib, Agg).

Anchor curves (VTM, …) are drawn in shades of grey with dashed lines so the methods under study
stand out; with a BD anchor every other curve's legend entry carries its BD-rate against it.
The figure is built with matplotlib's object API (``Figure`` + Agg canvas): no pyplot state, no
GUI backend, safe in threads and on headless machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lvae_jax.evaluation.bd_rate import BDError, bd_rate
from lvae_jax.evaluation.rd_json import RDCurve, load_curves
from lvae_jax.files import atomic_file

ANCHOR_GREYS = ("0.15", "0.45", "0.65")
ANCHOR_MARKERS = ("x", "+", "s", "^", "v", "D")
ANCHOR_LINES = ("--", "-.", ":")


def _as_curves(items) -> list[RDCurve]:
    out: list[RDCurve] = []
    for item in items:
        if isinstance(item, RDCurve):
            out.append(item)
        else:
            out.extend(load_curves(item))
    return out


def legend_label(curve: RDCurve, bd_anchor: RDCurve | None, method: str,
                 tag: str | None = None) -> str:
    """``"qarv_base (BD-rate -5.90 %)"``, ``"VTM (anchor, BD-rate +0.01 %)"``; ``"BD-rate n/a"``
    when it cannot be computed (too few points, no PSNR overlap)."""
    parts = [tag] if tag else []
    if bd_anchor is not None and curve is not bd_anchor:
        try:
            parts.append(f"BD-rate {bd_rate(bd_anchor, curve, method=method):+.2f} %")
        except BDError:
            parts.append("BD-rate n/a")
    return f"{curve.label} ({', '.join(parts)})" if parts else curve.label


def plot_rd(out_path, curves: Sequence[RDCurve | str | Path],
            anchors: Sequence[RDCurve | str | Path] = (), *, bd_anchor: int | None = 0,
            method: str = "cubic", title: str | None = None,
            xlim: tuple[float, float] | None = None,
            ylim: tuple[float, float] | None = None) -> Path:
    """Draw ``curves`` and ``anchors`` (RDCurve objects or result files) and save the figure
    (PNG; another format if ``out_path`` has a suffix matplotlib knows, such as ``.pdf``).

    ``bd_anchor``: index into ``anchors`` of the BD-rate reference (None: no BD-rates).
    ``title``: defaults to the test set when all curves share one. Returns the written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves, anchors = _as_curves(curves), _as_curves(anchors)
    if not curves and not anchors:
        raise ValueError("nothing to plot: no curves and no anchors")
    reference = None
    if bd_anchor is not None and anchors:
        if not 0 <= bd_anchor < len(anchors):
            raise ValueError(f"bd_anchor={bd_anchor} but there are {len(anchors)} anchors")
        reference = anchors[bd_anchor]

    fig = Figure(figsize=(7.0, 5.0), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, anchor in enumerate(anchors):
        s = anchor.sorted("bpp")
        tag = "BD anchor" if anchor is reference else "anchor"
        label = legend_label(anchor, reference, method, tag)
        ax.plot(s.bpp, s.psnr, linestyle=ANCHOR_LINES[(i // len(ANCHOR_GREYS)) % len(ANCHOR_LINES)],
                linewidth=2.2, marker=ANCHOR_MARKERS[i % len(ANCHOR_MARKERS)], markersize=5,
                color=ANCHOR_GREYS[i % len(ANCHOR_GREYS)], label=label, zorder=2)
    for curve in curves:
        s = curve.sorted("bpp")
        ax.plot(s.bpp, s.psnr, linestyle="-", linewidth=1.4, marker=".", markersize=8,
                label=legend_label(curve, reference, method), zorder=3)

    test_sets = {c.test_set for c in curves + anchors if c.test_set}
    if title is None and len(test_sets) == 1:
        title = f"RD on {test_sets.pop()}"
    if title:
        ax.set_title(title)
    ax.set_xlabel("Rate (bits per pixel, bpp)")
    ax.set_ylabel("RGB PSNR (dB)")
    if xlim:
        ax.set_xlim(*xlim)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(True, alpha=0.4)
    legend_title = f"BD-rate vs {reference.label} ({method})" if reference is not None else None
    ax.legend(loc="lower right", fontsize="small", title=legend_title, title_fontsize="small")
    fig.tight_layout()

    out_path = Path(out_path)
    with atomic_file(out_path, suffix=out_path.suffix or ".png") as tmp:   # a kill leaves no partial plot
        fig.savefig(tmp, format=out_path.suffix.lstrip(".") or "png")
    return out_path
