"""Plots of run folders: success against environment steps, with 95% intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from expoft.fileio import read_metrics  # noqa: E402
from expoft.report.steps import nominal_step, run_grid  # noqa: E402


def eval_curve(run_dir: str | Path) -> dict[str, list[float]]:
    """``env_step``, ``success``, ``low``, ``high`` of every OTF evaluation row of a run."""
    rows = [r for r in read_metrics(run_dir) if "eval/success" in r]
    return {
        "env_step": [r["env_step"] for r in rows],
        "success": [r["eval/success"] for r in rows],
        "low": [r["eval/success_ci_low"] for r in rows],
        "high": [r["eval/success_ci_high"] for r in rows],
    }


def plot_learning_curves(
    runs: dict[str, str | Path], out: str | Path, title: str = "", levels: dict[str, float] | None = None
) -> Path:
    """One line per labelled run folder, shaded by its 95% interval, plus dashed horizontal
    ``levels`` (e.g. the imitation-only success); saved as PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, level in (levels or {}).items():
        ax.axhline(level, linestyle="--", color="gray", label=label)
    for label, run_dir in runs.items():
        curve = eval_curve(run_dir)
        line = ax.plot(curve["env_step"], curve["success"], marker="o", label=label)[0]
        ax.fill_between(curve["env_step"], curve["low"], curve["high"], color=line.get_color(), alpha=0.15)
    return _save_success_axes(fig, ax, title, out)


def mean_curve(run_dirs: Sequence[str | Path]) -> dict[str, list[float]]:
    """The seeds of one method: ``env_step`` (the grid points every run evaluated at), the mean
    ``success`` there and its ``low``/``high`` over seeds. Evaluations are placed on their run's
    grid (:func:`nominal_step`): chunked runs evaluate a few steps past a multiple of
    ``eval_every``, at steps that differ from seed to seed."""
    curves = [_grid_curve(d) for d in run_dirs]
    steps = sorted(set.intersection(*(set(c["env_step"]) for c in curves)))
    values = [[c["success"][c["env_step"].index(s)] for s in steps] for c in curves]
    by_step = list(zip(*values, strict=True))
    return {
        "env_step": steps,
        "success": [sum(v) / len(v) for v in by_step],
        "low": [min(v) for v in by_step],
        "high": [max(v) for v in by_step],
    }


def plot_mean_curves(groups: Mapping[str, Sequence[str | Path]], out: str | Path, title: str = "") -> Path:
    """One line per group of run folders (e.g. the seeds of a method): the mean success at each
    evaluation step (:func:`mean_curve`), shaded between the lowest and highest seed; saved as PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, run_dirs in groups.items():
        curve = mean_curve(run_dirs)
        seeds = f"{len(run_dirs)} seed" + ("s" if len(run_dirs) != 1 else "")
        line = ax.plot(curve["env_step"], curve["success"], marker="o", label=f"{label} ({seeds})")[0]
        ax.fill_between(curve["env_step"], curve["low"], curve["high"], color=line.get_color(), alpha=0.15)
    return _save_success_axes(fig, ax, title, out)


def _grid_curve(run_dir: str | Path) -> dict[str, list[float]]:
    curve = eval_curve(run_dir)
    every, total, chunk = run_grid(run_dir)
    curve["env_step"] = [nominal_step(int(s), every, total, chunk) for s in curve["env_step"]]
    return curve


def style_success_axes(ax, title: str = "", ylabel: bool = True) -> None:
    """Success (0-1) against environment steps: labels, limits, grid, title and legend."""
    ax.set_xlabel("environment steps")
    if ylabel:
        ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:  # a bench without finished runs has no lines yet
        ax.legend(loc="lower right")


def save_figure(fig, out: str | Path, dpi: int = 120) -> Path:
    """Lay out, write as PNG (making its folder) and close: figures are many in a bench."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _save_success_axes(fig, ax, title: str, out: str | Path) -> Path:
    style_success_axes(ax, title)
    return save_figure(fig, out)
