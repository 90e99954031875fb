"""`expoft bench export DIR DEST`: a bench folder without its checkpoints, to commit or share.

A grid of P1/P2 runs takes many hours on a small machine, and its checkpoints are most of its size.
The finished runs' records (config.json, metrics.jsonl, summary.json, bench_run.json, logs) are
what the report and the runner need, so DEST holds those and nothing else:

- a finished run is copied without checkpoints/; an unfinished one is left out (continuing the
  bench in DEST starts it again, since it has no checkpoint there);
- DEST may be an earlier export of the same bench (same arguments, or other arguments that plan
  the same runs with the same configs): runs finished since are added, runs already finished in
  DEST are never touched, and bench.json keeps the invocations of both;
- the report in DEST is rendered again from the exported runs.

`expoft bench ... --out DEST` with the bench's own arguments continues from the export.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class BenchExport:
    """Copy a bench folder's finished runs, without checkpoints, to DEST (new, or an earlier
    export of the same bench); then render DEST's report. Continue the bench there with its own
    command and `--out DEST`."""

    bench_dir: tyro.conf.Positional[Path]
    """The bench folder (the --out of `expoft bench`)."""
    dest: tyro.conf.Positional[Path]
    """Where the copy goes."""
    quiet: bool = False
    """Print nothing but errors."""

    def run(self) -> None:
        export_bench(self.bench_dir, self.dest, echo=not self.quiet)


def _merged_invocations(src: list, dest: list) -> list:
    seen = {json.dumps(i, sort_keys=True) for i in src}
    extra = [i for i in dest if json.dumps(i, sort_keys=True) not in seen]
    return sorted([*src, *extra], key=lambda i: str(i.get("time", "")))


def export_bench(src: Path, dest: Path, echo: bool = True) -> dict[str, list[str]]:
    """Copy; return {'copied': [...], 'kept': [...], 'unfinished': [...], 'conflicts': [...]} (run labels).

    'kept': finished in DEST already (untouched). 'conflicts': finished in the bench, but DEST
    holds an unfinished run folder for it (the bench was continued there); left as it is.
    """
    from expoft.bench.folder import existing_bench, lock_folder, run_state, same_runs
    from expoft.bench.report import render_report
    from expoft.fileio import write_json

    src, dest = Path(src), Path(dest)
    bench = existing_bench(src, "is it the --out of `expoft bench`?")
    if bench is None:
        raise FileNotFoundError(f"bench folder {src} holds no bench.json; is it the --out of `expoft bench`?")
    if dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents:
        raise ValueError(f"export destination {dest} is the bench folder or inside it; choose a folder outside {src}")
    earlier = existing_bench(dest, "choose a new or empty destination")
    if earlier is not None and earlier["arguments"] != bench["arguments"]:
        if not same_runs(earlier["runs"], bench["runs"]):  # not one bench under two spellings
            raise FileExistsError(
                f"{dest} holds another bench (arguments differ: {earlier.get('command', '?')}); "
                "choose a new or empty destination"
            )
    dest.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_folder(dest)  # a bench continuing in DEST must not run while its folder is written
    try:
        result: dict[str, list[str]] = {"copied": [], "kept": [], "unfinished": [], "conflicts": []}
        for run in bench["runs"]:
            label = f"{run['method']} seed {run['seed']}"
            source, target = src / run["run_dir"], dest / run["run_dir"]
            if run_state(source) != "finished":
                result["unfinished"].append(label)
            elif run_state(target) == "finished":
                result["kept"].append(label)
            elif target.exists():
                result["conflicts"].append(label)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                # Copied under a temporary name and renamed, so an interrupted export never
                # leaves a run folder that looks unfinished next to its summary.
                partial = target.with_name(target.name + ".exporting")
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoints"))
                partial.rename(target)
                log = run.get("log")
                if log and (src / log).exists():
                    shutil.copy2(src / log, dest / log)
                result["copied"].append(label)
        if (src / "logs").is_dir():
            shutil.copytree(src / "logs", dest / "logs", dirs_exist_ok=True)
        if earlier is not None:
            bench = {**bench, "invocations": _merged_invocations(bench.get("invocations", []),
                                                                 earlier.get("invocations", []))}  # fmt: skip
        write_json(dest / "bench.json", bench)
    finally:
        os.close(lock_fd)
    if result["copied"] or result["kept"]:
        render_report(dest, echo=False)
    if echo:
        print(f"exported {src} -> {dest}: {len(result['copied'])} run(s) copied, {len(result['kept'])} already "
              f"there, {len(result['unfinished'])} unfinished left out", flush=True)  # fmt: skip
        if result["unfinished"]:
            print(f"  unfinished (not exported): {', '.join(result['unfinished'])}")
        if result["conflicts"]:
            print(f"  not copied, {dest} holds an unfinished folder for them (move it away to export): "
                  f"{', '.join(result['conflicts'])}")  # fmt: skip
    return result
