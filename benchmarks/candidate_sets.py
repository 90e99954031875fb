"""Where a finished policy's success comes from: the same checkpoint (same critic, same base)
choosing among other candidate sets, on the same reset seeds. Run by hand, not by CI.

    python benchmarks/candidate_sets.py RUN [RUN ...] --sets 8+0 16+0 32+0 --episodes 50

For each run (a run folder with checkpoints: `expoft bench` keeps them in its RUNS_DIR, the
exports drop them): its own OTF rule, its base alone, and each set ``N+M`` (N base samples, M of
them also edited; ``8+0`` is the critic's choice among 8 base samples without the edit policy),
all evaluated by `expoft eval`'s code on the run's own evaluation seeds, so that each pairs with
the others episode by episode. One JSON line per (run, policy): success, its Wilson interval,
episode length, the paired difference against the run's own rule and against its base alone
(mean and normal interval over the episodes), the fraction of decisions that took an edited
candidate. Machine: whatever runs it (CPU; ~1 minute per 50 scene episodes on one core); seeds:
the runs' own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from expoft.train.evaluate import evaluate_run, paired_difference


def parse_set(text: str) -> tuple[int, int]:
    try:
        base, edits = (int(x) for x in text.split("+"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a candidate set is N+M (N base samples, M edited), got {text!r}") from None
    return base, edits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with checkpoints")
    parser.add_argument("--sets", nargs="+", type=parse_set, default=[(8, 0)], help="candidate sets N+M")
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()
    if args.episodes < 2:
        parser.error("--episodes must be >= 2 (a paired interval needs two episodes)")
    for run in args.runs:
        own = evaluate_run(run, args.episodes)
        base = evaluate_run(run, args.episodes, policy="base")
        rows = [("own", own, "eval"), ("base", base, "eval_base")]
        rows += [(f"{n}+{m}", evaluate_run(run, args.episodes, num_base_samples=n, num_edit_samples=m), "eval")
                 for n, m in args.sets]  # fmt: skip
        own_s, base_s = own["eval/successes"], base["eval_base/successes"]
        for name, result, prefix in rows:
            successes = result[f"{prefix}/successes"]
            print(json.dumps({
                "run": str(run), "env_step": result["env_step"], "seed": result["seed"], "policy": name,
                "candidates": result.get("candidates"), "episodes": args.episodes,
                "success": result[f"{prefix}/success"],
                "success_ci": [result[f"{prefix}/success_ci_low"], result[f"{prefix}/success_ci_high"]],
                "episode_length": result[f"{prefix}/episode_length"],
                "edited_frac": result.get(f"{prefix}/edited_frac"),
                "minus_own": paired_difference(successes, own_s),
                "minus_base": paired_difference(successes, base_s),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
