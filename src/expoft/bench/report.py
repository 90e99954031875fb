"""The comparison report of a bench folder: table (Markdown and CSV), learning curves, configs.

Reads only what the runs wrote (``summary.json``, ``config.json``, ``metrics.jsonl``) and what the runner recorded
(``bench.json``, each run's ``bench_run.json``), so ``expoft bench report DIR`` can re-render it
at any time, also while runs are still going (unfinished runs are counted, not used)::

    DIR/report/table.md            one row per method (the method's name labels it)
    DIR/report/seeds.md            every seed's curve at the same steps, one row per method
    DIR/report/table.csv           the same figures, every common checkpoint, machine-readable
    DIR/report/summary.jsonl       one JSON line per method with the headline figures
    DIR/report/learning_curves.png success vs environment steps, one line per method
    DIR/report/policy_vs_base.png  each method's policy against its own base alone (same reset seeds)
    DIR/report/configs/            each run's resolved config.json (METHOD_seedS.json)
    DIR/report/commands.txt        the bench command and every command it ran
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from expoft.bench.stats import THRESHOLDS, RunRecord, load_bench, mean_of, method_stats, minutes, select_checkpoints


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
    head += ["Q spread / member std (last)"]
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
            f"{_num(s.get('q_spread'), '.3f')} / {_num(s.get('q_member_std'), '.3f')}",
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
            change = mean_of(changes)
            fmt = "+" + FIGURE_FORMATS[figure]
            row.append("–" if change is None else f"{change:{fmt}} ({len(changes)} seed{'s' * (len(changes) != 1)})")
        finished_cpu = [minutes(mine[s].cpu_seconds) if s in mine and mine[s].finished else None for s in seeds]
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

    from expoft.report.compare import plot_method_curves, plot_policy_vs_base  # matplotlib only when rendering

    plot_method_curves(
        {s["method"]: _curve(s) for s in stats if s["finished"]},
        out / "learning_curves.png",
        title=f"{title} (band: seed min-max)".strip(),
        levels=_levels(stats),
    )
    paired: dict[str, list[Path]] = {}  # methods whose finished runs evaluated their base alone
    for r in runs:
        if r.finished and r.finished_summary.get("final_base_success") is not None:
            paired.setdefault(r.method, []).append(r.run_dir)
    if paired:
        plot_policy_vs_base(paired, out / "policy_vs_base.png")
    for r in runs:
        config = r.run_dir / "config.json"
        if config.exists():
            shutil.copy2(config, out / "configs" / f"{r.method}_seed{r.seed}.json")
    (out / "commands.txt").write_text(_commands(bench, runs))
    if echo:
        print(table)
        for h in lines:
            print(json.dumps(h))
        print(f"report: {out}/ (table.md, seeds.md, table.csv, learning_curves.png, policy_vs_base.png, configs/, "
              "commands.txt)")  # fmt: skip
    return {s["method"]: s for s in stats}
