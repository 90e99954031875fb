"""The comparison report of a bench folder: table (Markdown and CSV), learning curves, configs.

Reads only what the runs wrote (``summary.json``, ``config.json``, ``metrics.jsonl``) and what the runner recorded
(``bench.json``, each run's ``bench_run.json``), so ``expoft bench report DIR`` can re-render it
at any time, also while runs are still going (unfinished runs are counted, not used)::

    DIR/report/table.md            one row per method (the method's name labels it)
    DIR/report/seeds.md            every seed's curve at the same steps, one row per method
    DIR/report/table.csv           the same figures, every common checkpoint, machine-readable
    DIR/report/summary.jsonl       one JSON line per method with the headline figures
    DIR/report/learning_curves.png success vs environment steps, one line per method
    DIR/report/configs/            each run's resolved config.json (METHOD_seedS.json)
    DIR/report/commands.txt        the bench command and every command it ran
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from expoft.fileio import read_metrics
from expoft.report.steps import nominal_step, run_grid

THRESHOLDS = (0.5, 0.8, 0.95)
"""Success levels for "environment steps to reach"."""
MAX_TABLE_CHECKPOINTS = 6
"""Checkpoint columns of table.md when none are asked for (table.csv has every common one)."""


# ---------------------------------------------------------------------------
# statistics


def t_quantile(df: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t quantile: ``t`` with P(|T| <= t) = confidence for ``df`` degrees of freedom."""
    from scipy.stats import t  # scipy comes with jax

    return float(t.ppf(0.5 + confidence / 2, df))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """``(mean, low, high)``: the mean and its Student-t confidence interval over the values
    (seeds). With one value the interval is undefined: ``(value, None, None)``."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1, confidence) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def first_reaching(evaluations: Sequence[dict], threshold: float) -> dict | None:
    """The first evaluation (by ``env_step``) with ``success >= threshold``, or None.
    Evaluations are ``{"env_step": int, "success": float}`` (plus ``cpu_seconds`` in newer runs)."""
    return next((e for e in sorted(evaluations, key=lambda e: e["env_step"]) if e["success"] >= threshold), None)


def steps_to_threshold(evaluations: Sequence[dict], threshold: float) -> int | None:
    """Environment steps of the first evaluation with ``success >= threshold``; None if none reached it."""
    first = first_reaching(evaluations, threshold)
    return None if first is None else int(first["env_step"])


def cpu_to_threshold(evaluations: Sequence[dict], threshold: float) -> float | None:
    """CPU seconds of the run (its own count: pretraining included, across resumes) at the first
    evaluation with ``success >= threshold``; None if none reached it or the run did not record CPU
    time (runs from before it was counted)."""
    first = first_reaching(evaluations, threshold)
    return None if first is None else first.get("cpu_seconds")


def select_checkpoints(steps: Sequence[int], limit: int = MAX_TABLE_CHECKPOINTS) -> list[int]:
    """At most ``limit`` of the sorted ``steps``, evenly spread, always the first and the last."""
    steps = sorted(set(steps))
    if len(steps) <= limit:
        return steps
    picks = {round(i * (len(steps) - 1) / (limit - 1)) for i in range(limit)}
    return [steps[i] for i in sorted(picks)]


# ---------------------------------------------------------------------------
# reading runs


@dataclasses.dataclass
class RunRecord:
    method: str
    seed: int
    run_dir: Path
    summary: dict | None = None
    """summary.json; None while the run has not finished."""
    bench: dict | None = None
    """bench_run.json: what the runner measured (CPU and wall seconds of each attempt)."""

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def failed(self) -> bool:
        return not self.finished and bool(self.bench and self.bench.get("status") == "failed")

    @property
    def finished_summary(self) -> dict:
        """``summary`` of a finished run."""
        assert self.summary is not None, f"{self.run_dir}: the run has not finished (no summary.json)"
        return self.summary

    @functools.cached_property
    def evaluations(self) -> list[dict]:
        """The run's evaluations, each at its nominal env step (see :func:`nominal_step`); read once."""
        evals = list(self.summary.get("evaluations") or []) if self.summary else []
        every, total, chunk = run_grid(self.run_dir)
        return [{**e, "env_step": nominal_step(int(e["env_step"]), every, total, chunk)} for e in evals]

    @functools.cached_property
    def success_at(self) -> dict[int, float]:
        """Success by (nominal) evaluation step."""
        return self.figure_at("success")

    def figure_at(self, figure: str) -> dict[int, float]:
        """An evaluation figure (``success``; ``return``, the mean episode return, in runs that
        logged it) by (nominal) evaluation step."""
        return {int(e["env_step"]): float(e[figure]) for e in self.evaluations if e.get(figure) is not None}

    @functools.cached_property
    def reward(self) -> str:
        """The run's reward (config.json; ``sparse`` for runs from before there was a choice)."""
        config = _read_json(self.run_dir / "config.json") or {}
        return str(config.get("reward") or "sparse")

    @functools.cached_property
    def edited_frac(self) -> float | None:
        """How often the run executed an edited candidate (EXPO's OTF): the mean of the
        ``otf/edited_frac`` of its metrics rows, each over the same number of env steps; None
        for agents that do not edit (rows without it) and for runs without metrics.jsonl."""
        try:
            rows = read_metrics(self.run_dir)
        except FileNotFoundError:
            return None
        return _mean([float(r["otf/edited_frac"]) for r in rows if r.get("otf/edited_frac") is not None])

    def _own_count(self, key: str) -> float | None:
        """summary.json's ``key`` when the run has one, else what the runner measured."""
        if self.summary and self.summary.get(key) is not None:
            return float(self.summary[key])
        return self.bench.get(key) if self.bench else None

    @property
    def cpu_seconds(self) -> float | None:
        """CPU seconds of the work behind the run's result: its own count (summary.json's
        ``cpu_seconds``: the finetune process's user + system time, pretraining included, carried
        across resumes, so work redone after a kill counts once; child processes, such as the
        workers of data the run generates itself, are not in it: the bench generates the data
        before its runs); for a run without one (older, or unfinished), what the runner measured."""
        return self._own_count("cpu_seconds")

    @property
    def runner_cpu_seconds(self) -> float | None:
        """CPU seconds the runner measured (``wait4``) over the attempts it saw end: work redone
        after a kill counts twice, and an attempt that outlived its runner (a killed session) not
        at all."""
        return self.bench.get("cpu_seconds") if self.bench else None

    @property
    def wall_seconds(self) -> float | None:
        """Wall seconds, counted like :attr:`cpu_seconds`: the run's own count when it has one."""
        return self._own_count("wall_seconds")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_bench(bench_dir: str | Path) -> tuple[dict, list[RunRecord]]:
    """``(bench.json, runs)``; without a bench.json, the run folders ``runs/METHOD/seedS`` found."""
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise FileNotFoundError(f"{bench_dir} does not exist")
    bench = _read_json(bench_dir / "bench.json")
    if bench is not None:
        entries = [(r["method"], int(r["seed"]), bench_dir / r["run_dir"]) for r in bench["runs"]]
    else:
        bench = {}
        entries = [
            (d.parent.name, int(d.name.removeprefix("seed")), d)
            for d in sorted((bench_dir / "runs").glob("*/seed*"))
            if d.is_dir() and d.name.removeprefix("seed").isdigit()
        ]
        if not entries:
            raise FileNotFoundError(
                f"{bench_dir} holds no bench.json and no run folders runs/METHOD/seedS; is it an `expoft bench` folder?"
            )
    runs = [
        RunRecord(method, seed, path, _read_json(path / "summary.json"), _read_json(path / "bench_run.json"))
        for method, seed, path in entries
    ]
    return bench, runs


