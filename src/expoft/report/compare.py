"""Plots that compare methods: one line per method (mean over seeds), shaded by its spread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from expoft.fileio import read_metrics  # noqa: E402
from expoft.report.plots import _save_success_axes, save_figure, style_success_axes  # noqa: E402
from expoft.report.steps import nominal_step, run_grid  # noqa: E402


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


def paired_curve(run_dir: str | Path) -> list[tuple[int, float, float | None]]:
    """(nominal env step, policy success, its base alone's success or None) of every evaluation of
    a run: the base alone is evaluated on the same reset seeds (``expoft bench``'s default)."""
    every, total, chunk = run_grid(run_dir)
    return [
        (nominal_step(int(r["env_step"]), every, total, chunk), r["eval/success"], r.get("eval_base/success"))
        for r in read_metrics(run_dir)
        if "eval/success" in r
    ]


def plot_policy_vs_base(groups: Mapping[str, Sequence[str | Path]], out: str | Path) -> Path:
    """One panel per group of run folders: the policy (solid) against its own base alone (dashed),
    the mean over the runs thick, each run thin: where a fine-tuning gain comes from."""
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (label, runs) in zip(axes[0], groups.items(), strict=True):
        curves = [paired_curve(r) for r in runs]
        for which, name, style, color in ((0, "policy", "-", "C0"), (1, "base alone", "--", "C1")):
            points_of = [[(step, v) for step, *vs in curve if (v := vs[which]) is not None] for curve in curves]
            values: dict[int, list[float]] = {}
            for points in points_of:
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=color, alpha=0.3, linewidth=0.8)
                for step, value in points:
                    values.setdefault(step, []).append(value)
            if values:
                steps = sorted(values)
                ax.plot(steps, [np.mean(values[s]) for s in steps], style, color=color, linewidth=2.2, marker="o",
                        markersize=3, label=f"{name} (mean of {len(runs)})")  # fmt: skip
        with plt.rc_context({"axes.titlesize": "medium", "legend.fontsize": "small"}):
            style_success_axes(ax, label, ylabel=ax is axes[0][0])
    return save_figure(fig, out, dpi=110)
