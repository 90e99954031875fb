"""A bench folder read back (its finished runs' records) and the statistics of its table: t
intervals over seeds, steps and CPU time to a success threshold, per-method figures."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

from expoft.fileio import read_metrics
from expoft.report.steps import nominal_step, run_grid
from expoft.train.extension_record import extension_of

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
    def paired_after_rl(self) -> list[dict]:
        """The evaluations after env step 0 that evaluated the base alone too, on the same reset
        seeds: their mean "policy - base" is less noisy than the last one's (about 1/sqrt(5))."""
        return [e for e in self.evaluations if e["env_step"] > 0 and e.get("base_success") is not None]

    @functools.cached_property
    def gain_after_rl(self) -> float | None:
        """The mean "policy - base" over :attr:`paired_after_rl`; None without such evaluations."""
        return mean_of([e["success"] - e["base_success"] for e in self.paired_after_rl])

    @functools.cached_property
    def extension(self) -> dict | None:
        """Where `expoft extend` continued this run from (its extension record), or None for a run
        of its own: an extension continues a run counted in another grid."""
        return extension_of(self.run_dir)

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
        return mean_of([float(r["otf/edited_frac"]) for r in rows if r.get("otf/edited_frac") is not None])

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
    """The file's content; None where it does not exist (a run not finished yet). A damaged file
    is an error, not a missing one: read as "not finished", a damaged summary.json would drop a
    finished run from every table without a word (runs write it atomically, so a damaged one was
    cut or edited by hand)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); restore it from a copy (a bench export holds every finished "
            "run's), or delete it to count the run as unfinished"
        ) from None


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


def load_bench_or_exit(bench_dir: str | Path) -> tuple[dict, list[RunRecord]]:
    """`load_bench` for a script's command line: a missing folder or a damaged run file ends the
    script with its message (what is wrong, how to fix it) instead of a traceback."""
    try:
        return load_bench(bench_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None


# ---------------------------------------------------------------------------
# per-method figures


def mean_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def minutes(seconds: float | None) -> float | None:
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
    # the last evaluation of the policy, and of its base alone on the same reset seeds
    for key in ("final_success", "final_base_success"):
        finals = [float(r.finished_summary[key]) for r in done if r.finished_summary.get(key) is not None]
        if finals:
            mean, low, high = t_interval(finals)
            stats[key] = {"mean": mean, "low": _clip01(low), "high": _clip01(high), "n": len(finals)}
    for threshold in THRESHOLDS:
        reached = [s for s in (steps_to_threshold(r.evaluations, threshold) for r in done) if s is not None]
        stats[f"steps_to_{round(threshold * 100)}"] = {
            "mean": mean_of(reached),
            "reached": len(reached),
            "n": len(done),
        }
    cpu_95 = [c for c in (cpu_to_threshold(r.evaluations, 0.95) for r in done) if c is not None]
    stats["cpu_minutes_to_95"] = {
        "mean": minutes(mean_of(cpu_95)),  # None when no run reached 95%
        "reached": len(cpu_95),
        "n": len(done),
    }
    cpu = [r.cpu_seconds for r in done]
    wall = [r.wall_seconds for r in done]
    stats["cpu_minutes"] = minutes(mean_of(cpu))
    stats["runner_cpu_minutes"] = minutes(mean_of([r.runner_cpu_seconds for r in done]))
    stats["wall_minutes"] = minutes(mean_of(wall))
    stats["grad_steps_per_s"] = mean_of([r.finished_summary.get("critic_steps_per_s") for r in done])
    stats["bc_success"] = mean_of([r.finished_summary.get("bc_success") for r in done])
    stats["edited_frac"] = mean_of([r.edited_frac for r in done])
    env_steps = [r.finished_summary.get("env_steps") for r in done]
    stats["env_steps"] = env_steps[0] if len(set(env_steps)) == 1 else mean_of(env_steps)
    # the diagnostics of "EXPO that learns": what the acting rule adds to its own base (paired on
    # the same reset seeds at the last evaluation), whether the critic tracks the returns, and
    # the ratio of gradient steps that was run
    paired = [s for s in (r.finished_summary.get("final_policy_minus_base") for r in done) if s is not None]
    if paired:
        mean, low, high = t_interval(paired)
        low, high = (None, None) if low is None or high is None else (max(-1.0, low), min(1.0, high))
        stats["policy_minus_base"] = {"mean": mean, "low": low, "high": high, "n": len(paired)}
    last = [r.evaluations[-1] for r in done if r.evaluations]
    stats["q_return_corr"] = mean_of([e.get("q_return_corr") for e in last])
    stats["first_q"] = mean_of([e.get("first_q") for e in last])
    stats["first_return"] = mean_of([e.get("first_return") for e in last])
    # can the critic tell the candidates apart: their spread against the members' disagreement
    stats["q_spread"] = mean_of([e.get("q_spread") for e in last])
    stats["q_member_std"] = mean_of([e.get("q_member_std") for e in last])
    for key in ("critic_steps_per_env_step", "actor_steps_per_env_step"):
        stats[key] = mean_of([r.finished_summary.get(key) for r in done])
    return stats


# ---------------------------------------------------------------------------
# formatting
