"""Plots that compare methods: one line per method (mean over seeds), shaded by its spread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from expoft.report.plots import _save_success_axes  # noqa: E402


def plot_method_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    out: str | Path,
    title: str = "",
    levels: Mapping[str, float] | None = None,
) -> Path:
    """Success against environment steps, one line per method, saved as PNG.

    ``curves[label]`` holds equally long ``env_step``, ``mean``, ``low`` and ``high`` lists (the
    shaded band runs from ``low`` to ``high``) and optionally ``n`` (seeds, shown in the legend).
    ``levels`` are dashed horizontal lines (e.g. imitation-only success)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, level in (levels or {}).items():
        ax.axhline(level, linestyle="--", color="gray", label=label)
    for label, curve in curves.items():
        if not curve["env_step"]:
            continue
        n = curve.get("n")
        name = f"{label} (n={n})" if n is not None else label
        line = ax.plot(curve["env_step"], curve["mean"], marker="o", markersize=3, label=name)[0]
        ax.fill_between(curve["env_step"], curve["low"], curve["high"], color=line.get_color(), alpha=0.15)
    with plt.rc_context({"legend.fontsize": "small", "legend.framealpha": 0.6}):
        return _save_success_axes(fig, ax, title, out)