# ---------------------------------------------------------------------------
# per-method figures


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def _clip01(x: float | None) -> float | None:
    return None if x is None else min(1.0, max(0.0, x))


def method_stats(runs: Sequence[RunRecord]) -> dict:
    """The figures of one method over its finished runs (seeds)."""
    done = [r for r in runs if r.finished]
    stats: dict = {
        "method": runs[0].method,
        "runs": len(runs),
        "finished": len(done),
        "failed": sum(r.failed for r in runs),
        "seeds": [r.seed for r in done],
        "success": {},
    }
    if not done:
        return stats
    # Checkpoints: the evaluation steps every finished run of the method has.
    per_run = [r.success_at for r in done]
    common = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    for step in common:
        mean, low, high = t_interval([p[step] for p in per_run])
        stats["success"][step] = {
            "mean": mean,
            "low": _clip01(low),
            "high": _clip01(high),
            "min": min(p[step] for p in per_run),
            "max": max(p[step] for p in per_run),
            "n": len(per_run),
        }
    finals = [
        float(r.finished_summary["final_success"]) for r in done if r.finished_summary.get("final_success") is not None
    ]
    if finals:
        mean, low, high = t_interval(finals)
        stats["final_success"] = {"mean": mean, "low": _clip01(low), "high": _clip01(high), "n": len(finals)}
    for threshold in THRESHOLDS:
        reached = [s for s in (steps_to_threshold(r.evaluations, threshold) for r in done) if s is not None]
        stats[f"steps_to_{round(threshold * 100)}"] = {"mean": _mean(reached), "reached": len(reached), "n": len(done)}
    cpu_95 = [c for c in (cpu_to_threshold(r.evaluations, 0.95) for r in done) if c is not None]
    stats["cpu_minutes_to_95"] = {
        "mean": _minutes(_mean(cpu_95)),  # None when no run reached 95%
        "reached": len(cpu_95),
        "n": len(done),
    }
    cpu = [r.cpu_seconds for r in done]
    wall = [r.wall_seconds for r in done]
    stats["cpu_minutes"] = _minutes(_mean(cpu))
    stats["runner_cpu_minutes"] = _minutes(_mean([r.runner_cpu_seconds for r in done]))
    stats["wall_minutes"] = _minutes(_mean(wall))
    stats["grad_steps_per_s"] = _mean([r.finished_summary.get("critic_steps_per_s") for r in done])
    stats["bc_success"] = _mean([r.finished_summary.get("bc_success") for r in done])
    stats["edited_frac"] = _mean([r.edited_frac for r in done])
    env_steps = [r.finished_summary.get("env_steps") for r in done]
    stats["env_steps"] = env_steps[0] if len(set(env_steps)) == 1 else _mean(env_steps)
    # the diagnostics of "EXPO that learns": what the acting rule adds to its own base (paired on
    # the same reset seeds at the last evaluation), whether the critic tracks the returns, and
    # the ratio of gradient steps that was run
    paired = [s for s in (r.finished_summary.get("final_policy_minus_base") for r in done) if s is not None]
    if paired:
        mean, low, high = t_interval(paired)
        stats["policy_minus_base"] = {"mean": mean, "low": low, "high": high, "n": len(paired)}
    last = [r.evaluations[-1] for r in done if r.evaluations]
    stats["q_return_corr"] = _mean([e.get("q_return_corr") for e in last])
    stats["first_q"] = _mean([e.get("first_q") for e in last])
    stats["first_return"] = _mean([e.get("first_return") for e in last])
    for key in ("critic_steps_per_env_step", "actor_steps_per_env_step"):
        stats[key] = _mean([r.finished_summary.get(key) for r in done])
    return stats


