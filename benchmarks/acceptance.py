"""The acceptance of issue "EXPO that learns", read off its three learn grids. Run by hand, not by CI.

    python benchmarks/acceptance.py                      # the exports: benchmarks/results/learn-*
    python benchmarks/acceptance.py runs/learn-p2-scene  # or any bench folders
    python benchmarks/acceptance.py --expo-ft-from learn-p2-scene=benchmarks/results/offline-p2-scene
        # a variant's EXPO-FT runs (here: with P2's offline phase) in place of a grid's, against
        # the same grid's QC; its line says so (``expo_ft_from``)

Two criteria, per grid, over EXPO-FT's and QC's finished runs at their last evaluation:
- ``gain``: EXPO-FT's policy minus its base alone (paired on the same reset seeds), mean over seeds,
  is >= +0.10; the issue asks for it on at least 2 of the 3 grids;
- ``vs_qc``: EXPO-FT's final success is >= QC's - 0.05; asked for on all 3 grids.
Each is ``pass``, ``fail``, or ``pending`` while a method has fewer than 3 finished seeds (the
figures so far are still printed). Beside the criteria's figure, ``policy_minus_base_after_rl``:
the mean over seeds of each seed's mean over its evaluations after env step 0 (not a criterion;
about 1/sqrt(5) of one evaluation's noise). One JSON line per grid (the figures, their 95% Student-t
intervals over seeds and the verdicts), then one for the whole. Seeds, budget and machine: the
grids' own (their bench.json and runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from expoft.bench.stats import load_bench_or_exit, method_stats

GRIDS = ("learn-p1-cube-single", "learn-p1-cube-double", "learn-p2-scene")
GAIN = 0.10
"""EXPO-FT's policy minus its base alone at the last evaluation, at least (mean over seeds)."""
QC_MARGIN = 0.05
"""EXPO-FT's final success may be this far below QC's, at most."""
SEEDS = 3
GAIN_GRIDS = 2
"""Grids on which the gain must hold (of the three)."""


def method_figures(runs, method: str) -> dict:
    mine = [r for r in runs if r.method == method]
    if not mine:
        return {"finished": 0}
    stats = method_stats(mine)
    after = [  # per seed: the mean of its paired evaluations after RL
        r.gain_after_rl for r in mine if r.finished and r.paired_after_rl
    ]
    return {
        "finished": stats["finished"],
        "seeds": stats["seeds"],
        "final_success": stats.get("final_success"),
        "final_base_success": stats.get("final_base_success"),
        "policy_minus_base": stats.get("policy_minus_base"),
        "policy_minus_base_after_rl": round(float(np.mean(after)), 4) if after else None,
    }


def verdict(ok: bool | None) -> str:
    return "pending" if ok is None else "pass" if ok else "fail"


def grid_line(folder: Path, expo_ft_from: Path | None = None) -> dict:
    _, runs = load_bench_or_exit(folder)
    ft_runs = runs if expo_ft_from is None else load_bench_or_exit(expo_ft_from)[1]
    ft, qc = method_figures(ft_runs, "expo-ft"), method_figures(runs, "qc")
    gain = (ft.get("policy_minus_base") or {}).get("mean")
    ft_final = (ft.get("final_success") or {}).get("mean")
    qc_final = (qc.get("final_success") or {}).get("mean")
    ft_done, qc_done = ft["finished"] >= SEEDS, qc["finished"] >= SEEDS
    vs_qc = None
    if ft_done and qc_done and ft_final is not None and qc_final is not None:
        vs_qc = ft_final >= qc_final - QC_MARGIN
    return {
        "grid": folder.name,
        **({} if expo_ft_from is None else {"expo_ft_from": str(expo_ft_from)}),
        "expo_ft": ft,
        "qc": qc,
        "gain": verdict(None if not ft_done or gain is None else gain >= GAIN),
        "vs_qc": verdict(vs_qc),
    }


def overall(lines: list[dict]) -> dict:
    gains = [line["gain"] for line in lines]
    vs_qc = [line["vs_qc"] for line in lines]
    passed, pending = gains.count("pass"), gains.count("pending")
    gain = "pass" if passed >= GAIN_GRIDS else "pending" if passed + pending >= GAIN_GRIDS else "fail"
    versus = "fail" if "fail" in vs_qc else "pending" if "pending" in vs_qc else "pass"
    return {"grids": [line["grid"] for line in lines], "gain_on_2_of_3": gain, "vs_qc_on_all": versus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="*", type=Path, default=[Path("benchmarks/results") / g for g in GRIDS])
    parser.add_argument(
        "--expo-ft-from", action="append", default=[], metavar="GRID=FOLDER",
        help="take a grid's EXPO-FT runs from another bench folder (a variant's), QC's from the grid",
    )  # fmt: skip
    args = parser.parse_args()
    variants = {}
    for entry in args.expo_ft_from:
        grid, sep, folder = entry.partition("=")
        if not sep or not grid or not folder:
            example = "learn-p2-scene=benchmarks/results/offline-p2-scene"
            parser.error(f"--expo-ft-from {entry!r}: write GRID=FOLDER, e.g. {example}")
        variants[grid] = Path(folder)
    unknown = set(variants) - {folder.name for folder in args.grids}
    if unknown:
        parser.error(f"--expo-ft-from names {', '.join(sorted(unknown))}, not among the grids read")
    lines = []
    for folder in args.grids:
        if not (folder / "bench.json").exists() and not (folder / "runs").is_dir():
            line = {"grid": folder.name, "gain": "pending", "vs_qc": "pending", "note": f"{folder}: no runs yet"}
        else:
            try:
                line = grid_line(folder, variants.get(folder.name))
            except ValueError as e:  # a damaged run file: its path and what to do
                raise SystemExit(str(e)) from None
        lines.append(line)
        print(json.dumps(line))
    print(json.dumps(overall(lines)))


if __name__ == "__main__":
    main()