# ---------------------------------------------------------------------------
# formatting


def _step_label(step: int) -> str:
    if step >= 1000 and step % 1000 == 0:
        return f"{step // 1000}k"
    return str(step)


def format_success(cell: dict | None, spec: str = ".2f") -> str:
    """A mean with its interval over seeds: ``0.62 [0.41, 0.83]`` (``spec``: the number format)."""
    if cell is None:
        return "–"
    if cell["n"] == 1 or cell["low"] is None:
        return f"{cell['mean']:{spec}} (n=1)"
    return f"{cell['mean']:{spec}} [{cell['low']:{spec}}, {cell['high']:{spec}}]"


def format_steps(cell: dict | None, fmt: str = ",.0f") -> str:
    if not cell or cell["n"] == 0:
        return "–"
    if cell["mean"] is None:
        return f"– (0/{cell['n']})"
    return f"{cell['mean']:{fmt}} ({cell['reached']}/{cell['n']})"


def format_difference(cell: dict | None) -> str:
    """A signed mean with its interval over seeds: ``+0.12 [+0.02, +0.22]``."""
    return format_success(cell, "+.2f")


def format_calibration(s: dict) -> str:
    """Mean Q of the evaluation episodes' first decisions vs their discounted return, and the
    correlation of the two (r)."""
    if s.get("first_q") is None:
        return "–"
    corr = s.get("q_return_corr")
    return f"{s['first_q']:.2f} / {s['first_return']:.2f}" + ("" if corr is None else f" (r {corr:.2f})")


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def markdown_table(stats: Sequence[dict], checkpoints: Sequence[int]) -> str:
    head = ["method", "runs"]
    head += [f"success @{_step_label(s)}" for s in checkpoints]
    head += [f"steps to {round(t * 100)}%" for t in THRESHOLDS]
    head += ["CPU min to 95%", "base alone", "policy − base (last)", "Q / return (last)"]
    head += ["critic / actor steps per env step"]
    head += ["CPU min/run", "wall min/run", "grad steps/s", "edited acts"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in stats:
        runs = f"{s['finished']}/{s['runs']}" + (f" ({s['failed']} failed)" if s["failed"] else "")
        row = [s["method"], runs]
        row += [format_success(s["success"].get(step)) for step in checkpoints]
        row += [format_steps(s.get(f"steps_to_{round(t * 100)}")) for t in THRESHOLDS]
        row += [format_steps(s.get("cpu_minutes_to_95"), ".1f")]
        row += [
            _num(s.get("bc_success"), ".2f"),
            format_difference(s.get("policy_minus_base")),
            format_calibration(s),
            f"{_num(s.get('critic_steps_per_env_step'), '.2f')} / {_num(s.get('actor_steps_per_env_step'), '.2f')}",
            _num(s.get("cpu_minutes"), ".1f"),
            _num(s.get("wall_minutes"), ".1f"),
            _num(s.get("grad_steps_per_s"), ".1f"),
            _num(s.get("edited_frac"), ".2f"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


FIGURE_FORMATS = {"success": ".2f", "return": ".1f"}


def _curve_cell(run: RunRecord, checkpoints: Sequence[int], figure: str = "success") -> str:
    """One seed's ``figure`` at the first checkpoint -> at each later one ('n.a.': a finished run
    not evaluated there, or one that did not log the figure); '0.60 throughout' when flat."""
    if not run.finished:
        return "failed" if run.failed else "not finished"
    fmt = FIGURE_FORMATS[figure]
    at = run.figure_at(figure)
    values = [at.get(step) for step in checkpoints]
    if len(values) > 1 and None not in values and len(set(values)) == 1:
        return f"{values[0]:{fmt}} throughout"
    text = ["n.a." if v is None else f"{v:{fmt}}" for v in values]
    return f"{text[0]} -> {' / '.join(text[1:])}" if len(text) > 1 else "".join(text)


def seeds_table(runs: Sequence[RunRecord], checkpoints: Sequence[int], figure: str = "success") -> str:
    """Every seed's learning curve (``figure``: success, or the evaluation return) at
    ``checkpoints`` (the first: before RL), one row per method, with the mean change over the
    finished seeds and each seed's CPU minutes: what the intervals of the main table summarise,
    for readers who want to see the seeds."""
    seeds = sorted({r.seed for r in runs})
    several = len(checkpoints) > 1  # a change needs two steps
    head = ["method", *(f"seed {s}" for s in seeds), *(["last minus first, mean"] if several else [])]
    head.append("CPU min per seed")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in dict.fromkeys(r.method for r in runs):
        mine = {r.seed: r for r in runs if r.method == method}
        row = [method, *(_curve_cell(mine[s], checkpoints, figure) if s in mine else "–" for s in seeds)]
        if several:
            changes = []
            for r in mine.values():
                at = r.figure_at(figure)
                if r.finished and checkpoints[0] in at and checkpoints[-1] in at:
                    changes.append(at[checkpoints[-1]] - at[checkpoints[0]])
            change = _mean(changes)
            fmt = "+" + FIGURE_FORMATS[figure]
            row.append("–" if change is None else f"{change:{fmt}} ({len(changes)} seed{'s' * (len(changes) != 1)})")
        finished_cpu = [_minutes(mine[s].cpu_seconds) if s in mine and mine[s].finished else None for s in seeds]
        row.append(" / ".join(_num(c, ".1f") for c in finished_cpu))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


HEADLINE_FIGURES = (
    "bc_success", "cpu_minutes", "runner_cpu_minutes", "wall_minutes", "grad_steps_per_s", "edited_frac"
)  # fmt: skip
"""Per-method figures that are one number each (table.csv columns and summary.jsonl keys)."""


def _csv_rows(stats: Sequence[dict], checkpoints: Sequence[int]) -> tuple[list[str], list[dict]]:
    fields = ["method", "runs", "finished", "failed"]
    for step in checkpoints:
        fields += [f"success_{step}_mean", f"success_{step}_low", f"success_{step}_high", f"success_{step}_n"]
    for t in THRESHOLDS:
        fields += [f"steps_to_{round(t * 100)}_mean", f"steps_to_{round(t * 100)}_reached"]
    fields += ["cpu_minutes_to_95_mean", "cpu_minutes_to_95_reached"]
    fields += [*HEADLINE_FIGURES]
    rows = []
    for s in stats:
        row = {k: s[k] for k in ("method", "runs", "finished", "failed")}
        for step in checkpoints:
            cell = s["success"].get(step) or {}
            for key in ("mean", "low", "high", "n"):
                row[f"success_{step}_{key}"] = cell.get(key)
        for t in THRESHOLDS:
            cell = s.get(f"steps_to_{round(t * 100)}") or {}
            row[f"steps_to_{round(t * 100)}_mean"] = cell.get("mean")
            row[f"steps_to_{round(t * 100)}_reached"] = cell.get("reached")
        cell = s.get("cpu_minutes_to_95") or {}
        row["cpu_minutes_to_95_mean"], row["cpu_minutes_to_95_reached"] = cell.get("mean"), cell.get("reached")
        for key in HEADLINE_FIGURES:
            row[key] = s.get(key)
        rows.append({k: "" if v is None else round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return fields, rows


def headline(s: dict) -> dict:
    """One JSON-able line of a method's headline figures."""
    final = s.get("final_success") or {}
    out = {
        "method": s["method"],
        "runs": s["runs"],
        "finished": s["finished"],
        "failed": s["failed"],
        "final_success": final.get("mean"),
        "final_success_ci95": [final["low"], final["high"]] if final.get("low") is not None else None,
        "env_steps": s.get("env_steps"),
    }
    for t in THRESHOLDS:
        cell = s.get(f"steps_to_{round(t * 100)}") or {}
        out[f"steps_to_{round(t * 100)}"] = cell.get("mean")
        out[f"seeds_reaching_{round(t * 100)}"] = cell.get("reached")
    out["cpu_minutes_to_95"] = (s.get("cpu_minutes_to_95") or {}).get("mean")
    for key in HEADLINE_FIGURES:
        out[key] = None if s.get(key) is None else round(s[key], 4)
    return out


# ---------------------------------------------------------------------------
# the report


def _curve(s: dict) -> dict:
    steps = sorted(s["success"])
    cells = [s["success"][k] for k in steps]
    return {
        "env_step": steps,
        "mean": [c["mean"] for c in cells],
        "low": [c["min"] for c in cells],
        "high": [c["max"] for c in cells],
        "n": s["finished"],
    }


def _levels(stats: Sequence[dict]) -> dict[str, float]:
    """The dashed imitation level: the bc method's success if it ran, else the base alone
    (before RL) of the first method with finished runs."""
    by_name = {s["method"]: s for s in stats}
    bc = by_name.get("bc")
    if bc and bc.get("final_success"):
        return {f"bc ({bc['final_success']['mean']:.0%})": bc["final_success"]["mean"]}
    for s in stats:
        if s.get("bc_success") is not None:
            return {f"base alone before RL, {s['method']} ({s['bc_success']:.0%})": s["bc_success"]}
    return {}


def _commands(bench: dict, runs: Sequence[RunRecord]) -> str:
    lines = []
    if bench.get("command"):
        lines += ["# bench", bench["command"], ""]
    if bench.get("environment"):
        lines += ["# environment of every command", *(f"{k}={v}" for k, v in bench["environment"].items()), ""]
    if bench.get("data"):
        lines += ["# data", *(d["command"] for d in bench["data"] if d.get("command")), ""]
    planned = {(r["method"], int(r["seed"])): r["command"] for r in bench.get("runs", [])}
    lines.append("# runs (each run's commands as run, in order; a killed run continues with --resume)")
    for r in runs:
        attempts = (r.bench or {}).get("attempts") or []
        lines.append(f"## {r.method} seed {r.seed}")
        if attempts:
            for a in attempts:
                lines.append(f"{a['command']}  # exit {a.get('returncode')}")
        elif (r.method, r.seed) in planned:
            lines.append(planned[(r.method, r.seed)] + "  # (planned)")
    return "\n".join(lines) + "\n"


def render_report(
    bench_dir: str | Path, checkpoints: Sequence[int] | None = None, *, echo: bool = True
) -> dict[str, dict]:
    """Write ``DIR/report/`` from the finished runs; print the table and one JSON line per
    method when ``echo``. Returns the figures by method."""
    bench_dir = Path(bench_dir)
    bench, runs = load_bench(bench_dir)
    order = list(dict.fromkeys(r.method for r in runs))
    stats = [method_stats([r for r in runs if r.method == m]) for m in order]
    all_steps = sorted({step for s in stats for step in s["success"]})
    shown = sorted(set(checkpoints)) if checkpoints else select_checkpoints(all_steps)

    out = bench_dir / "report"
    (out / "configs").mkdir(parents=True, exist_ok=True)
    args = bench.get("arguments") or {}
    parts = (
        f"{args['env']} task {args['task']}" if args.get("env") else "",
        f"protocol {args['protocol']}" + (" full" if args.get("full") else "") if args.get("protocol") else "",
        f"preset {args['preset']}" if args.get("preset") else "",
    )
    title = ", ".join(p for p in parts if p)
    table = markdown_table(stats, shown)
    notes = [
        f"# expoft bench: {title}" if title else "# expoft bench",
        "",
        table,
        "",
        "success @N: mean over finished seeds of the evaluation success at N environment steps, with its "
        "95% Student-t interval over seeds (clipped to [0, 1]; n=1: one seed, no interval). steps to X%: "
        "mean over the seeds that reached X% at an evaluation (seeds that did, of the finished ones); "
        "the resolution is the evaluation interval. CPU min to 95%: the run's own CPU time (pretraining "
        "included) at its first evaluation at >= 95%, mean over the seeds that reached it and recorded "
        "CPU time. base alone: the pretrained base's success before RL. policy − base (last): at the last "
        "evaluation, the policy's success minus its own base's alone on the same reset seeds (paired), mean "
        "over seeds with its t-interval (– for runs without the base alone at the end). Q / return (last): "
        "the critic's Q of each evaluation episode's first decision against the episode's discounted return, "
        "both averaged (r: their correlation over episodes, mean over seeds; none when either is constant). "
        "critic / actor steps per env step: the ratio that was run (published: UTD 20 and one actor step "
        "per decision, a decision being an executed chunk). "
        "CPU min/run: user + system CPU time of the work behind the run's result, by the run's own count "
        "(pretraining included, carried across resumes; runs without one: as measured by the runner, "
        "table.csv's runner_cpu_minutes); wall min/run likewise. grad steps/s: critic gradient steps per "
        "second of update time (critic_steps_per_s). "
        "edited acts: the fraction of training actions that were an edited candidate (OTF picked an "
        "edit; otf/edited_frac of metrics.jsonl over the run), mean over seeds; 0 for best-of-N, – for "
        "agents without OTF.",
    ]
    tuning = args.get("method_args") or {}
    notes += [
        "",
        "Tuning (flags given to single methods, beyond the protocol's): "
        + ("; ".join(f"{m}: `{' '.join(f)}`" for m, f in tuning.items()) if tuning else "none"),
    ]
    if bench.get("command"):
        notes += ["", f"Command: `{bench['command']}`"]
    (out / "table.md").write_text("\n".join(notes) + "\n")
    per_seed = [f"# expoft bench, per seed: {title}" if title else "# expoft bench, per seed", ""]
    if shown:
        first = "before RL" if shown[0] == 0 else f"at {_step_label(shown[0])}"
        later = f" -> at {' / '.join(_step_label(step) for step in shown[1:])}" if len(shown) > 1 else ""
        per_seed += [
            f"Success {first}{later} env steps (the evaluations of table.md), for every seed.",
            "",
            seeds_table(runs, shown),
            "",
            "n.a.: a finished run without an evaluation at that step. last minus first: each finished seed's "
            "success at the last of these steps minus its success at the first, mean over those seeds. CPU min "
            "per seed: as in table.md's CPU min/run, for the finished seeds.",
        ]
        # under the sparse reward the return is the success: a table only for a partial-credit reward
        rewards = sorted({r.reward for r in runs if r.figure_at("return")} - {"sparse"})
        if rewards:
            per_seed += [
                "",
                f"Mean evaluation return (undiscounted, reward {' / '.join(rewards)}) {first}{later} env steps: "
                "OGBench's partial credit shows progress (cubes placed) that success at 0 hides.",
                "",
                seeds_table([r for r in runs if r.reward in rewards], shown, "return"),
                "",
                "n.a.: a finished run without an evaluation at that step, or one that did not log its return "
                "there (runs started before expoft logged eval/return).",
            ]
    else:
        per_seed.append("No finished run has an evaluation yet.")
    (out / "seeds.md").write_text("\n".join(per_seed) + "\n")
    fields, rows = _csv_rows(stats, all_steps)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = [headline(s) for s in stats]
    (out / "summary.jsonl").write_text("".join(json.dumps(h) + "\n" for h in lines))

    from expoft.report.compare import plot_method_curves  # matplotlib only when rendering

    plot_method_curves(
        {s["method"]: _curve(s) for s in stats if s["finished"]},
        out / "learning_curves.png",
        title=f"{title} (band: seed min-max)".strip(),
        levels=_levels(stats),
    )
    for r in runs:
        config = r.run_dir / "config.json"
        if config.exists():
            shutil.copy2(config, out / "configs" / f"{r.method}_seed{r.seed}.json")
    (out / "commands.txt").write_text(_commands(bench, runs))
    if echo:
        print(table)
        for h in lines:
            print(json.dumps(h))
        print(f"report: {out}/ (table.md, seeds.md, table.csv, learning_curves.png, configs/, commands.txt)")
    return {s["method"]: s for s in stats}
